#include "probes/calibration.h"

#include "core/fd.h"
#include "core/util.h"
#include "probes/decode.h"
#include "probes/events.h"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <fmt/format.h>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace gms::probes {

namespace {
constexpr long kSysMemfdSecret = 447; // x86-64
constexpr size_t kPage = 4096;
} // namespace

CalibrationResult evaluate_calibration(const std::vector<Event>& events, uint32_t kdev,
                                       uint64_t ino, uint64_t pages) {
    std::set<uint64_t> added, deleted, zaps, restores;
    CalibrationResult c;
    c.ran = true;
    c.evaluated = true;
    c.pages = pages;
    for (const auto& e : events) {
        if (e.type == EventType::pc_add && e.dev == kdev && e.ino == ino)
            added.insert(e.pfn);
        else if (e.type == EventType::pc_del && e.dev == kdev && e.ino == ino)
            deleted.insert(e.pfn);
        else if (e.type == EventType::direct_map && e.ret == 0) {
            for (uint64_t i = 0; i < std::max<uint64_t>(e.nr, 1); ++i)
                (e.has(GMS_F_VALID) ? restores : zaps).insert(e.pfn + i);
            ++c.direct_map_events_by_source[src_name(e.src)];
        }
    }
    // Most frequent offset between a page-cache pfn and a zapped pfn.
    std::map<int64_t, uint64_t> deltas;
    for (auto a : added)
        for (auto z : zaps)
            ++deltas[int64_t(a) - int64_t(z)];
    int64_t corr = 0;
    uint64_t best = 0;
    for (auto [d, n] : deltas)
        if (n > best || (n == best && d == 0))
            corr = d, best = n;
    for (auto a : added) {
        c.zaps_matched += zaps.count(uint64_t(int64_t(a) - corr));
        c.restores_matched += restores.count(uint64_t(int64_t(a) - corr));
    }
    c.page_cache_adds = added.size();
    c.page_cache_deletes = deleted.size();
    c.pfn_correction = corr;
    c.ok = added.size() == pages && c.zaps_matched == pages && c.restores_matched == pages;
    if (c.ok)
        c.reason = fmt::format("observed {} zap/restore pairs on secretmem pages{}", pages,
                               corr ? fmt::format(" (pfn correction {})", corr) : std::string());
    else
        c.reason = fmt::format(
            "secretmem: {} of {} page-cache insertions, {} zaps and {} restores matched",
            added.size(), pages, c.zaps_matched, c.restores_matched);
    return c;
}

nlohmann::json to_json(const CalibrationResult& c) {
    nlohmann::json j = nlohmann::json::object();
    if (c.evaluated)
        j = {{"pages", c.pages},
             {"page_cache_adds", c.page_cache_adds},
             {"page_cache_deletes", c.page_cache_deletes},
             {"zaps_matched", c.zaps_matched},
             {"restores_matched", c.restores_matched},
             {"direct_map_events_by_source", c.direct_map_events_by_source},
             {"pfn_correction", c.pfn_correction}};
    j["ran"] = c.ran;
    j["ok"] = c.ok;
    j["reason"] = c.reason;
    return j;
}

std::string exercise_secretmem(uint64_t pages,
                               const std::function<void(uint32_t kdev, uint64_t ino)>& on_file) {
    int fd = static_cast<int>(::syscall(kSysMemfdSecret, O_CLOEXEC));
    if (fd < 0)
        return fmt::format("memfd_secret failed: {}{}", errno_name(errno),
                           errno == ENOSYS ? " (secretmem disabled or not built)" : "");
    UniqueFd sfd(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return fmt::format("fstat(memfd_secret) failed: {}", errno_name(errno));
    on_file(kernel_dev(st.st_dev), st.st_ino);
    const size_t len = pages * kPage;
    if (::ftruncate(fd, static_cast<off_t>(len)) != 0)
        return fmt::format("ftruncate(memfd_secret) failed: {}", errno_name(errno));
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return fmt::format("mmap(memfd_secret) failed: {}", errno_name(errno));
    for (size_t off = 0; off < len; off += kPage)
        static_cast<volatile char*>(p)[off] = 1; // fault in: secretmem zaps each page
    ::munmap(p, len);
    return ""; // sfd closes here: secretmem restores each page as it frees it
}

} // namespace gms::probes
