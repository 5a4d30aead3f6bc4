// The one owner of "a VM + a guest_memfd + the observer": every guest_memfd
// the tool creates is announced to a GmemObserver (the probes filter on this
// run's inodes) and its release is announced once no userspace reference to
// the file is left (the checkers close the books on it then).
#pragma once

#include "kvm/kvm.h"

#include <cstdint>

namespace gms::kvm {

// guest_memfd is mapped and bound in base pages (x86: 4 KiB).
inline constexpr uint64_t kPageSize = 4096;

// Told about every guest_memfd created and released through ObservedGmem.
//
// Locking rule: ObservedGmem makes every call under one process-wide mutex,
// so implementations need no locking of their own. Creation and release are
// rare (each comes with a KVM_CREATE_VM or a close of a file the kernel then
// truncates), so serializing them costs nothing measurable, and an observer
// written for a single-threaded workload (a counter, a test recorder) stays
// correct when a workload creates files from worker threads.
class GmemObserver {
  public:
    virtual ~GmemObserver() = default;
    virtual void on_created(const GuestMemfd&) {}
    // Called after the last userspace reference (fd, mappings, memslots, VM) is gone.
    virtual void on_released(InodeId) {}
};

// A guest_memfd the observer hears of, with what refers to it: the VM it was
// created on (empty when that VM is the caller's, as when several files
// share one VM) and its shared mapping. Teardown in a fixed order, as the
// selftests' kvm_vm_free(): VM (vCPUs, memslots, VM fd), mapping, guest_memfd
// fd; then on_released(), no reference being left. Mappings of the file kept
// elsewhere must go before it.
class ObservedGmem {
  public:
    // Built in steps, so that callers can time or check each: vm =
    // Vm::create(...), create_gmem(vm, ...), map = gmem.map_shared().
    ObservedGmem() = default;
    ObservedGmem(ObservedGmem&& o) noexcept;
    ObservedGmem& operator=(ObservedGmem&& o) noexcept;
    ~ObservedGmem() { release(); }

    // KVM_CREATE_GUEST_MEMFD on `on` (this->vm, or a VM the caller keeps and
    // tears down itself), then on_created(). A file held before is released
    // first, on success only. 0 or errno.
    int try_create_gmem(Vm& on, uint64_t size, uint64_t flags, GmemObserver& observer);
    void create_gmem(Vm& on, uint64_t size, uint64_t flags, GmemObserver& observer);

    // Takes a file made by a raw KVM_CREATE_GUEST_MEMFD (the fault-inject
    // workload arms fail-nth around that ioctl alone), then on_created().
    void adopt(GuestMemfd g, GmemObserver& observer);

    Vm vm;
    GuestMemfd gmem;
    Mapping map;
    uint8_t* page(uint64_t idx) const { return map.data() + idx * kPageSize; }

    // Tears everything down and notifies the observer; idempotent. Callers may
    // first drop pieces in their own order (map.reset(), gmem.close(), vm.destroy()).
    void release();

  private:
    // Mapping and fd, then on_released(); the VM stays.
    void release_file();

    GmemObserver* observer_ = nullptr;
    InodeId inode_;
    bool live_ = false; // on_created() was called, on_released() not yet
};

} // namespace gms::kvm
