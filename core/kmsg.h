// Kernel log scanning: records from /dev/kmsg written after the run started,
// classified into findings (WARNING, BUG, soft lockup, RCU stall, ...).
#pragma once

#include "core/fd.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gms {

// One classified kernel log record. Plain data that reports embed as is
// (report::KmsgFinding): the scanner sits below the report model.
struct KmsgFinding {
    std::string kind; // WARNING, BUG, soft_lockup, rcu_stall, bad_page_state, ...
    std::string line; // the headline (what waivers match)
    uint64_t timestamp_us = 0;
    // The whole splat, headline and stack included, in order (at most
    // kMaxSplatLines); empty for a finding that came as one line (the lab's
    // console scan).
    std::vector<std::string> splat;
    // Attribution from the splat itself (attribute_splat()): the task it
    // names ("Comm:PID") and the guest_memfd operations in its call trace.
    std::string task;
    std::vector<std::string> operations;
};

// One /dev/kmsg record: its message (first line) and timestamp.
struct KmsgRecord {
    uint64_t timestamp_us = 0;
    std::string message;
};

inline constexpr size_t kMaxSplatLines = 200;

// Records -> findings, each with its whole splat: a finding's headline
// starts one ("------------[ cut here ]------------" starts a WARN or BUG
// whose headline is the next classified line); a WARN, BUG or Oops ends after
// "---[ end trace", the others after " </TASK>"; any at the next headline,
// after kMaxSplatLines, or when the log goes quiet for more than a second.
// Pure, for tests.
std::vector<KmsgFinding> assemble_splats(const std::vector<KmsgRecord>& records);

// Fills `task` and `operations` of a finding from its splat: the "Comm:/PID:"
// of its "CPU: N ... PID: P Comm: C" line (or a soft lockup's "[comm:pid]"),
// and the guest_memfd functions of its call trace mapped to the operations
// gmemstress drives (kvm_gmem_punch_hole -> punch_hole, ...). Not by time:
// printk's clock (local_clock) is not the BPF probes' CLOCK_MONOTONIC.
void attribute_splat(KmsgFinding& f);

// A known kernel message that is reported as waived, not as a finding: an
// ECMAScript regular expression searched in the finding's message, with
// where it was given ("profile.toml:12", "--waive", "waivers.txt:3") and why.
struct KmsgWaiver {
    std::string regex;
    std::string origin;
    std::string reason; // optional
};

// A finding a waiver matched: `waiver` indexes the run's waiver list.
struct WaivedFinding {
    KmsgFinding finding;
    size_t waiver = 0;
};

// A waiver whose regex compiles; UsageError "ORIGIN: bad regular expression
// 'RE': why" when it does not.
KmsgWaiver make_waiver(std::string regex, std::string origin, std::string reason = "");

// A --waivers file: one regex a line; blank lines and lines starting with
// '#' are skipped, surrounding blanks ignored. Errors name FILE:LINE.
std::vector<KmsgWaiver> read_waivers_file(const std::string& path);

// Findings split by a list of waivers (the first that matches wins).
struct SplitFindings {
    std::vector<KmsgFinding> findings;
    std::vector<WaivedFinding> waived;
};
SplitFindings apply_waivers(const std::vector<KmsgFinding>& findings,
                            const std::vector<KmsgWaiver>& waivers);

// Classifies one kernel log message; nullopt if it is not a finding.
// Pure, for tests.
std::optional<std::string> classify_kernel_message(const std::string& msg);

class KmsgWatcher {
  public:
    // Opens /dev/kmsg and seeks to its end: only later records count.
    // If it cannot, available() is false and reason() says why.
    KmsgWatcher();
    bool available() const { return fd_.valid(); }
    const std::string& reason() const { return reason_; }
    // Reads every record since the start (or the previous call).
    std::vector<KmsgFinding> collect();

  private:
    UniqueFd fd_;
    std::string reason_;
};

} // namespace gms
