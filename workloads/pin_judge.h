// The pin-convert workload's judge: what KVM_SET_MEMORY_ATTRIBUTES2 (the
// in-place conversion series, v8) must answer when pages of a shared
// guest_memfd range are pinned and the range is converted to private, and
// after they are unpinned. Pure: the workload observes, this decides, so a
// unit test hands it good and broken observations.
//
// v8's contract (patch 14, "ensure pages not in use before conversion"): a
// shared -> private conversion unmaps the range from host userspace, drains
// the LRU batches, then fails with -EAGAIN when a folio holds more
// references than the page cache's and the lookup's; error_offset is the
// byte offset of the first such page; the attributes of the whole range stay
// as they were (all or nothing). A range without pinned pages converts while
// others are pinned. Once the pins are gone the same conversion succeeds.
#pragma once

#include "reports/pin_convert.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gms::workloads {

struct PinObservation {
    uint64_t range_offset = 0, range_size = 0; // the range converted (bytes)
    std::vector<uint64_t> pinned_offsets;      // pages pinned (bytes; any order)
    int while_pinned_errno = 0;                // the conversion while pinned; 0 = success
    // What the kernel wrote back; nullopt: the ioctl's struct, as this kernel
    // lays it out, has no error_offset.
    std::optional<uint64_t> error_offset;
    // Pages (bytes) that were no longer shared with their data after the
    // failed conversion.
    std::vector<uint64_t> not_shared_after_error;
    // A range without pinned pages converted (and back) while the pins were
    // held; nullopt: not tried (the first pinned page is the range's first).
    std::optional<int> unpinned_subrange_errno;
    int after_unpin_errno = 0;        // the whole range again, after unpinning
    uint64_t after_unpin_retries = 0; // EAGAIN answers retried before that one
    // After that conversion: a converted page raised SIGBUS through the
    // guest_memfd mapping (nullopt: not checked, the conversion failed).
    std::optional<bool> private_after_unpin;
    std::optional<int> back_to_shared_errno; // private -> shared at the end
};

struct PinJudgement {
    report::Outcome outcome = report::Outcome::pass;
    std::string reason; // the first expectation that failed (fail/error)
    std::optional<uint64_t> expected_error_offset;
    std::vector<std::string> evidence; // one line per observation
};

// Judges one pin method's run. fail: the kernel broke the contract above;
// error: the observation cannot be judged (nothing pinned inside the range:
// the workload's bug); skip: the kernel's struct has no error_offset.
PinJudgement judge_pin_conversion(const PinObservation& o);

// The report's case from an observation and its judgement.
report::PinCase pin_case(const std::string& method, const std::string& pin, const PinObservation& o,
                         const PinJudgement& j);

} // namespace gms::workloads
