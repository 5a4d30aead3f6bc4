// Observing SIGBUS on a memory access instead of dying from it.
//
// guest_memfd mappings raise SIGBUS past EOF, on private pages and when a
// fault fails; workloads must record that, and conformance checks must see
// it happen (or not). A SigbusGuard installs one process-wide handler for its
// lifetime (reference counted across threads; the last guard restores the
// previous disposition). Only an access made through sigbus_guarded() on the
// same thread is caught: the jump buffer is thread-local, and a SIGBUS
// anywhere else goes to the previous disposition, so a real fault elsewhere
// still crashes as it would have.
#pragma once

#include "core/call_scope.h"

#include <csetjmp>
#include <cstdint>

namespace gms::workloads {

class SigbusGuard {
  public:
    SigbusGuard(); // throws SysError if sigaction() fails
    ~SigbusGuard();
    SigbusGuard(const SigbusGuard&) = delete;
    SigbusGuard& operator=(const SigbusGuard&) = delete;

    // Reads one byte at p (into *out if given). Returns true if it raised SIGBUS.
    bool read_faults(const volatile uint8_t* p, uint8_t* out = nullptr);
    // Writes one byte at p. Returns true if it raised SIGBUS.
    bool write_faults(volatile uint8_t* p, uint8_t value);
};

namespace detail {
extern const CallOp kOpAccess; // "mmap access"
void arm(sigjmp_buf* jb);
void disarm();
void* fault_address();
} // namespace detail

// Runs f() with a SigbusGuard alive; returns false (and the faulting
// address) if it raised SIGBUS. f must only touch memory: no objects with
// destructors are unwound. The handler runs with SA_NODEFER, so leaving it
// by siglongjmp without restoring the mask (no syscall per access) leaves
// SIGBUS unblocked.
//
// The access is a watched call (core/call_scope.h): a fault that blocks in
// the kernel shows up in the watchdog's stall report, with `where` (the page
// touched, when the caller says) as its address.
template <class F> bool sigbus_guarded(F&& f, void** addr = nullptr, const void* where = nullptr) {
    CallSlot* slot = this_thread_slot();
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        call_leave(slot);
        if (addr)
            *addr = detail::fault_address();
        return false;
    }
    call_enter(slot, detail::kOpAccess, -1, reinterpret_cast<uint64_t>(where), 0, 0);
    detail::arm(&jb);
    f();
    detail::disarm();
    call_leave(slot);
    return true;
}

} // namespace gms::workloads
