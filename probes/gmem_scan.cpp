#include "probes/gmem_scan.h"

#include "core/util.h"

#include <cerrno>
#include <cstdlib>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace gms::probes {

std::set<std::pair<uint64_t, uint64_t>> GmemScan::inodes() const {
    std::set<std::pair<uint64_t, uint64_t>> s;
    for (const auto& [k, h] : files)
        s.insert(k);
    return s;
}

std::set<std::pair<uint64_t, uint64_t>> GmemScan::inodes_of(pid_t pid) const {
    std::set<std::pair<uint64_t, uint64_t>> s;
    for (const auto& [k, hs] : files)
        for (const auto& h : hs)
            if (h.pid == pid)
                s.insert(k);
    return s;
}

bool is_gmem_name(const std::string& proc_path) {
    return proc_path == "anon_inode:[kvm-gmem]" || proc_path == "/[kvm-gmem]" ||
           proc_path == "/[kvm-gmem] (deleted)";
}

bool parse_gmem_maps_line(const std::string& line, uint64_t* st_dev, uint64_t* ino) {
    // "7f7e674c5000-7f7e675c5000 rw-s 00000000 00:10 919001   anon_inode:[kvm-gmem]"
    // "7f1445772000-7f1445872000 rw-s 00000000 00:1b 1424     /[kvm-gmem] (deleted)"
    std::istringstream in(line);
    std::string range, perms, offset, dev, path;
    uint64_t inode = 0;
    if (!(in >> range >> perms >> offset >> dev >> inode >> std::ws))
        return false;
    std::getline(in, path);
    if (!is_gmem_name(path))
        return false;
    auto colon = dev.find(':');
    if (colon == std::string::npos)
        return false;
    char* end = nullptr;
    unsigned long maj = std::strtoul(dev.substr(0, colon).c_str(), &end, 16);
    unsigned long min = std::strtoul(dev.substr(colon + 1).c_str(), &end, 16);
    *st_dev = makedev(maj, min);
    *ino = inode;
    return true;
}

namespace {

void scan_pid(pid_t pid, GmemScan& out) {
    std::string base = fmt::format("/proc/{}", pid);
    std::string comm = read_file(base + "/comm").value_or("?");
    if (!comm.empty() && comm.back() == '\n')
        comm.pop_back();
    DIR* d = ::opendir((base + "/fd").c_str());
    if (!d) {
        if (errno != ENOENT)
            out.errors.push_back(fmt::format("{}/fd: {}", base, errno_name(errno)));
        return;
    }
    while (auto* ent = ::readdir(d)) {
        if (ent->d_name[0] == '.')
            continue;
        std::string path = base + "/fd/" + ent->d_name;
        char buf[256];
        ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
        if (n <= 0)
            continue;
        buf[n] = 0;
        if (!is_gmem_name(buf))
            continue;
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            continue;
        out.files[{st.st_dev, st.st_ino}].push_back(
            GmemHolder{pid, comm, std::atoi(ent->d_name), false});
    }
    ::closedir(d);
    std::ifstream maps(base + "/maps");
    std::string line;
    while (std::getline(maps, line)) {
        uint64_t dev = 0, ino = 0;
        if (parse_gmem_maps_line(line, &dev, &ino))
            out.files[{dev, ino}].push_back(GmemHolder{pid, comm, -1, true});
    }
}

} // namespace

GmemScan scan_guest_memfds(pid_t pid) {
    GmemScan out;
    if (pid > 0) {
        scan_pid(pid, out);
        return out;
    }
    DIR* d = ::opendir("/proc");
    if (!d) {
        out.errors.push_back(fmt::format("/proc: {}", errno_name(errno)));
        return out;
    }
    while (auto* ent = ::readdir(d)) {
        char* end = nullptr;
        long p = std::strtol(ent->d_name, &end, 10);
        if (*end == 0 && p > 0)
            scan_pid(static_cast<pid_t>(p), out);
    }
    ::closedir(d);
    return out;
}

} // namespace gms::probes
