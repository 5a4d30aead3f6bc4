#include "core/kmsg.h"

#include "core/error.h"
#include "core/util.h"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <regex>
#include <unistd.h>

namespace gms {

std::optional<std::string> classify_kernel_message(const std::string& msg) {
    // Order matters: the most specific first.
    static const std::vector<std::pair<std::regex, std::string>> rules = {
        {std::regex(R"(soft lockup - CPU#\d+ stuck)"), "soft_lockup"},
        {std::regex(R"(hard LOCKUP|Watchdog detected hard LOCKUP)"), "hard_lockup"},
        {std::regex(
             R"(rcu: INFO: rcu_\w+ (self-)?detected stall|rcu_\w+ detected stalls|RCU stall)"),
         "rcu_stall"},
        {std::regex(R"(task [^ ]+:\d+ blocked for more than \d+ seconds)"), "hung_task"},
        {std::regex(R"(BUG: Bad page state)"), "bad_page_state"},
        {std::regex(R"(BUG: Bad page map)"), "bad_page_map"},
        {std::regex(R"(BUG: KASAN|BUG: KFENCE|UBSAN:)"), "sanitizer"},
        // lockdep (PROVE_LOCKING): reported before any deadlock happens.
        {std::regex(
             R"(WARNING: (possible circular locking dependency|possible recursive locking|)"
             R"(inconsistent lock state|bad unlock balance|held lock freed|suspicious RCU usage|)"
             R"(lock held when returning to user space|possible irq lock inversion))"),
         "lockdep"},
        {std::regex(R"(BUG: unable to handle|Oops:|general protection fault)"), "oops"},
        {std::regex(R"(Kernel panic)"), "panic"},
        {std::regex(R"(^BUG:|kernel BUG at)"), "BUG"},
        {std::regex(R"(^WARNING: |------------\[ cut here \]------------)"), "WARNING"},
        {std::regex(R"(Memory failure: |MCE: )"), "memory_failure"},
    };
    for (const auto& [re, kind] : rules)
        if (std::regex_search(msg, re))
            return kind;
    return std::nullopt;
}

namespace {

// Records kept per collect(): a log flood must not exhaust memory.
constexpr size_t kMaxRecords = 100000;

bool starts_with(const std::string& s, std::string_view p) {
    return s.compare(0, p.size(), p) == 0;
}

bool is_cut_here(const std::string& m) {
    return m.find("------------[ cut here ]------------") != std::string::npos;
}

} // namespace

std::vector<KmsgFinding> assemble_splats(const std::vector<KmsgRecord>& records) {
    std::vector<KmsgFinding> out;
    std::optional<KmsgFinding> cur;
    bool cut_pending = false; // cur began with "cut here": its headline is still to come
    uint64_t last_us = 0;
    auto close = [&] {
        if (cur) {
            attribute_splat(*cur);
            out.push_back(std::move(*cur));
        }
        cur.reset();
        cut_pending = false;
    };
    for (const auto& r : records) {
        const std::string& m = r.message;
        if (cur && r.timestamp_us > last_us + 1000000)
            close(); // a quiet second: whatever follows is not this splat
        last_us = r.timestamp_us;
        if (is_cut_here(m)) {
            close();
            cur = KmsgFinding{"WARNING", m, r.timestamp_us, {m}, {}, {}};
            cut_pending = true;
            continue;
        }
        auto kind = classify_kernel_message(m);
        if (kind && cur && cut_pending) { // the headline of the cut-here splat
            cur->kind = *kind;
            cur->line = m;
            cur->splat.push_back(m);
            cut_pending = false;
            continue;
        }
        if (kind && !(cur && kind == std::string("WARNING") && starts_with(m, "WARNING: CPU"))) {
            close();
            cur = KmsgFinding{*kind, m, r.timestamp_us, {m}, {}, {}};
            continue;
        }
        if (!cur)
            continue;
        cur->splat.push_back(m);
        // WARN, BUG and Oops end with the end-trace marker (after the stack
        // come the lockdep irq events); the others end with their stack.
        const bool traced = cur->kind == "WARNING" || cur->kind == "BUG" || cur->kind == "oops";
        if (m.find("---[ end trace") != std::string::npos || cur->splat.size() >= kMaxSplatLines ||
            (!traced && m.find("</TASK>") != std::string::npos))
            close();
    }
    close();
    return out;
}

void attribute_splat(KmsgFinding& f) {
    static const std::regex cpu_line(R"(CPU: \d+ .*PID: (\d+) .*Comm: (\S+))");
    static const std::regex warn_line(R"(, CPU#\d+: (\S+)/(\d+)$)"); // 7.x WARNING line
    static const std::regex lockup_task(R"(stuck for \d+s! \[(.+):(\d+)\])");
    static const std::regex hung_task(R"(task ([^ ]+):(\d+) blocked for)");
    // The guest_memfd functions whose frames name an operation gmemstress drives.
    static const std::vector<std::pair<std::string, std::string>> ops = {
        {"kvm_gmem_punch_hole", "punch_hole"},
        {"kvm_gmem_allocate", "allocate"},
        {"kvm_gmem_release", "release"},
        {"kvm_gmem_commit_memory_region", "memslot_commit"},
        {"kvm_gmem_bind", "memslot_bind"},
        {"kvm_gmem_unbind", "memslot_unbind"},
        {"kvm_gmem_get_pfn", "guest_fault"},
        {"kvm_gmem_fault_user_mapping", "host_fault"},
        {"kvm_gmem_populate", "populate"},
        {"kvm_gmem_error_folio", "memory_failure"},
        {"kvm_gmem_fallocate", ""}, // punch_hole or allocate: fallocate_op()
    };
    // kvm_gmem_fallocate() inlines punch hole and allocate: the splat's user
    // registers tell which (fallocate's ORIG_RAX 0x11d, its mode in RSI).
    static const std::regex user_rsi(R"(RSI: ([0-9a-f]{16}))");
    auto fallocate_op = [&f] {
        bool in_fallocate = false;
        std::smatch r;
        for (const auto& l : f.splat) {
            if (l.find("ORIG_RAX: 000000000000011d") != std::string::npos)
                in_fallocate = true;
            else if (in_fallocate && std::regex_search(l, r, user_rsi))
                return std::string(std::stoull(r[1].str(), nullptr, 16) & 0x2 // PUNCH_HOLE
                                       ? "punch_hole"
                                       : "allocate");
        }
        return std::string("fallocate");
    };
    f.task.clear();
    f.operations.clear();
    std::smatch m;
    for (const auto& l : f.splat) {
        if (l.rfind(" ? ", 0) == 0)
            continue; // a frame the unwinder is unsure of
        if (f.task.empty()) {
            if (std::regex_search(l, m, cpu_line))
                f.task = fmt::format("{}:{}", m[2].str(), m[1].str());
            else if (std::regex_search(l, m, warn_line) || std::regex_search(l, m, lockup_task) ||
                     std::regex_search(l, m, hung_task))
                f.task = fmt::format("{}:{}", m[1].str(), m[2].str());
        }
        for (const auto& [fn, op] : ops) {
            auto at = l.find(fn);
            // A frame "fn+0x..", or "at file:line fn+0x.." in a WARNING line.
            if (at == std::string::npos || l.compare(at + fn.size(), 1, "+") != 0)
                continue;
            auto name = op.empty() ? fallocate_op() : op;
            if (std::find(f.operations.begin(), f.operations.end(), name) == f.operations.end())
                f.operations.push_back(name);
        }
    }
    // "fallocate" says less than a punch_hole or allocate frame beside it.
    auto has = [&f](const char* op) {
        return std::find(f.operations.begin(), f.operations.end(), op) != f.operations.end();
    };
    if (has("fallocate") && (has("punch_hole") || has("allocate")))
        f.operations.erase(std::find(f.operations.begin(), f.operations.end(), "fallocate"));
}

namespace {
std::regex compile(const KmsgWaiver& w) {
    try {
        return std::regex(w.regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        throw UsageError(
            fmt::format("{}: bad regular expression '{}': {}", w.origin, w.regex, e.what()));
    }
}
} // namespace

KmsgWaiver make_waiver(std::string regex, std::string origin, std::string reason) {
    KmsgWaiver w{std::move(regex), std::move(origin), std::move(reason)};
    if (w.regex.empty())
        throw UsageError(fmt::format("{}: empty regular expression (it would waive every "
                                     "kernel log finding)",
                                     w.origin));
    compile(w);
    return w;
}

std::vector<KmsgWaiver> read_waivers_file(const std::string& path) {
    std::ifstream f(path);
    if (!f)
        throw UsageError(fmt::format("--waivers {}: cannot read it ({})", path, errno_name(errno)));
    std::vector<KmsgWaiver> out;
    std::string line;
    for (int n = 1; std::getline(f, line); ++n) {
        auto first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos || line[first] == '#')
            continue;
        auto last = line.find_last_not_of(" \t\r");
        out.push_back(
            make_waiver(line.substr(first, last - first + 1), fmt::format("{}:{}", path, n)));
    }
    return out;
}

SplitFindings apply_waivers(const std::vector<KmsgFinding>& findings,
                            const std::vector<KmsgWaiver>& waivers) {
    std::vector<std::regex> res;
    for (const auto& w : waivers)
        res.push_back(compile(w));
    SplitFindings out;
    for (const auto& f : findings) {
        auto hit = std::find_if(res.begin(), res.end(), [&](const std::regex& re) {
            return std::regex_search(f.line, re);
        });
        if (hit == res.end())
            out.findings.push_back(f);
        else
            out.waived.push_back({f, size_t(hit - res.begin())});
    }
    return out;
}

KmsgWatcher::KmsgWatcher() {
    int fd = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        reason_ = fmt::format("cannot open /dev/kmsg: {}", errno_name(errno));
        return;
    }
    fd_.reset(fd);
    if (::lseek(fd, 0, SEEK_END) < 0) {
        reason_ = fmt::format("cannot seek /dev/kmsg: {}", errno_name(errno));
        fd_.reset();
    }
}

std::vector<KmsgFinding> KmsgWatcher::collect() {
    std::vector<KmsgRecord> records;
    if (!fd_.valid())
        return {};
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd_.get(), buf, sizeof buf - 1);
        if (n < 0) {
            if (errno == EPIPE) // overwritten records: keep reading newer ones
                continue;
            break; // EAGAIN: no more records
        }
        buf[n] = '\0';
        // Record: "prio,seq,ts_us,flags;message\n continuation lines"
        std::string rec(buf, size_t(n));
        auto semi = rec.find(';');
        if (semi == std::string::npos)
            continue;
        std::string header = rec.substr(0, semi);
        std::string msg = rec.substr(semi + 1);
        if (auto nl = msg.find('\n'); nl != std::string::npos)
            msg.resize(nl);
        uint64_t ts = 0;
        auto c1 = header.find(',');
        auto c2 = c1 == std::string::npos ? c1 : header.find(',', c1 + 1);
        if (c2 != std::string::npos)
            ts = std::strtoull(header.c_str() + c2 + 1, nullptr, 10);
        if (records.size() < kMaxRecords)
            records.push_back({ts, std::move(msg)});
    }
    return assemble_splats(records);
}

} // namespace gms
