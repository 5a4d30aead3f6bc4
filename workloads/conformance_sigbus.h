// Observing SIGBUS on a memory access instead of dying from it.
//
// guest_memfd mappings raise SIGBUS past EOF and on private pages; the
// conformance checks need to see that happen (or not) as a result. A guard
// installs a process-wide SIGBUS handler for its lifetime (reference counted
// across threads, the previous handler restored by the last guard). Only an
// access made through touch() on the same thread is caught: the jump buffer
// is thread-local, and a SIGBUS anywhere else is passed to the previous
// disposition, so a real fault elsewhere still crashes as it would have.
#pragma once

#include <cstddef>
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

} // namespace gms::workloads
