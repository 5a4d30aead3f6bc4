#include "probes/ring_reader.h"

#include "core/error.h"
#include "core/util.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <ctime>
#include <fmt/format.h>

namespace gms::probes {

RingReader::RingReader(int map_fd, OnRecord on_record, Housekeeping housekeeping)
    : on_record_(std::move(on_record)), housekeeping_(std::move(housekeeping)) {
    rb_ = ring_buffer__new(map_fd, &RingReader::on_record, this, nullptr);
    if (!rb_)
        throw EnvError(fmt::format("BPF: ring buffer setup failed: {}", errno_name(errno)));
}

RingReader::~RingReader() {
    stop_and_drain();
    ring_buffer__free(rb_);
}

int RingReader::on_record(void* ctx, void* data, size_t size) {
    static_cast<RingReader*>(ctx)->on_record_(data, size);
    return 0;
}

void RingReader::start() {
    thread_ = std::thread([this] { loop(); });
}

void RingReader::stop_and_drain() {
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
    if (rb_)
        ring_buffer__consume(rb_); // what was already submitted
}

void RingReader::loop() {
    while (!stop_.load()) {
        int n = ring_buffer__poll(rb_, kPollTimeoutMs);
        if (n < 0 && n != -EINTR)
            break;
        if (n <= 0)
            ring_buffer__consume(rb_); // records submitted without a wake-up
        if (housekeeping_)
            housekeeping_();
    }
    timespec ts{};
    if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        consumer_cpu_ns_ = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

} // namespace gms::probes
