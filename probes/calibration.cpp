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

namespace {

// How a direct-map record's pfn was derived: each derivation has its own
// correction.
enum Derivation { kExact, kFromPage, kFromAddress, kDerivations };

Derivation derivation_of(const Event& e) {
    if (e.has(GMS_F_ADDR_PFN))
        return kFromAddress;
    if (e.has(GMS_F_PTR_PFN))
        return kFromPage;
    return kExact;
}

// The most frequent offset from `to` pfns to `added` pfns (0 on a tie).
int64_t most_frequent_offset(const std::set<uint64_t>& added, const std::set<uint64_t>& to) {
    std::map<int64_t, uint64_t> deltas;
    for (auto a : added)
        for (auto z : to)
            ++deltas[int64_t(a) - int64_t(z)];
    int64_t corr = 0;
    uint64_t best = 0;
    for (auto [d, n] : deltas)
        if (n > best || (n == best && d == 0))
            corr = d, best = n;
    return corr;
}

} // namespace

CalibrationResult evaluate_calibration(const std::vector<Event>& events, uint32_t kdev,
                                       uint64_t ino, uint64_t pages) {
    std::set<uint64_t> added, deleted;
    std::set<uint64_t> zaps[kDerivations], restores[kDerivations];
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
            const Derivation d = derivation_of(e);
            for (uint64_t i = 0; i < std::max<uint64_t>(e.nr, 1); ++i)
                (e.has(GMS_F_VALID) ? restores[d] : zaps[d]).insert(e.pfn + i);
            ++c.direct_map_events_by_source[src_name(e.src)];
        }
    }
    // Per derivation, the offset that lines its pfns up with the insertions
    // (zaps and restores together: a kernel may zap and restore through
    // different functions, as NO_DIRECT_MAP v12's secretmem does).
    int64_t corr[kDerivations] = {0, 0, 0};
    for (int d = kFromPage; d < kDerivations; ++d) {
        std::set<uint64_t> all = zaps[d];
        all.insert(restores[d].begin(), restores[d].end());
        corr[d] = most_frequent_offset(added, all);
    }
    auto seen = [&](const std::set<uint64_t>* sets, uint64_t pfn) {
        for (int d = 0; d < kDerivations; ++d)
            if (sets[d].count(uint64_t(int64_t(pfn) - corr[d])))
                return true;
        return false;
    };
    for (auto a : added) {
        c.zaps_matched += seen(zaps, a);
        c.restores_matched += seen(restores, a);
    }
    c.page_cache_adds = added.size();
    c.page_cache_deletes = deleted.size();
    c.pfn_correction = corr[kFromPage];
    c.addr_pfn_correction = corr[kFromAddress];
    c.ok = added.size() == pages && c.zaps_matched == pages && c.restores_matched == pages;
    std::string corrections;
    if (c.pfn_correction)
        corrections += fmt::format(" (pfn correction {})", c.pfn_correction);
    if (c.addr_pfn_correction)
        corrections += fmt::format(" (address pfn correction {})", c.addr_pfn_correction);
    if (c.ok)
        c.reason =
            fmt::format("observed {} zap/restore pairs on secretmem pages{}", pages, corrections);
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
             {"pfn_correction", c.pfn_correction},
             {"addr_pfn_correction", c.addr_pfn_correction}};
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
