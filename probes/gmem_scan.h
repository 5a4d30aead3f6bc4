// Finding guest_memfds of other processes (for `watch`): /proc/PID/fd links
// (fstat gives dev/ino) and /proc/PID/maps lines naming a guest_memfd.
#pragma once

#include "kvm/kvm.h"

#include <map>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace gms::probes {

// How /proc names a guest_memfd: "anon_inode:[kvm-gmem]" while it was an anon
// inode (up to 6.x), "/[kvm-gmem] (deleted)" since it has a pseudo-filesystem
// of its own (7.x).
bool is_gmem_name(const std::string& proc_path);

struct GmemHolder {
    pid_t pid = 0;
    std::string comm;
    int fd = -1; // -1: only mapped
    bool mapped = false;
};

struct GmemScan {
    // Every guest_memfd found, with the processes holding it.
    std::map<std::pair<uint64_t, uint64_t>, std::vector<GmemHolder>> files; // (st_dev, ino)
    std::vector<std::string> errors; // processes that could not be read (not fatal)

    std::set<std::pair<uint64_t, uint64_t>> inodes() const;
    std::set<std::pair<uint64_t, uint64_t>> inodes_of(pid_t pid) const;
};

// Scans one process (pid > 0) or every process (pid == 0).
GmemScan scan_guest_memfds(pid_t pid = 0);

// Parses one /proc/PID/maps line; true (and dev/ino) if it maps a guest_memfd.
bool parse_gmem_maps_line(const std::string& line, uint64_t* st_dev, uint64_t* ino);

} // namespace gms::probes
