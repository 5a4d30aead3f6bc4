// Kernel log scanning: records from /dev/kmsg written after the run started,
// classified into findings (WARNING, BUG, soft lockup, RCU stall, ...).
#pragma once

#include "core/fd.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gms {

// One classified kernel log record. Plain data that reports embed as is
// (report::KmsgFinding): the scanner sits below the report model.
struct KmsgFinding {
    std::string kind; // WARNING, BUG, soft_lockup, rcu_stall, bad_page_state, ...
    std::string line;
    uint64_t timestamp_us = 0;
};

// Classifies one kernel log message; nullopt if it is not a finding.
// Pure, for tests.
std::optional<std::string> classify_kernel_message(const std::string& msg);

class KmsgWatcher {
  public:
    // Opens /dev/kmsg and seeks to its end: only later records count.
    // If it cannot, available() is false and reason() says why.
    KmsgWatcher();
    bool available() const { return fd_.valid(); }
    const std::string& reason() const { return reason_; }
    // Reads every record since the start (or the previous call).
    std::vector<KmsgFinding> collect();

  private:
    UniqueFd fd_;
    std::string reason_;
};

} // namespace gms
