// The consumer of the probes' BPF ring buffer: one thread polls it and hands
// every record to a callback (libbpf-bootstrap's loop), then runs the
// housekeeping callback. The BPF side wakes it only once enough bytes are
// pending (cfg_wakeup_bytes in gmem.bpf.c); what was submitted without a
// wake-up is drained on the poll timeout, so no record waits longer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>

struct ring_buffer;

namespace gms::probes {

class RingReader {
  public:
    using OnRecord = std::function<void(const void* data, size_t size)>;
    using Housekeeping = std::function<void()>;

    // Throws EnvError when libbpf cannot set up the ring buffer.
    RingReader(int map_fd, OnRecord on_record, Housekeeping housekeeping);
    ~RingReader();
    RingReader(const RingReader&) = delete;
    RingReader& operator=(const RingReader&) = delete;

    void start();
    // Stops the thread and consumes what was already submitted. Idempotent.
    void stop_and_drain();
    // CPU time of the consumer thread (decoding, checkers), once stopped:
    // under emulation it competes with the workloads for the same CPUs.
    uint64_t consumer_cpu_ns() const { return consumer_cpu_ns_.load(); }

    static constexpr int kPollTimeoutMs = 100;

  private:
    static int on_record(void* ctx, void* data, size_t size);
    void loop();

    OnRecord on_record_;
    Housekeeping housekeeping_;
    ring_buffer* rb_ = nullptr;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> consumer_cpu_ns_{0};
};

} // namespace gms::probes
