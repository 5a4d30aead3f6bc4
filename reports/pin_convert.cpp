#include "reports/pin_convert.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gms::report {

using nlohmann::json;

namespace {

json opt(const std::optional<uint64_t>& v) {
    return v ? json(*v) : json(nullptr);
}

std::string hex_list(const std::vector<uint64_t>& v) {
    return fmt::format("{:#x}", fmt::join(v, ", "));
}

} // namespace

json to_json(const PinConvert& s) {
    json cases = json::array();
    for (const auto& c : s.cases)
        cases.push_back({
            {"method", c.method},
            {"outcome", to_string(c.outcome)},
            {"reason", c.reason},
            {"pin", c.pin},
            {"range_offset", c.range_offset},
            {"range_size", c.range_size},
            {"pinned_offsets", c.pinned_offsets},
            {"while_pinned", c.while_pinned},
            {"error_offset", opt(c.error_offset)},
            {"expected_error_offset", opt(c.expected_error_offset)},
            {"not_shared_after_error", c.not_shared_after_error},
            {"unpinned_subrange", c.unpinned_subrange},
            {"after_unpin", c.after_unpin},
            {"after_unpin_retries", c.after_unpin_retries},
            {"private_after_unpin",
             c.private_after_unpin ? json(*c.private_after_unpin) : json(nullptr)},
            {"back_to_shared", c.back_to_shared},
            {"evidence", c.evidence},
        });
    return {{"vm_type", s.vm_type},
            {"gmem_flags", s.gmem_flags},
            {"attrs2_request", s.attrs2_request},
            {"attrs2_source", s.attrs2_source},
            {"pages", s.pages},
            {"skip_reason", s.skip_reason},
            {"cases", cases}};
}

std::vector<std::string> to_text_lines(const PinConvert& s, const std::string& in) {
    std::vector<std::string> out;
    if (!s.skip_reason.empty()) {
        out.push_back(in + "pin-convert: not run here: " + s.skip_reason);
        return out;
    }
    out.push_back(fmt::format("{}pin-convert: {} VM, guest_memfd flags {:#x}, {} pages, "
                              "KVM_SET_MEMORY_ATTRIBUTES2 {:#x} (layout: {})",
                              in, s.vm_type, s.gmem_flags, s.pages, s.attrs2_request,
                              s.attrs2_source));
    for (const auto& c : s.cases) {
        std::string line = fmt::format("{}  {:<24} {}", in, c.method, to_string(c.outcome));
        if (!c.pinned_offsets.empty())
            line += fmt::format(": pinned {}; while pinned {}", hex_list(c.pinned_offsets),
                                c.while_pinned.empty() ? "-" : c.while_pinned);
        if (c.error_offset)
            line += fmt::format(" error_offset {:#x}", *c.error_offset);
        if (!c.after_unpin.empty())
            line += fmt::format("; after unpin {}", c.after_unpin);
        if (!c.reason.empty())
            line += " (" + c.reason + ")";
        out.push_back(line);
    }
    return out;
}

} // namespace gms::report
