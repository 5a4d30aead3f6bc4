// The secretmem calibration: memfd_secret() zaps each page it faults in from
// the direct map and restores it when freed, on every kernel that has it.
// Watching such a file proves that the direct-map probes see zaps and
// restores of page-cache folios, and learns the offset between the exact
// pfns of the page-cache tracepoint and the pfns the direct-map programs
// derive, per derivation: from struct page pointers (the pfn correction) and
// from direct-map addresses (the address pfn correction).
//
// Up to Linux 7.3 secretmem zaps with set_direct_map_invalid_noflush(page)
// and restores with set_direct_map_default_noflush(page). With NO_DIRECT_MAP
// v12 it zaps with folio_zap_direct_map(folio), which calls
// set_direct_map_valid_noflush(address, 1, false), and restores with
// set_direct_map_default_noflush(address): a page is matched when any of
// these, corrected for its derivation, names it.
#pragma once

#include "probes/checkers.h"

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gms::probes {

inline constexpr uint64_t kCalibrationPages = 4;

struct CalibrationResult {
    bool ran = false; // the secretmem file was exercised
    bool ok = false;  // every page's insertion, zap and restore matched
    std::string reason;
    // Figures of the last evaluation (evaluated = false: none was made).
    bool evaluated = false;
    uint64_t pages = 0;
    uint64_t page_cache_adds = 0, page_cache_deletes = 0;
    uint64_t zaps_matched = 0, restores_matched = 0;
    std::map<std::string, uint64_t> direct_map_events_by_source;
    int64_t pfn_correction = 0;      // added to pfns from struct page pointers
    int64_t addr_pfn_correction = 0; // added to pfns from direct-map addresses
};

// Pure: matches the file's page-cache insertions (exact pfns) with the
// direct-map changes in `events`; per derivation (GMS_F_PTR_PFN,
// GMS_F_ADDR_PFN), the most frequent offset between the two is its
// correction. ok when all `pages` insertions, zaps and restores match.
CalibrationResult evaluate_calibration(const std::vector<Event>& events, uint32_t kdev,
                                       uint64_t ino, uint64_t pages);

nlohmann::json to_json(const CalibrationResult& c);

// Creates a memfd_secret file of `pages` pages, calls on_file(kernel dev_t,
// ino) before touching it, faults every page in and releases the file.
// Returns "" or what failed (memfd_secret missing, mmap refused, ...).
std::string exercise_secretmem(uint64_t pages,
                               const std::function<void(uint32_t kdev, uint64_t ino)>& on_file);

} // namespace gms::probes
