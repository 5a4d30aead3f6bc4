// fault-inject's pieces without KVM: calls, clean errnos, debugfs settings, fail-nth.
#include "workloads/fault_inject.h"

#include "core/error.h"
#include "core/util.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

namespace gms::workloads::fault {

const std::vector<std::string>& call_names() {
    static const std::vector<std::string> names = {"create", "allocate",       "punch",
                                                   "bind",   "unbind",         "set_attributes",
                                                   "pre_fault", "first_touch"};
    return names;
}

bool clean_failure(const std::string& call, const std::string& err) {
    if (call == "first_touch")
        return err == kSigbus;
    return err == "ENOMEM";
}

const std::vector<Setting>& sweep_settings() {
    static const std::vector<Setting> s = {
        {"failslab/ignore-gfp-wait", "N"},
        {"failslab/probability", "0"},
        {"failslab/times", "-1"},
        {"failslab/verbose", "0"},
        {"fail_page_alloc/ignore-gfp-wait", "N"},
        {"fail_page_alloc/ignore-gfp-highmem", "N"},
        {"fail_page_alloc/min-order", "0"},
        {"fail_page_alloc/probability", "0"},
        {"fail_page_alloc/times", "-1"},
        {"fail_page_alloc/verbose", "0"},
    };
    return s;
}

namespace {

// One whole write of `value`; 0 or errno.
int write_value(const std::string& path, const std::string& value) {
    // O_TRUNC as the shell's `echo V > attr`: debugfs ignores it, a stand-in file needs it.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (!fd)
        return errno;
    ssize_t n = ::write(fd.get(), value.data(), value.size());
    if (n < 0)
        return errno;
    return size_t(n) == value.size() ? 0 : EIO;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

} // namespace

DebugfsSettings::DebugfsSettings(std::string dir, const std::vector<Setting>& settings)
    : dir_(std::move(dir)) {
    for (const auto& s : settings) {
        std::string path = dir_ + "/" + s.file;
        auto v = read_file(path);
        if (!v)
            throw EnvError(fmt::format("cannot read {}: {}", path, errno_name(errno)));
        previous_.push_back({s.file, trimmed(*v)});
    }
    for (const auto& s : settings) {
        std::string path = dir_ + "/" + s.file;
        if (int e = write_value(path, s.value)) {
            auto failed = restore();
            throw EnvError(fmt::format("cannot write '{}' to {}: {}{}", s.value, path,
                                       errno_name(e),
                                       failed.empty() ? std::string()
                                                      : "; and could not restore " +
                                                            fmt::format("{}", fmt::join(failed, ", "))));
        }
        ++written_;
    }
}

DebugfsSettings::~DebugfsSettings() {
    restore();
}

std::vector<std::string> DebugfsSettings::restore() {
    std::vector<std::string> failed;
    // Reverse order, so a setting written twice ends at its first value.
    while (written_ > 0) {
        const Setting& s = previous_[--written_];
        std::string path = dir_ + "/" + s.file;
        if (int e = write_value(path, s.value))
            failed.push_back(fmt::format("{} ({})", path, errno_name(e)));
    }
    return failed;
}

std::optional<unsigned> parse_fail_nth(const char* buf, size_t len) {
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        --len;
    unsigned v = 0;
    auto [end, ec] = std::from_chars(buf, buf + len, v);
    if (ec != std::errc() || end != buf + len || len == 0)
        return std::nullopt;
    return v;
}

FailNth::FailNth(std::string path) : path_(std::move(path)) {}

int FailNth::try_arm(unsigned n) {
    // A fresh open each time, as syzkaller does: the file has no llseek, and
    // the read-back must start at offset 0.
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd_)
        return errno;
    char buf[16];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
    size_t len = size_t(end - buf);
    ssize_t w = ::write(fd_.get(), buf, len);
    if (w < 0 || size_t(w) != len) {
        int e = w < 0 ? errno : EIO;
        fd_.reset();
        return e;
    }
    return 0;
}

bool FailNth::injected(int* err) {
    *err = 0;
    if (!fd_) {
        *err = EBADF;
        return false;
    }
    char buf[16];
    ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
    if (n < 0)
        *err = errno;
    // Disarm whatever is left, so nothing after the call fails.
    if (::write(fd_.get(), "0", 1) != 1 && !*err)
        *err = errno ? errno : EIO;
    fd_.reset();
    if (n <= 0) {
        if (!*err)
            *err = EIO;
        return false;
    }
    auto v = parse_fail_nth(buf, size_t(n));
    if (!v) {
        *err = EINVAL;
        return false;
    }
    return *v == 0;
}

// The check `fail-nth.CALL` of one sweep: what was expected, what was seen.
report::Check sweep_check(const report::FaultSweep& s) {
    report::Check c;
    c.name = "fail-nth." + s.call;
    c.outcome = s.outcome;
    c.reason = s.reason;
    c.expected = fmt::format("every injected fault: {} fails with {} or succeeds, nothing leaks, "
                             "no kernel log finding, the call works again",
                             s.syscall, s.call == "first_touch" ? "SIGBUS" : "ENOMEM");
    if (s.outcome != report::Outcome::skip) {
        std::vector<std::string> errs;
        for (const auto& [e, k] : s.errnos)
            errs.push_back(fmt::format("{} {}", e, k));
        c.observed = fmt::format("{} faults injected at N {}..{} ({}); {}{}{} succeeded; {} leaks, "
                                 "{} failures",
                                 s.faults_injected, s.first_n, s.last_n,
                                 s.exhausted ? "exhausted" : "bounded by " + s.bounded_by,
                                 fmt::join(errs, ", "), errs.empty() ? "" : ", ",
                                 s.succeeded_despite_fault, s.leaks, s.failures);
    }
    return c;
}

} // namespace gms::workloads::fault
