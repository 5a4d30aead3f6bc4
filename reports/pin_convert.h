// The pin-convert section of a workload's report: per pin method, what was
// pinned, what KVM_SET_MEMORY_ATTRIBUTES2 (shared -> private, in-place
// conversion series) answered while the pages were pinned and after they were
// unpinned, and the judgement with its evidence (workloads/pin_judge.h).
// Plain data; the JSON and text renderings are below, the schema is
// $defs/pin_convert in reports/schema/report.schema.json.
#pragma once

#include "reports/outcome.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

// One pin method's run. Errno fields hold the errno's name, "ok" for
// success, "" when the step was not reached.
struct PinCase {
    std::string method; // "vmsplice", "io_uring_fixed_buffers"
    Outcome outcome = Outcome::skip;
    std::string reason;        // why it skipped or failed
    std::string pin;           // how the pages were pinned, in words
    uint64_t range_offset = 0; // the range converted, bytes into the guest_memfd
    uint64_t range_size = 0;
    std::vector<uint64_t> pinned_offsets;          // bytes into the guest_memfd
    std::string while_pinned;                      // the conversion of the range while pinned
    std::optional<uint64_t> error_offset;          // what the kernel wrote back (unset: not read)
    std::optional<uint64_t> expected_error_offset; // the first pinned page of the range
    // Pages (byte offsets) no longer shared with their data after the failed
    // conversion: the attributes must be unchanged on error.
    std::vector<uint64_t> not_shared_after_error;
    std::string unpinned_subrange;    // a range without pinned pages, while pinned (and back)
    std::string after_unpin;          // the whole range again, after unpinning
    uint64_t after_unpin_retries = 0; // EAGAIN retries before that answer
    std::optional<bool> private_after_unpin; // a converted page SIGBUSes through the mapping
    std::string back_to_shared;
    std::vector<std::string> evidence; // the judge's, one line per observation
};

struct PinConvert {
    std::string vm_type;         // "sw_protected"
    uint64_t gmem_flags = 0;     // of the guest_memfds converted
    uint64_t attrs2_request = 0; // the ioctl request number used
    std::string attrs2_source;   // where its layout came from ("BTF", "default layout (...)")
    uint64_t pages = 0;          // pages per guest_memfd
    std::string skip_reason;     // set: no case could run on this kernel
    std::vector<PinCase> cases;
};

nlohmann::json to_json(const PinConvert& s);
// Lines for the text summary (no trailing newline), each indented by `indent`.
std::vector<std::string> to_text_lines(const PinConvert& s, const std::string& indent);

} // namespace gms::report
