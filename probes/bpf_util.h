// libbpf plumbing shared by the session and `caps`: log capture, lockdown
// state, and the real load+attach test of each attach method.
#pragma once

#include "probes/attach_points.h"

#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace gms::probes {

// Routes libbpf's messages into a bounded buffer (instead of stderr).
void install_libbpf_log();
// Returns and clears what libbpf printed since the last call.
std::string take_libbpf_log();
// The verifier's verdict inside a libbpf log ("-- BEGIN PROG LOAD LOG --"
// block): its last lines without the statistics; else the log's tail.
std::string verifier_error(const std::string& log, size_t lines = 2);
// Last few lines of a libbpf/verifier log, for messages.
std::string log_tail(const std::string& log, size_t lines = 3);

// none | integrity | confidentiality | unknown
std::string lockdown_state();

struct BackendStatus {
    bool usable = false;
    int err = 0;        // errno of the failing step (0 if usable)
    std::string step;   // "load" or "attach"
    std::string reason; // human readable
};

// Loads and attaches a trivial program with each method (once per process;
// the result is cached).
const std::map<Backend, BackendStatus>& probe_backends();

} // namespace gms::probes
