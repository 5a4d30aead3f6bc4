// Invariant checkers: PURE classes fed a stream of events (decoded BPF
// records plus userspace markers), with no BPF dependency, so recorded and
// deliberately broken streams can drive them in unit tests.
//
// Each checker turns what it saw, what the session could observe (Coverage)
// and what the workloads say they did (Expectations) into one
// report::InvariantResult. A run that lost events or could not attach a needed
// probe never yields `verified`.
//
// Events: probes/event.h; Coverage and Expectations: probes/coverage.h;
// recorded streams: probes/stream_io.h; one checker per file in
// probes/checkers/.
#pragma once

#include "probes/coverage.h"
#include "probes/event.h"
#include "probes/stream_io.h"
#include "reports/model.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gms::probes {

class Checker {
  public:
    virtual ~Checker() = default;
    virtual void feed(const Event& e) = 0;
    virtual report::InvariantResult result(const Coverage& cov, const Expectations& exp) const = 0;
};

// Every folio added to a watched guest_memfd is removed by the time the file
// is released, and page counts match the workloads' own counts.
std::unique_ptr<Checker> make_page_cache_balance_checker();
// NO_DIRECT_MAP files: each folio out of the direct map before it is handed
// out (to the guest or host userspace) and from then on while in the page
// cache, restored before freed; no double zap, no restore without zap, same
// granularity. Other files: never touched. A folio never handed out may stay
// in the direct map: NO_DIRECT_MAP v12 zaps at hand-out (kvm_gmem_get_pfn,
// kvm_gmem_fault_user_mapping), not when the folio enters the page cache.
std::unique_ptr<Checker> make_direct_map_checker();
// Every folio handed to the guest (kvm_gmem_get_pfn) or to host userspace
// (user fault) is uptodate at that moment; fresh memory reads zero.
std::unique_ptr<Checker> make_uptodate_checker();
// Every range that leaves a guest_memfd while a memslot binds it (punch hole,
// release) is invalidated in KVM's MMU by guest_memfd itself: each bound kvm
// has kvm_mmu_unmap_gfn_range over the range, inside kvm_mmu_invalidate_start
// and _end, balanced by the time the operation returns. Invalidations made by
// KVM's MMU notifier (by host address) do not count.
std::unique_ptr<Checker> make_invalidation_balance_checker();
// Every folio that leaves a watched guest_memfd's page cache is freed
// (kmem:mm_page_free of its pfn) by the end of the session, after a drain of
// the per-CPU LRU batches; one still allocated (its /proc/kpagecount) leaked
// a reference.
std::unique_ptr<Checker> make_folio_release_checker();

// All checkers, in report order; counts events by type.
class CheckerSet {
  public:
    CheckerSet();
    void feed(const Event& e);
    std::vector<report::InvariantResult> results(const Coverage& cov,
                                                 const Expectations& exp) const;
    // Events fed, by type name (types never seen are left out).
    std::map<std::string, uint64_t> counts() const;
    uint64_t fed() const { return fed_; }

  private:
    std::vector<std::unique_ptr<Checker>> checkers_;
    // By raw type, not name: feed() runs once per event on the hot path.
    static constexpr size_t kTypeSlots = 128; // kernel types and markers (>= 100) all fit
    static_assert(static_cast<size_t>(EventType::folio_refcount) < kTypeSlots);
    std::array<uint64_t, kTypeSlots> counts_{};
    uint64_t fed_ = 0;
};

} // namespace gms::probes
