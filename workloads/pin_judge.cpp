#include "workloads/pin_judge.h"

#include "core/util.h"

#include <algorithm>
#include <cerrno>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gms::workloads {

namespace {

constexpr uint64_t kPage = 4096;

std::string answer(int e) {
    return e ? errno_name(e) : std::string("ok");
}

std::string hex_list(const std::vector<uint64_t>& v) {
    return fmt::format("{:#x}", fmt::join(v, ", "));
}

} // namespace

PinJudgement judge_pin_conversion(const PinObservation& o) {
    PinJudgement j;
    const uint64_t end = o.range_offset + o.range_size;
    std::vector<uint64_t> inside;
    for (uint64_t p : o.pinned_offsets)
        if (p >= o.range_offset && p < end)
            inside.push_back(p / kPage * kPage);
    std::sort(inside.begin(), inside.end());
    inside.erase(std::unique(inside.begin(), inside.end()), inside.end());
    if (inside.empty()) {
        j.outcome = report::Outcome::error;
        j.reason = fmt::format("no pinned page inside the range [{:#x}, {:#x}) (pinned: {}): "
                               "nothing to judge",
                               o.range_offset, end, hex_list(o.pinned_offsets));
        return j;
    }
    const uint64_t first = inside.front();
    j.expected_error_offset = first;

    // The first failed expectation is the reason; every observation is evidence.
    auto fail = [&](std::string why) {
        if (j.outcome == report::Outcome::pass) {
            j.outcome = report::Outcome::fail;
            j.reason = std::move(why);
        }
    };
    bool error_offset_unknown = false;

    std::string e =
        fmt::format("to private [{:#x}, {:#x}) with page(s) {} pinned: {}", o.range_offset, end,
                    hex_list(inside), answer(o.while_pinned_errno));
    if (o.error_offset)
        e += fmt::format(", error_offset {:#x}", *o.error_offset);
    j.evidence.push_back(e);
    if (o.while_pinned_errno == 0) {
        fail("the conversion succeeded while pages were pinned (a page with an extra reference "
             "became private)");
    } else if (o.while_pinned_errno != EAGAIN) {
        fail(fmt::format("the conversion while pinned failed with {}, not EAGAIN",
                         errno_name(o.while_pinned_errno)));
    } else if (!o.error_offset) {
        error_offset_unknown = true;
    } else if (*o.error_offset != first) {
        const uint64_t got = *o.error_offset;
        if (got < o.range_offset || got >= end)
            fail(fmt::format("error_offset {:#x} is outside the range [{:#x}, {:#x}); the first "
                             "pinned page is {:#x}",
                             got, o.range_offset, end, first));
        else if (std::binary_search(inside.begin(), inside.end(), got / kPage * kPage))
            fail(fmt::format("error_offset {:#x} names a pinned page, but not the first: {:#x}",
                             got, first));
        else
            fail(fmt::format("error_offset {:#x} names a page that was not pinned; the first "
                             "pinned page is {:#x}",
                             got, first));
    }

    if (o.while_pinned_errno != 0) {
        if (o.not_shared_after_error.empty())
            j.evidence.push_back("after the failed conversion every page of the range was still "
                                 "shared with its data");
        else {
            j.evidence.push_back(fmt::format("after the failed conversion no longer shared with "
                                             "its data: {}",
                                             hex_list(o.not_shared_after_error)));
            fail(fmt::format("the failed conversion changed the range: {} no longer shared with "
                             "its data (attributes must stay unchanged on error)",
                             hex_list(o.not_shared_after_error)));
        }
    }

    if (o.unpinned_subrange_errno) {
        j.evidence.push_back(fmt::format("[{:#x}, {:#x}) (no pinned page) to private and back "
                                         "while the pins were held: {}",
                                         o.range_offset, first,
                                         answer(*o.unpinned_subrange_errno)));
        if (*o.unpinned_subrange_errno)
            fail(fmt::format("a range without pinned pages, [{:#x}, {:#x}), failed to convert "
                             "while other pages were pinned: {}",
                             o.range_offset, first, errno_name(*o.unpinned_subrange_errno)));
    }

    j.evidence.push_back(
        fmt::format("to private after unpinning: {}{}", answer(o.after_unpin_errno),
                    o.after_unpin_retries
                        ? fmt::format(" (after {} EAGAIN answer(s) retried)", o.after_unpin_retries)
                        : std::string()));
    if (o.after_unpin_errno)
        fail(fmt::format(
            "the conversion still failed after unpinning: {}{}", errno_name(o.after_unpin_errno),
            o.after_unpin_retries ? fmt::format(" (retried {} times)", o.after_unpin_retries)
                                  : std::string()));
    if (o.private_after_unpin) {
        j.evidence.push_back(
            *o.private_after_unpin
                ? fmt::format("page {:#x} then raised SIGBUS through the mapping", first)
                : fmt::format("page {:#x} was still readable through the mapping", first));
        if (!*o.private_after_unpin)
            fail(fmt::format("after the conversion to private succeeded, page {:#x} was still "
                             "readable through the guest_memfd mapping (expected SIGBUS)",
                             first));
    } else if (!o.after_unpin_errno) {
        fail("the converted range was not checked for SIGBUS");
    }
    if (o.back_to_shared_errno) {
        j.evidence.push_back(fmt::format("back to shared: {}", answer(*o.back_to_shared_errno)));
        if (*o.back_to_shared_errno)
            fail(fmt::format("converting the range back to shared failed: {}",
                             errno_name(*o.back_to_shared_errno)));
    } else if (!o.after_unpin_errno) {
        fail("the range was not converted back to shared");
    }

    if (j.outcome == report::Outcome::pass && error_offset_unknown) {
        j.outcome = report::Outcome::skip;
        j.reason = "EAGAIN as expected, but this kernel's struct kvm_memory_attributes2 has no "
                   "error_offset, so which page the kernel named cannot be checked";
    }
    return j;
}

report::PinCase pin_case(const std::string& method, const std::string& pin, const PinObservation& o,
                         const PinJudgement& j) {
    report::PinCase c;
    c.method = method;
    c.pin = pin;
    c.outcome = j.outcome;
    c.reason = j.reason;
    c.range_offset = o.range_offset;
    c.range_size = o.range_size;
    c.pinned_offsets = o.pinned_offsets;
    c.while_pinned = answer(o.while_pinned_errno);
    c.error_offset = o.error_offset;
    c.expected_error_offset = j.expected_error_offset;
    c.not_shared_after_error = o.not_shared_after_error;
    if (o.unpinned_subrange_errno)
        c.unpinned_subrange = answer(*o.unpinned_subrange_errno);
    c.after_unpin = answer(o.after_unpin_errno);
    c.after_unpin_retries = o.after_unpin_retries;
    c.private_after_unpin = o.private_after_unpin;
    if (o.back_to_shared_errno)
        c.back_to_shared = answer(*o.back_to_shared_errno);
    c.evidence = j.evidence;
    return c;
}

} // namespace gms::workloads
