// `gmemstress lab`: prepare (kernel, modules, initramfs), boot QEMU and follow
// its console, collect the results from the writable 9p share.
#include "lab/lab.h"

#include "core/caps.h"
#include "core/error.h"
#include "core/kmsg.h"
#include "core/run_control.h"
#include "core/util.h"
#include "kvm/kvm.h"
#include "lab/process.h"
#include "reports/render.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <poll.h>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <unistd.h>
#include <version.h>

namespace fs = std::filesystem;

namespace gms::lab {

const std::vector<Plant>& plants() {
    static const std::vector<Plant> all = {
        {"nozero", 0x01, "hand-outs of folios holding stale bytes, marked uptodate"},
        {"not-uptodate", 0x02, "hand-outs of zeroed folios never marked uptodate"},
        {"punch-leaves", 0x04, "punch hole leaves the last page of its range"},
        {"ref-leak", 0x08, "a folio reference leaked per hand-out of every 64th page"},
        {"long-hold", 0x10, "the first two punches sleep 3 s holding invalidate_lock"},
        {"warn", 0x20, "a WARN in punch hole"},
        {"stale-guest", 0x40, "punch hole without invalidating KVM's mappings"},
        {"lock-order", 0x80,
         "mmap_lock taken inside invalidate_lock once, and the reverse once (lockdep: "
         "--sanitizers)"},
        {"use-after-free", 0x100, "a punched folio read after it was freed (KASAN: --sanitizers)"},
        {"error-leak", 0x200,
         "a failed fallocate allocation leaks a folio reference (error path only: fault-inject)"},
    };
    return all;
}

uint32_t plant_mask(const std::vector<std::string>& names) {
    uint32_t mask = 0;
    for (const auto& n : names) {
        auto it = std::find_if(plants().begin(), plants().end(),
                               [&](const Plant& p) { return n == p.name; });
        if (it == plants().end()) {
            std::string known;
            for (const auto& p : plants())
                known += (known.empty() ? "" : ", ") + std::string(p.name);
            throw UsageError(fmt::format("--plant {}: no such plant (known: {})", n, known));
        }
        mask |= it->bit;
    }
    return mask;
}

std::string describe_guest_command(const Options& o) {
    if (!o.exec_command.empty()) {
        std::string words;
        for (const auto& w : o.exec_command)
            words += (words.empty() ? "" : " ") + w;
        return "exec " + words;
    }
    return "gmemstress " + o.guest_command;
}

std::optional<report::KmsgFinding> console_finding(const std::string& line) {
    // "[   13.456789] BUG: ..." -> "BUG: ..." (rules anchor at the message start).
    static const std::regex stamp(R"(^\s*\[\s*(\d+)\.(\d+)\]\s?)");
    std::smatch m;
    std::string msg = line;
    uint64_t us = 0;
    if (std::regex_search(line, m, stamp)) {
        msg = m.suffix().str();
        us = std::stoull(m[1].str()) * 1000000 + std::stoull((m[2].str() + "000000").substr(0, 6));
    }
    auto kind = classify_kernel_message(msg);
    if (!kind)
        return std::nullopt;
    return report::KmsgFinding{*kind, msg, us};
}

bool takes_profile_and_report(const std::string& guest_command) {
    return guest_command == "run" || guest_command == "probe-cost";
}

std::string to_string(Failure f) {
    switch (f) {
    case Failure::none:
        return "none";
    case Failure::boot:
        return "boot";
    case Failure::setup:
        return "setup";
    case Failure::panic:
        return "panic";
    case Failure::timeout:
        return "timeout";
    case Failure::interrupted:
        return "interrupted";
    case Failure::transport:
        return "transport";
    case Failure::unresponsive:
        return "unresponsive";
    }
    return "?";
}

namespace {

constexpr double kKvmProbeSeconds = 20; // KVM boots reach init in ~2 s
constexpr size_t kTailLines = 40;
constexpr const char* kTcgCpu = "EPYC-Milan,+svm"; // TCG emulates SVM: nested KVM in the guest

double seconds_since(uint64_t t0) {
    return double(now_ns() - t0) / 1e9;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw EnvError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::optional<std::string> slurp_if_exists(const std::string& path) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        return std::nullopt;
    return slurp(path);
}

void progress(const Options& o, const std::string& msg) {
    if (!o.quiet)
        fmt::print(stderr, "lab: {}\n", msg);
}

// A private temporary directory removed with its contents on every exit path.
class WorkDir {
  public:
    explicit WorkDir(bool keep) : keep_(keep) {
        const char* tmp = std::getenv("TMPDIR");
        std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/gmemstress-lab.XXXXXX";
        if (!::mkdtemp(tmpl.data()))
            throw SysError("mkdtemp", tmpl, errno);
        path_ = tmpl;
    }
    ~WorkDir() {
        if (keep_) {
            fmt::print(stderr, "lab: work directory kept: {}\n", path_);
            return;
        }
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    WorkDir(const WorkDir&) = delete;
    WorkDir& operator=(const WorkDir&) = delete;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    bool keep_;
};

std::string random_token() {
    std::random_device rd;
    return fmt::format("@@GMSLAB-{:08x}{:08x}", rd(), rd());
}

// ---- Modules ----------------------------------------------------------------------

// Module contents, decompressed on the host (busybox insmod does not read
// compressed modules).
std::string module_bytes(const ModuleFile& m, const std::string& scratch) {
    auto ends = [&](const char* s) {
        size_t n = std::strlen(s);
        return m.path.size() > n && m.path.compare(m.path.size() - n, n, s) == 0;
    };
    std::vector<std::string> argv;
    std::string pkg;
    if (ends(".xz"))
        argv = {"xz", "-dc", m.path}, pkg = "xz-utils";
    else if (ends(".zst"))
        argv = {"zstd", "-dcq", m.path}, pkg = "zstd";
    else if (ends(".gz"))
        argv = {"gzip", "-dc", m.path}, pkg = "gzip";
    else
        return slurp(m.path);
    if (!find_program(argv[0]))
        throw EnvError(fmt::format("'{}' is needed to decompress {} (apt-get install {})", argv[0],
                                   m.path, pkg));
    std::string out = scratch + "/" + m.name + ".ko";
    CaptureResult r = run_capture(argv, 120, out);
    if (r.status != 0)
        throw EnvError(
            fmt::format("{} {} failed (status {}): {}", argv[0], m.path, r.status, r.output));
    std::string data = slurp(out);
    fs::remove(out);
    return data;
}

struct ModuleSet {
    std::string dir; // where they came from ("" if none)
    std::map<std::string, ModuleFile> index;
    std::set<std::string> builtin;
    bool has_builtin_list = false;
    std::map<std::string, std::string> contents; // name -> decompressed .ko
    std::vector<std::string> missing;            // wanted, neither a file nor known built in
    std::string release;                         // of the kernel they must match
    std::string scratch;

    // Appends name and its dependencies (first) to order. Modules neither in
    // the index nor listed as built in are recorded as missing (the guest
    // then reports what it lacks).
    void resolve(const std::string& raw, std::vector<std::string>& order,
                 std::set<std::string>& seen) {
        std::string name = normalize_module_name(raw);
        if (!seen.insert(name).second)
            return;
        auto it = index.find(name);
        if (it == index.end()) {
            if (!builtin.count(name) && has_builtin_list)
                missing.push_back(name);
            else if (!has_builtin_list)
                missing.push_back(name); // unknown: maybe built in, the guest will tell
            return;
        }
        if (!contents.count(name)) {
            std::string data = module_bytes(it->second, scratch);
            auto info = parse_modinfo(data, it->second.path);
            auto vm = info.find("vermagic");
            if (vm != info.end() && !release.empty()) {
                std::string mod_release = vm->second.substr(0, vm->second.find(' '));
                if (mod_release != release)
                    throw EnvError(fmt::format(
                        "{} is built for kernel {} but the kernel is {}: pass the modules of the "
                        "same kernel (--modules DIR or --kernel-deb linux-modules-{}_*.deb)",
                        it->second.path, mod_release, release, release));
            }
            contents[name] = std::move(data);
            auto deps = info.find("depends");
            if (deps != info.end() && !deps->second.empty()) {
                std::stringstream ss(deps->second);
                std::string dep;
                while (std::getline(ss, dep, ','))
                    if (!dep.empty())
                        resolve(dep, order, seen);
            }
        }
        order.push_back(name);
    }
};

// ---- Kernel packages ------------------------------------------------------------

struct DebContents {
    std::string kernel;      // vmlinuz found in the packages ("" if none)
    std::string modules_dir; // lib/modules/<release> ("" if none)
};

DebContents unpack_debs(const std::vector<std::string>& debs, const std::string& into,
                        const std::string& want_release) {
    if (!find_program("dpkg-deb"))
        throw EnvError("--kernel-deb needs dpkg-deb (apt-get install dpkg)");
    for (const auto& deb : debs) {
        std::error_code ec;
        if (!fs::is_regular_file(deb, ec))
            throw UsageError(fmt::format("--kernel-deb {}: no such file", deb));
        CaptureResult r = run_capture({"dpkg-deb", "-x", deb, into}, 600);
        if (r.status != 0)
            throw EnvError(
                fmt::format("dpkg-deb -x {} failed (status {}): {}", deb, r.status, r.output));
    }
    DebContents out;
    std::vector<fs::path> releases;
    for (const char* base : {"usr/lib/modules", "lib/modules"}) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fs::path(into) / base, ec))
            if (e.is_directory())
                releases.push_back(e.path());
    }
    for (const auto& r : releases) {
        if (!want_release.empty() && r.filename() != want_release)
            continue;
        for (const char* name : {"vmlinuz.unsigned", "vmlinuz"})
            if (out.kernel.empty() && fs::is_regular_file(r / name))
                out.kernel = (r / name).string();
        std::error_code ec;
        if (out.modules_dir.empty() && fs::is_directory(r / "kernel", ec))
            out.modules_dir = r.string();
    }
    if (out.kernel.empty()) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fs::path(into) / "boot", ec))
            if (e.path().filename().string().rfind("vmlinuz-", 0) == 0)
                out.kernel = e.path().string();
    }
    return out;
}

// ---- Console ------------------------------------------------------------------------

// Follows QEMU's serial output (stdout) and diagnostics (stderr): keeps the
// whole console in a file, the last lines in memory, and the markers the
// guest's /init prints.
struct Console {
    std::string token;
    std::ofstream file;
    std::deque<std::string> tail;
    std::string partial_out, partial_err;
    std::string qemu_errors; // QEMU's own stderr (bounded)

    bool saw_init = false, saw_ready = false, saw_done = false;
    std::optional<int> done_status;
    std::string fail_stage, fail_message;
    std::string guest_release;
    std::string panic_line;                    // "Kernel panic - not syncing: ..."
    std::vector<report::KmsgFinding> findings; // bounded
    uint64_t first_oops_ns = 0; // an Oops/BUG: the guest may hang instead of panicking
    std::string halt_line;      // the boot stub's "-- System halted"
    bool kvm_error = false;     // QEMU says KVM cannot run this guest
    uint64_t serial_lines = 0;
    uint64_t last_serial_ns = 0; // any serial line, the init's heartbeat included
    // The guest's gmemstress saw a call stuck in the kernel ("stall:" marker):
    // when, the first one, and within how many seconds it said its run ends.
    uint64_t stall_ns = 0;
    std::string stall_line;
    double stall_ends_within_s = 0;
    // It then gave up on the stuck threads ("abandoned:" marker): its report
    // is written and this is its exit status.
    std::optional<int> abandoned_status;
    uint64_t abandoned_ns = 0;
    uint64_t file_bytes = 0;
    uint64_t first_output_ns = 0, init_ns = 0, ready_ns = 0, done_ns = 0;
    std::string guest_uptime_init, guest_uptime_ready; // the guest's own clock

    void feed_stdout(const char* p, size_t n) {
        write(p, n);
        split(partial_out, p, n, false);
    }
    // Bounded: a kernel printing in a loop for the whole --timeout must not
    // fill the disk. Markers are still followed past the cap.
    void write(const char* p, size_t n) {
        constexpr uint64_t kMaxFile = 64ull << 20;
        if (file_bytes >= kMaxFile)
            return;
        file.write(p, std::streamsize(n));
        file_bytes += n;
        if (file_bytes >= kMaxFile)
            file << "\n[lab] console file truncated at 64 MiB\n";
    }
    void feed_stderr(const char* p, size_t n) { split(partial_err, p, n, true); }
    void flush() {
        if (!partial_out.empty())
            line(partial_out, false);
        if (!partial_err.empty())
            line(partial_err, true);
        partial_out.clear();
        partial_err.clear();
        file.flush();
    }

    std::string tail_text() const {
        std::string s;
        for (const auto& l : tail)
            s += "  | " + l + "\n";
        return s.empty() ? "  | (nothing: the console stayed empty)\n" : s;
    }

  private:
    void split(std::string& partial, const char* p, size_t n, bool err) {
        partial.append(p, n);
        size_t pos;
        while ((pos = partial.find('\n')) != std::string::npos) {
            line(partial.substr(0, pos), err);
            partial.erase(0, pos + 1);
        }
        // A line without end (a hung console) still has to be seen, bounded.
        if (partial.size() > 4096) {
            line(partial, err);
            partial.clear();
        }
    }

    void line(std::string l, bool err) {
        while (!l.empty() && (l.back() == '\r' || l.back() == '\n'))
            l.pop_back();
        l.erase(std::remove(l.begin(), l.end(), '\r'), l.end());
        if (err) {
            std::string q = "[qemu] " + l + "\n";
            write(q.data(), q.size());
            if (l.find("KVM internal error") != std::string::npos ||
                l.find("emulation failure") != std::string::npos ||
                l.find("kvm run failed") != std::string::npos ||
                l.find("failed to set MSR") != std::string::npos ||
                l.find("kvm_buf_set_msrs") != std::string::npos)
                kvm_error = true;
            // Noise of every TCG boot, not worth a line of the tail.
            if (l.find("TCG doesn't support requested feature") != std::string::npos)
                return;
            if (qemu_errors.size() < 16384)
                qemu_errors += l + "\n";
            l = "[qemu] " + l;
        } else {
            if (!serial_lines++)
                first_output_ns = now_ns();
            last_serial_ns = now_ns();
            // The heartbeat only says the guest answers; it would crowd the tail.
            if (marker(l))
                return;
        }
        tail.push_back(std::move(l));
        if (tail.size() > kTailLines)
            tail.pop_front();
    }

    // Follows markers and findings; true for a heartbeat line.
    bool marker(const std::string& l) {
        if (l.find("Kernel panic - not syncing") != std::string::npos && panic_line.empty())
            panic_line = l.substr(l.find("Kernel panic"));
        if (auto f = console_finding(l); f && l.find(token) == std::string::npos) {
            if (!first_oops_ns && (f->kind == "oops" || f->kind == "BUG"))
                first_oops_ns = now_ns();
            if (findings.size() < 64)
                findings.push_back(std::move(*f));
        }
        if (l.find("-- System halted") != std::string::npos && halt_line.empty())
            halt_line = l;
        size_t at = l.find(token + ":");
        if (at == std::string::npos)
            return false;
        std::string rest = l.substr(at + token.size() + 1);
        auto field = [&](size_t i) {
            size_t start = 0;
            for (size_t k = 0; k < i && start != std::string::npos; ++k) {
                start = rest.find(':', start);
                if (start != std::string::npos)
                    ++start;
            }
            if (start == std::string::npos)
                return std::string();
            return rest.substr(start, rest.find(':', start) - start);
        };
        std::string kind = field(0);
        if (kind == "alive")
            return true;
        if (kind == "stall" && !stall_ns) {
            // "stall:<s until the run ends>:<what>"
            stall_ns = now_ns();
            stall_ends_within_s = std::atof(field(1).c_str());
            size_t m = rest.find(':', rest.find(':') + 1);
            stall_line = m == std::string::npos ? rest : rest.substr(m + 1);
        } else if (kind == "abandoned" && !abandoned_status) {
            abandoned_ns = now_ns();
            abandoned_status = std::atoi(field(1).c_str());
        } else if (kind == "init") {
            saw_init = true;
            init_ns = now_ns();
            guest_release = field(1);
            guest_uptime_init = field(2);
        } else if (kind == "ready") {
            saw_ready = true;
            ready_ns = now_ns();
            guest_uptime_ready = field(1);
        } else if (kind == "fail" && fail_stage.empty()) {
            fail_stage = field(1);
            size_t m = rest.find(':', rest.find(':') + 1);
            fail_message = m == std::string::npos ? "" : rest.substr(m + 1);
        } else if (kind == "done") {
            saw_done = true;
            done_ns = now_ns();
            char* end = nullptr;
            std::string st = field(1);
            long v = std::strtol(st.c_str(), &end, 10);
            if (end != st.c_str())
                done_status = int(v);
        }
        return false;
    }
};

// ---- One boot -----------------------------------------------------------------------

struct BootPlan {
    std::string qemu;
    std::string kernel;
    std::string initrd;
    std::string out_dir;
    std::string append;
    unsigned cpus;
    uint64_t memory;
    std::vector<std::string> writable; // more read-write 9p shares (tags gmsrw0..)
};

enum class BootEnd { done, failed, kvm_unusable };

struct Boot {
    BootEnd end = BootEnd::failed;
    Failure failure = Failure::none;
    std::string message;
    std::optional<int> qemu_status;
    uint64_t start_ns = 0;
};

std::vector<std::string> qemu_argv(const BootPlan& p, const std::string& accel) {
    std::vector<std::string> a = {p.qemu, "-nodefaults", "-no-user-config", "-display",
                                  "none", "-no-reboot",  "-machine",        "q35"};
    if (accel == "kvm") {
        a.insert(a.end(), {"-accel", "kvm", "-cpu", "host"});
    } else {
        // One host thread for all vCPUs: with thread=multi, QEMU 7.2 let a vCPU
        // run a stale int3 while the kernel live-patched a jump label (text_poke_bp),
        // an "Oops: int3" in __schedule in 3 of 6 smoke runs with probes attaching;
        // none in 16 runs single-threaded, which was also no slower on 2 host cores.
        a.insert(a.end(), {"-accel", "tcg,thread=single", "-cpu", kTcgCpu});
    }
    a.insert(a.end(),
             {"-smp", std::to_string(p.cpus), "-m", fmt::format("{}M", p.memory >> 20), "-kernel",
              p.kernel, "-initrd", p.initrd, "-append", p.append, "-serial", "stdio", "-virtfs",
              "local,path=/,mount_tag=gmshost,security_model=none,readonly=on,multidevs=remap",
              "-virtfs",
              fmt::format("local,path={},mount_tag=gmsout,security_model=none", p.out_dir)});
    for (size_t i = 0; i < p.writable.size(); ++i)
        a.insert(a.end(), {"-virtfs", fmt::format("local,path={},mount_tag=gmsrw{},security_model="
                                                  "none,multidevs=remap",
                                                  p.writable[i], i)});
    return a;
}

// The guest command's progress lines (kProgressLinePrefix), relayed to
// stderr as they come: the guest writes its stderr to a file in the results
// share, which the host reads at the end. Only whole lines are relayed;
// collect() then leaves them out of the guest's stderr it prints.
struct ProgressRelay {
    std::string path;
    bool quiet = false;
    off_t offset = 0;
    std::string partial;

    void poll() {
        if (quiet || path.empty())
            return;
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return; // not created yet
        char buf[8192];
        ssize_t n;
        while ((n = ::pread(fd, buf, sizeof buf, offset)) > 0) {
            offset += n;
            partial.append(buf, size_t(n));
        }
        ::close(fd);
        size_t pos;
        while ((pos = partial.find('\n')) != std::string::npos) {
            std::string line = partial.substr(0, pos);
            partial.erase(0, pos + 1);
            if (line.starts_with(kProgressLinePrefix))
                fmt::print(stderr, "lab: guest: {}\n", line.substr(kProgressLinePrefix.size()));
        }
    }
};

// The guest's stderr without the progress lines the relay printed.
std::string without_progress_lines(const std::string& text) {
    std::string out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (!line.starts_with(kProgressLinePrefix))
            out += line + "\n";
    if (!text.empty() && text.back() != '\n' && !out.empty())
        out.pop_back();
    return out;
}

Boot boot_once(const BootPlan& plan, const std::string& accel, bool kvm_probe, Console& con,
               uint64_t deadline_ns, const Options& opts, ProgressRelay& relay) {
    Boot b;
    RunControl& control = RunControl::global();
    Child::Io io;
    io.pipe_stdout = true;
    io.pipe_stderr = true;
    b.start_ns = now_ns();
    Child qemu = Child::spawn(qemu_argv(plan, accel), io);

    uint64_t wind_down_ns = 0; // when a finished/failed guest must be gone by
    char buf[16384];
    while (true) {
        if (auto st = qemu.poll(); st && qemu.stdout_fd() < 0 && qemu.stderr_fd() < 0) {
            b.qemu_status = st;
            break;
        }
        if (control.interrupted()) {
            qemu.terminate();
            con.flush();
            b.failure = Failure::interrupted;
            b.message = fmt::format("stopped by {}; QEMU killed", control.stop_reason());
            return b;
        }
        uint64_t now = now_ns();
        if (now >= deadline_ns) {
            qemu.terminate();
            con.flush();
            b.failure = Failure::timeout;
            b.message =
                fmt::format("--timeout {:.0f}s reached {}; QEMU killed", opts.timeout_s,
                            !con.saw_init    ? "before the guest's init started (boot hangs?)"
                            : !con.saw_ready ? "while the guest was setting up"
                                             : fmt::format("while {} ran in the guest (hang?)",
                                                           describe_guest_command(opts)));
            return b;
        }
        if (kvm_probe && !con.saw_init) {
            std::string why;
            if (con.kvm_error)
                why = "QEMU reports that KVM cannot run this guest";
            else if (seconds_since(b.start_ns) > kKvmProbeSeconds)
                why = fmt::format("no sign of the guest's init after {:.0f} s", kKvmProbeSeconds);
            if (!why.empty()) {
                qemu.terminate(0.5);
                con.flush();
                b.end = BootEnd::kvm_unusable;
                b.message = why;
                return b;
            }
        }
        if (!wind_down_ns && (con.saw_done || !con.fail_stage.empty()))
            wind_down_ns = now + 15'000'000'000ull; // poweroff takes well under a second
        // The guest's gmemstress gave up on threads stuck in the kernel: its
        // report is written; the guest may not get to power off (a task in D
        // state can block the rest of the init), so do not wait long for it.
        if (!wind_down_ns && con.abandoned_status)
            wind_down_ns = now + 30'000'000'000ull;
        bool panicking = !con.panic_line.empty() || !con.halt_line.empty() || con.first_oops_ns;
        if (!wind_down_ns && !panicking && con.saw_init && !con.saw_done) {
            std::string why;
            double silent = double(now - std::max(con.last_serial_ns, con.init_ns)) / 1e9;
            if (silent > opts.unresponsive_s)
                why = fmt::format("no console output, not even the init's heartbeat (every {} s), "
                                  "for {:.0f} s (--unresponsive {:.0f}s), and no panic",
                                  GuestPlan{}.heartbeat_s, silent, opts.unresponsive_s);
            // gmemstress said when it would end at the latest; give it time to
            // write, sync and power off, never the whole --timeout.
            else if (con.stall_ns &&
                     now > con.stall_ns + uint64_t((con.stall_ends_within_s + 60) * 1e9))
                why = fmt::format("the guest's gmemstress reported a stall ({}) and was to end "
                                  "within {:.0f} s; nothing finished {:.0f} s later",
                                  con.stall_line, con.stall_ends_within_s,
                                  double(now - con.stall_ns) / 1e9);
            if (!why.empty()) {
                qemu.terminate();
                con.flush();
                b.failure = Failure::unresponsive;
                b.message =
                    fmt::format("no answer while {} ran: {}", describe_guest_command(opts), why);
                return b;
            }
        }
        if (!wind_down_ns && (!con.panic_line.empty() || !con.halt_line.empty()))
            wind_down_ns = now + 3'000'000'000ull; // panic=-1 reboots, -no-reboot exits
        // oops=panic should end the guest at once; if an Oops did not (the
        // user's --append said otherwise), a guest whose command died holding
        // a lock would otherwise sit until --timeout.
        if (!wind_down_ns && con.first_oops_ns)
            wind_down_ns = con.first_oops_ns + 30'000'000'000ull;
        if (wind_down_ns && now >= wind_down_ns) {
            qemu.terminate();
            b.qemu_status = qemu.poll();
            break;
        }

        pollfd fds[2];
        int nfds = 0;
        for (int fd : {qemu.stdout_fd(), qemu.stderr_fd()})
            if (fd >= 0)
                fds[nfds++] = {fd, POLLIN, 0};
        if (nfds == 0) {
            // Both pipes closed; wait for the exit itself.
            ::poll(nullptr, 0, 20);
            continue;
        }
        relay.poll();
        int r = ::poll(fds, nfds, 100);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            throw SysError("poll", "qemu console", errno);
        }
        for (int i = 0; i < nfds; ++i) {
            if (!fds[i].revents)
                continue;
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            bool is_out = fds[i].fd == qemu.stdout_fd();
            if (n > 0) {
                is_out ? con.feed_stdout(buf, size_t(n)) : con.feed_stderr(buf, size_t(n));
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                is_out ? qemu.close_stdout() : qemu.close_stderr();
            }
        }
    }
    con.flush();

    if (con.saw_done) {
        b.end = BootEnd::done;
        return b;
    }
    // Its report is in the results share even if the guest never powered off.
    if (con.abandoned_status) {
        con.saw_done = true;
        con.done_status = con.abandoned_status;
        con.done_ns = con.abandoned_ns;
        b.end = BootEnd::done;
        return b;
    }
    std::string qemu_said;
    if (!con.qemu_errors.empty()) {
        std::string last = con.qemu_errors;
        while (!last.empty() && last.back() == '\n')
            last.pop_back();
        qemu_said = "; QEMU: " +
                    last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
    }
    if (kvm_probe && !con.saw_init) {
        b.end = BootEnd::kvm_unusable;
        b.message = fmt::format("QEMU exited with status {} before the guest's init{}",
                                b.qemu_status.value_or(-1), qemu_said);
        return b;
    }
    if (!con.fail_stage.empty()) {
        b.failure = Failure::setup;
        b.message = fmt::format("guest setup failed ({}): {}", con.fail_stage, con.fail_message);
    } else if (!con.panic_line.empty() || con.first_oops_ns) {
        b.failure = con.saw_init ? Failure::panic : Failure::boot;
        b.message = fmt::format(
            "{}: {}",
            con.saw_ready  ? "the guest kernel panicked during the run"
            : con.saw_init ? "the guest kernel panicked during setup"
                           : "the kernel panicked while booting",
            con.panic_line.empty()
                ? "(no panic line; first finding: " +
                      (con.findings.empty() ? std::string("?") : con.findings.front().line) + ")"
                : con.panic_line);
    } else if (!con.halt_line.empty()) {
        b.failure = Failure::boot;
        b.message =
            "the kernel's boot stub halted (corrupt or truncated bzImage?): " + con.halt_line;
    } else if (!con.saw_init) {
        b.failure = Failure::boot;
        std::string how =
            b.qemu_status == 0
                ? "the guest reset or powered off (with -no-reboot a triple fault ends QEMU with "
                  "status 0)"
                : fmt::format("QEMU exit status {}", b.qemu_status.value_or(-1));
        b.message =
            fmt::format("the kernel did not boot to the lab's init: {}{}{}", how,
                        con.serial_lines ? "" : ", nothing on the serial console", qemu_said);
    } else {
        b.failure = Failure::panic;
        b.message =
            fmt::format("the guest stopped (QEMU exit status {}) before {} "
                        "finished: crash, reset or power-off{}",
                        b.qemu_status.value_or(-1), describe_guest_command(opts), qemu_said);
    }
    return b;
}

std::string release_or(const std::string& release, const std::string& fallback) {
    return release.empty() ? fallback : release;
}

bool kvm_usable_on_host() {
    int fd = ::open(kvm::device_path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    ::close(fd);
    return true;
}

std::string self_exe() {
    std::error_code ec;
    auto p = fs::read_symlink("/proc/self/exe", ec);
    if (ec)
        throw SysError("readlink", "/proc/self/exe", ec.value());
    return p.string();
}

bool under(const std::string& path, const std::string& dir) {
    return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
           path[dir.size()] == '/';
}

void copy_out(const std::string& from, const std::string& to, const std::string& what) {
    if (to.empty())
        return;
    auto data = slurp_if_exists(from);
    if (!data)
        return;
    try {
        report::write_atomically(to, *data);
    } catch (const std::exception& e) {
        fmt::print(stderr, "lab: cannot write the {} to {}: {}\n", what, to, e.what());
    }
}

} // namespace

// ---- The whole run --------------------------------------------------------------------

namespace {

// One `gmemstress lab` invocation, phase by phase. Owns the work directory
// (removed on every path); QEMU lives only inside boot_once().
class LabRun {
  public:
    explicit LabRun(const Options& o) : opts_(o), t0_(now_ns()) {}

    Result run() {
        check_options();
        find_host_tools();
        work_.emplace(opts_.keep_workdir);
        out_dir_ = work_->path() + "/out";
        relay_ = {.path = out_dir_ + "/stderr", .quiet = opts_.quiet};
        fs::create_directories(out_dir_);
        fs::create_directories(work_->path() + "/scratch");
        locate_kernel();
        // --timeout bounds boot + run + shutdown: a test kernel's first build
        // (tens of minutes, bounded on its own) does not count against it.
        t0_ = now_ns();
        select_modules();
        plan_guest();
        write_initramfs();
        describe();
        Boot boot = boot_with_fallback();
        return collect(boot);
    }

  private:
    void check_options();
    void find_host_tools();
    // A host file the guest command reads, as the guest sees it.
    std::string guest_input(const std::string& host_file);
    void locate_kernel();
    void select_modules();
    void plan_guest();
    void write_initramfs();
    void describe();
    Boot boot_with_fallback();
    Result collect(const Boot& boot);
    nlohmann::json crash_report(const Result& res) const;

    const Options& opts_;
    uint64_t t0_;
    std::optional<WorkDir> work_;
    std::string out_dir_;
    std::string qemu_, qemu_version_, busybox_;
    std::string kernel_, modules_dir_;
    bool test_kernel_built_in_ = false; // the project's test kernel: no modules needed
    BzImageInfo bz_;
    ModuleSet mods_;
    GuestPlan plan_;
    std::string guest_out_;
    std::string host_profile_;
    std::vector<std::pair<std::string, std::string>> path_renames_; // guest path -> host path
    Console con_;
    ProgressRelay relay_;
    std::string console_file_;
    std::string accel_, accel_note_;
    nlohmann::json lab_ = nlohmann::json::object();
};

void check_test_kernel_options(const Options& o) {
    if (!o.plants.empty() && !o.kernel_tree.empty())
        throw UsageError("--plant: the plants (lab/patches) go into the test kernel built from "
                         "Debian's linux-source, not into a --kernel-tree");
    plant_mask(o.plants); // names checked before anything boots
    bool test_kernel = o.test_kernel || o.sanitizers || !o.kernel_tree.empty();
    if (!test_kernel) {
        if (!o.kconfig_fragments.empty())
            throw UsageError("--kconfig-fragment: only with --test-kernel or --kernel-tree");
        return;
    }
    for (const auto& [given, flag] : {std::pair{!o.kernel.empty(), "--kernel"},
                                      std::pair{!o.kernel_debs.empty(), "--kernel-deb"},
                                      std::pair{!o.modules_dir.empty(), "--modules"}})
        if (given)
            throw UsageError(fmt::format("{} and --test-kernel/--sanitizers/--kernel-tree both "
                                         "choose the kernel: give one",
                                         flag));
    std::error_code ec;
    if (!o.kernel_tree.empty() && !fs::is_directory(o.kernel_tree, ec))
        throw UsageError(fmt::format("--kernel-tree {}: no such directory", o.kernel_tree));
    for (const auto& f : o.kconfig_fragments)
        if (!fs::is_regular_file(f, ec))
            throw UsageError(fmt::format("--kconfig-fragment {}: no such file", f));
}

void LabRun::check_options() {
    const Options& o = opts_;
    if (o.cpus < 1 || o.cpus > 64)
        throw UsageError(fmt::format("--cpus {}: expected 1..64", o.cpus));
    if (o.memory < (512ull << 20))
        throw UsageError(
            fmt::format("--memory {}: the lab needs at least 512MiB", format_size(o.memory)));
    if (!(o.timeout_s > 0))
        throw UsageError("--timeout must be positive");
    if (o.accel != "auto" && o.accel != "kvm" && o.accel != "tcg")
        throw UsageError(fmt::format("--accel {}: expected auto, kvm or tcg", o.accel));
    if (o.guest_command == "lab")
        throw UsageError("--guest-command lab: the lab does not nest");
    check_test_kernel_options(o);
    for (const auto& [path, flag] :
         {std::pair{o.junit_path, "--junit"}, std::pair{o.record_path, "--record"},
          std::pair{o.ktap_path, "--ktap"}, std::pair{o.kcidb_path, "--kcidb"},
          std::pair{o.html_path, "--html"},
          std::pair{o.lava ? std::string("on") : std::string(), "--lava"}})
        if (!path.empty() && o.guest_command != "run")
            throw UsageError(
                fmt::format("{}: only for gmemstress run (not {})", flag, o.guest_command));
    if (takes_profile_and_report(o.guest_command)) {
        for (const auto& a : o.guest_args)
            for (const char* own :
                 {"-r", "--report", "--junit", "--record", "-p", "--profile", "--ktap",
                  "--exit-codes", "--kcidb", "--kcidb-origin", "--kcidb-build-id", "--lava",
                  "--lava-json", "--waivers", "--html"})
                if (a == own || a.rfind(std::string(own) + "=", 0) == 0)
                    throw UsageError(fmt::format(
                        "'{}' after '--': give it to gmemstress lab itself (its paths are host "
                        "paths)",
                        a));
    }
    if (!o.exec_command.empty() && !o.guest_args.empty())
        throw UsageError("--exec takes its command after '--'; there are no other guest arguments");
    if (!o.exec_command.empty())
        for (const auto& [path, flag] :
             {std::pair{o.report_path, "--report"}, std::pair{o.profile, "--profile"},
              std::pair{o.ktap_path, "--ktap"}, std::pair{o.kcidb_path, "--kcidb"},
              std::pair{o.html_path, "--html"},
              std::pair{o.lava ? std::string("on") : std::string(), "--lava"}})
            if (!path.empty())
                throw UsageError(fmt::format(
                    "{} with --exec: the command writes its own files (give it --writable DIR)",
                    flag));
    for (const auto& kv : o.env)
        if (kv.find('=') == std::string::npos || kv.front() == '=')
            throw UsageError(fmt::format("--env {}: expected KEY=VALUE", kv));
    for (const auto& d : o.writable) {
        std::error_code ec;
        if (!fs::is_directory(d, ec))
            throw UsageError(fmt::format("--writable {}: no such directory", d));
        if (fs::absolute(d).lexically_normal() == "/")
            throw UsageError("--writable /: the host root stays read-only in the guest");
    }
    for (const auto& [path, what] :
         {std::pair{o.report_path, "--report"}, std::pair{o.junit_path, "--junit"},
          std::pair{o.record_path, "--record"},
          std::pair{o.ktap_path == "-" ? std::string() : o.ktap_path, "--ktap"},
          std::pair{o.kcidb_path, "--kcidb"}, std::pair{o.html_path, "--html"},
          std::pair{o.console_path, "--keep-console"}, std::pair{o.dmesg_path, "--keep-dmesg"}}) {
        if (path.empty())
            continue;
        fs::path parent = fs::absolute(path).parent_path();
        std::error_code ec;
        if (!fs::is_directory(parent, ec))
            throw UsageError(
                fmt::format("{} {}: directory {} does not exist", what, path, parent.string()));
    }
}

void LabRun::find_host_tools() {
    auto qemu = find_program(opts_.qemu);
    if (!qemu)
        throw EnvError(fmt::format("QEMU ({}) not found: apt-get install qemu-system-x86 (or run "
                                   "scripts/install-deps.sh)",
                                   opts_.qemu));
    qemu_ = *qemu;
    if (auto v = run_capture({qemu_, "-version"}, 10); v.status == 0)
        qemu_version_ = v.output.substr(0, v.output.find('\n'));
    busybox_ = opts_.busybox;
    if (busybox_.empty()) {
        for (const char* c : {"/bin/busybox", "/usr/bin/busybox"})
            if (::access(c, X_OK) == 0) {
                busybox_ = c;
                break;
            }
        if (busybox_.empty())
            throw EnvError("busybox not found: apt-get install busybox-static");
    }
    if (!is_static_elf(busybox_))
        throw EnvError(fmt::format("{} is not statically linked; the guest's initramfs needs a "
                                   "static busybox: apt-get install busybox-static",
                                   busybox_));
    uint64_t avail = mem_available_bytes();
    if (avail && avail < opts_.memory + (256ull << 20))
        throw EnvError(fmt::format("--memory {} does not fit: MemAvailable is {}",
                                   format_size(opts_.memory), format_size(avail)));
}

void LabRun::locate_kernel() {
    kernel_ = opts_.kernel;
    modules_dir_ = opts_.modules_dir;
    // --plant without a kernel of the user's: the test kernel carries them.
    bool plants_need_test_kernel =
        !opts_.plants.empty() && opts_.kernel.empty() && opts_.kernel_debs.empty();
    if (opts_.test_kernel || opts_.sanitizers || !opts_.kernel_tree.empty() ||
        plants_need_test_kernel) {
        progress(opts_, "building the test kernel (once per source and config; cached in " +
                            default_test_kernel_dir() + ")");
        TestKernel k = build_test_kernel({.tree = opts_.kernel_tree,
                                          .fragments = opts_.kconfig_fragments,
                                          .sanitizers = opts_.sanitizers,
                                          .offline = opts_.offline,
                                          .quiet = opts_.quiet});
        kernel_ = k.kernel;
        test_kernel_built_in_ = true;
        lab_["test_kernel"] = {{"release", k.release}, {"source", k.source},
                               {"config", k.config},   {"key", k.key},
                               {"plants", k.plants},   {"sanitizers", opts_.sanitizers}};
    } else if (kernel_.empty() && opts_.kernel_debs.empty()) {
        progress(opts_, "no --kernel: using Debian's newest kernel (downloaded once, cached in " +
                            (opts_.kernel_cache.empty() ? default_kernel_cache_dir()
                                                        : opts_.kernel_cache) +
                            ")");
        CachedKernel k = fetch_newest_kernel(
            {.cache_dir = opts_.kernel_cache, .offline = opts_.offline, .quiet = opts_.quiet});
        kernel_ = k.kernel;
        if (modules_dir_.empty())
            modules_dir_ = k.modules;
        lab_["kernel_package_version"] = k.version;
    }
    if (!opts_.kernel_debs.empty()) {
        std::string want;
        std::error_code ec;
        if (!kernel_.empty() && fs::is_regular_file(kernel_, ec))
            want = read_bzimage(kernel_).release;
        progress(opts_, "unpacking the kernel packages");
        DebContents d = unpack_debs(opts_.kernel_debs, work_->path() + "/debs", want);
        if (kernel_.empty())
            kernel_ = d.kernel;
        if (kernel_.empty())
            throw UsageError("--kernel-deb: no kernel image (vmlinuz) in the packages; add the "
                             "linux-binary/linux-image package or pass --kernel");
        if (modules_dir_.empty())
            modules_dir_ = d.modules_dir;
        if (modules_dir_.empty())
            throw UsageError("--kernel-deb: no lib/modules/<release> for this kernel in the "
                             "packages; add the linux-modules package");
    }
    std::error_code ec;
    if (!fs::is_regular_file(kernel_, ec))
        throw UsageError(fmt::format("--kernel {}: no such file", kernel_));
    kernel_ = fs::absolute(kernel_).lexically_normal().string();
    bz_ = read_bzimage(kernel_);
    if (!modules_dir_.empty()) {
        if (!fs::is_directory(modules_dir_, ec))
            throw UsageError(fmt::format("--modules {}: no such directory", modules_dir_));
        return;
    }
    // The layouts of scripts/fetch-lab-kernel.sh and of the packages (vmlinuz
    // next to kernel/), then the host's own tree.
    fs::path kdir = fs::path(kernel_).parent_path();
    for (const fs::path& c : {kdir / "modules", kdir, fs::path("/lib/modules") / bz_.release}) {
        if (!bz_.release.empty() && fs::is_directory(c / "kernel", ec)) {
            modules_dir_ = c.string();
            return;
        }
    }
    if (test_kernel_built_in_)
        return; // everything the lab needs is built in (lab/kconfig/lab-boot.config)
    progress(opts_, fmt::format("warning: no modules found for {} (looked next to the kernel and "
                                "in /lib/modules/{}); KVM and 9p must be built in, else pass "
                                "--modules or --kernel-deb",
                                release_or(bz_.release, kernel_), bz_.release));
}

void LabRun::select_modules() {
    mods_.release = bz_.release;
    mods_.scratch = work_->path() + "/scratch";
    if (!modules_dir_.empty()) {
        mods_.dir = fs::absolute(modules_dir_).lexically_normal().string();
        mods_.index = index_modules(mods_.dir);
        for (const auto& n : builtin_modules(mods_.dir))
            mods_.builtin.insert(n);
        mods_.has_builtin_list = fs::exists(mods_.dir + "/modules.builtin");
        if (mods_.index.empty())
            throw UsageError(
                fmt::format("--modules {}: no kernel modules (*.ko*) found there", mods_.dir));
    }
    std::set<std::string> seen;
    // virtio transport, 9p (host root + results), then KVM per CPU vendor.
    for (const char* m : {"virtio_pci", "9pnet_virtio", "9p"})
        mods_.resolve(m, plan_.base_modules, seen);
    std::set<std::string> seen_amd = seen, seen_intel = seen;
    mods_.resolve("kvm_amd", plan_.amd_modules, seen_amd);
    mods_.resolve("kvm_intel", plan_.intel_modules, seen_intel);
}

void LabRun::plan_guest() {
    plan_.token = random_token();
    std::string exe = self_exe();
    plan_.scratch = under(exe, "/tmp") ? "/run" : "/tmp";
    std::error_code ec;
    plan_.host_cwd = fs::current_path(ec).string();
    if (ec || plan_.host_cwd.empty())
        plan_.host_cwd = "/";
    guest_out_ = guest_out_dir(plan_);
    for (const auto& d : opts_.writable)
        plan_.writable.push_back(fs::absolute(d).lexically_normal().string());
    plan_.env = opts_.env;
    plan_.before = opts_.before;
    plan_.plant_mask = plant_mask(opts_.plants);
    if (!opts_.exec_command.empty()) {
        plan_.command = opts_.exec_command;
        return;
    }
    plan_.command = {exe, opts_.guest_command};
    host_profile_ = opts_.profile;
    if (takes_profile_and_report(opts_.guest_command)) {
        std::string profile = opts_.profile;
        if (fs::is_regular_file(profile, ec)) {
            host_profile_ = fs::absolute(profile).lexically_normal().string();
            profile = guest_input(profile);
        }
        if (!profile.empty())
            plan_.command.insert(plan_.command.end(), {"--profile", profile});
        plan_.command.insert(plan_.command.end(), {"--report", guest_out_ + "/report.json"});
        if (!opts_.junit_path.empty())
            plan_.command.insert(plan_.command.end(), {"--junit", guest_out_ + "/junit.xml"});
        if (!opts_.record_path.empty())
            plan_.command.insert(plan_.command.end(), {"--record", guest_out_ + "/record.jsonl"});
        if (!opts_.ktap_path.empty())
            plan_.command.insert(plan_.command.end(), {"--ktap", guest_out_ + "/ktap.txt"});
        if (!opts_.kcidb_path.empty()) {
            plan_.command.insert(plan_.command.end(), {"--kcidb", guest_out_ + "/kcidb.json",
                                                       "--kcidb-origin", opts_.kcidb_origin});
            if (!opts_.kcidb_build_id.empty())
                plan_.command.insert(plan_.command.end(),
                                     {"--kcidb-build-id", opts_.kcidb_build_id});
        }
        // The host makes the LAVA calls: its PATH has LAVA's helpers.
        if (opts_.lava)
            plan_.command.insert(plan_.command.end(), {"--lava-json", guest_out_ + "/lava.json"});
        for (const auto& w : opts_.waivers)
            plan_.command.insert(plan_.command.end(), {"--waivers", guest_input(w)});
    }
    plan_.command.insert(plan_.command.end(), opts_.guest_args.begin(), opts_.guest_args.end());
}

std::string LabRun::guest_input(const std::string& host_file) {
    std::string path = fs::absolute(host_file).lexically_normal().string();
    if (!under(path, plan_.scratch))
        return path; // the host root is shared read-only at the same paths
    // The guest's tmpfs hides the host's files there: hand it a copy.
    std::string name = fs::path(path).filename().string();
    if (fs::exists(out_dir_ + "/" + name))
        name = fmt::format("{}-{}", path_renames_.size(), name);
    fs::copy_file(path, out_dir_ + "/" + name, fs::copy_options::overwrite_existing);
    path_renames_.emplace_back(guest_out_ + "/" + name, path);
    return guest_out_ + "/" + name;
}

void LabRun::write_initramfs() {
    CpioWriter cpio;
    for (const char* d : {"bin", "dev", "proc", "sys", "host", "tmp", "lab", "lab/modules"})
        cpio.add_dir(d);
    // init's stdio before devtmpfs is mounted.
    cpio.add_char_device("dev/console", 5, 1);
    cpio.add_char_device("dev/null", 1, 3, 0666);
    cpio.add_file("bin/busybox", slurp(busybox_), 0755);
    cpio.add_file("init", make_init_script(plan_), 0755);
    for (const auto& [name, data] : mods_.contents)
        cpio.add_file("lab/modules/" + name + ".ko", data);
    report::write_atomically(work_->path() + "/initramfs.cpio", cpio.finish());
    mods_.contents.clear();
}

// The "lab" object, as far as it is known before the boot.
void LabRun::describe() {
    lab_["kernel"] = kernel_;
    if (!opts_.plants.empty())
        lab_["plants"] = opts_.plants;
    if (!opts_.kernel_debs.empty()) {
        std::vector<std::string> debs;
        for (const auto& d : opts_.kernel_debs)
            debs.push_back(fs::absolute(d).lexically_normal().string());
        lab_["kernel_debs"] = debs; // "kernel" then names the unpacked (temporary) image
    }
    lab_["kernel_release"] = bz_.release;
    lab_["kernel_version"] = bz_.version;
    lab_["modules"] = mods_.dir.empty() ? nlohmann::json(nullptr) : nlohmann::json(mods_.dir);
    // Wanted but not found as files: built into the kernel, or absent (then
    // the guest's setup says what it lacks).
    lab_["modules_not_found"] = mods_.missing;
    lab_["qemu"] = qemu_;
    lab_["qemu_version"] = qemu_version_;
    lab_["cpus"] = opts_.cpus;
    lab_["memory_bytes"] = opts_.memory;
    // A name, or the host path (the guest may read a copy).
    if (takes_profile_and_report(opts_.guest_command))
        lab_["profile"] =
            host_profile_.empty() ? "(default of " + opts_.guest_command + ")" : host_profile_;
    lab_["guest_command"] =
        opts_.exec_command.empty()
            ? std::vector<std::string>(plan_.command.begin() + 1, plan_.command.end())
            : plan_.command;
}

// KVM when the host's KVM can run the kernel, else TCG with emulated SVM.
Boot LabRun::boot_with_fallback() {
    BootPlan bp;
    bp.qemu = qemu_;
    bp.kernel = kernel_;
    bp.initrd = work_->path() + "/initramfs.cpio";
    bp.out_dir = out_dir_;
    bp.cpus = opts_.cpus;
    bp.memory = opts_.memory;
    bp.writable = plan_.writable;
    // quiet: printk to the serial port is slow under TCG; errors still show.
    // panic=-1 + -no-reboot: a panic ends QEMU at once instead of hanging.
    // oops=panic: an Oops or BUG ends the guest at once, with the splat on the
    // console, instead of leaving a dead task that holds a lock until --timeout.
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer
    // check can fail and panic the boot ("IO-APIC + timer doesn't work"; seen
    // with the test kernel 2026-12-02); the emulated timer works regardless.
    bp.append = "console=ttyS0 earlyprintk=serial,ttyS0,115200 quiet loglevel=4 panic=-1 "
                "oops=panic no_timer_check rdinit=/init";
    if (plan_.plant_mask)
        bp.append += fmt::format(" kvm.gms_plant={}", plan_.plant_mask);
    if (!opts_.append.empty())
        bp.append += " " + opts_.append;

    con_.token = plan_.token;
    console_file_ = work_->path() + "/console.log";
    con_.file.open(console_file_, std::ios::binary | std::ios::trunc);
    uint64_t deadline = t0_ + uint64_t(opts_.timeout_s * 1e9);

    accel_ = opts_.accel == "tcg" ? "tcg" : "kvm";
    if (accel_ == "kvm" && !kvm_usable_on_host()) {
        if (opts_.accel == "kvm")
            throw EnvError("--accel kvm: /dev/kvm cannot be opened read-write on this host");
        accel_ = "tcg";
        accel_note_ = "no usable /dev/kvm on the host";
    }
    while (true) {
        progress(opts_, fmt::format("booting {} under QEMU ({}, {} cpus, {})",
                                    release_or(bz_.release, kernel_), accel_, opts_.cpus,
                                    format_size(opts_.memory)));
        Boot boot = boot_once(bp, accel_, accel_ == "kvm" && opts_.accel == "auto", con_, deadline,
                              opts_, relay_);
        if (boot.end != BootEnd::kvm_unusable) {
            con_.file.close();
            return boot;
        }
        accel_note_ = "KVM on the host cannot run this kernel (" + boot.message + ")";
        progress(opts_, accel_note_ + "; falling back to TCG");
        con_.file << "\n[lab] " << accel_note_ << "; restarting under TCG\n";
        con_ = Console{.token = con_.token, .file = std::move(con_.file)};
        // Inputs (a copied profile) stay; outputs are written only after
        // "ready", which the failed attempt never reached.
        for (const char* f : {"report.json", "junit.xml", "record.jsonl", "ktap.txt", "kcidb.json",
                              "lava.json", "dmesg.txt", "stdout", "stderr", "status"})
            fs::remove(out_dir_ + "/" + f);
        relay_ = {.path = relay_.path, .quiet = relay_.quiet};
        accel_ = "tcg";
    }
}

Result LabRun::collect(const Boot& boot) {
    Result res;
    nlohmann::json& lab = lab_;
    lab["accel"] = accel_;
    lab["accel_note"] = accel_note_;
    lab["cpu_model"] = accel_ == "kvm" ? "host" : kTcgCpu;
    if (!con_.guest_release.empty())
        lab["kernel_release"] = con_.guest_release; // what the guest itself reports
    if (con_.saw_ready)
        lab["boot_s"] = double(con_.ready_ns - boot.start_ns) / 1e9;
    if (con_.saw_done && con_.saw_ready)
        lab["run_s"] = double(con_.done_ns - con_.ready_ns) / 1e9;
    // Where boot time goes: host seconds since QEMU started, and the guest's uptime.
    auto since_start = [&](uint64_t ns) {
        return ns ? nlohmann::json(double(ns - boot.start_ns) / 1e9) : nlohmann::json(nullptr);
    };
    auto number = [](const std::string& v) {
        return v.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::atof(v.c_str()));
    };
    lab["timeline"] = {{"first_console_output_s", since_start(con_.first_output_ns)},
                       {"init_s", since_start(con_.init_ns)},
                       {"ready_s", since_start(con_.ready_ns)},
                       {"done_s", since_start(con_.done_ns)},
                       {"guest_uptime_at_init_s", number(con_.guest_uptime_init)},
                       {"guest_uptime_at_ready_s", number(con_.guest_uptime_ready)}};
    lab["total_s"] = seconds_since(t0_);

    copy_out(console_file_, opts_.console_path, "console");
    copy_out(out_dir_ + "/dmesg.txt", opts_.dmesg_path, "guest kernel log");
    res.guest_stdout = slurp_if_exists(out_dir_ + "/stdout").value_or("");
    res.guest_stderr = slurp_if_exists(out_dir_ + "/stderr").value_or("");
    if (!relay_.quiet) // relayed as they came
        res.guest_stderr = without_progress_lines(res.guest_stderr);
    // The guest names its own paths; say where the files are on the host.
    auto rename = [&](const std::string& guest_path, const std::string& host_path) {
        std::string repl = host_path.empty() ? "(not kept: pass it to gmemstress lab)" : host_path;
        for (std::string* t : {&res.guest_stdout, &res.guest_stderr})
            for (size_t at; (at = t->find(guest_path)) != std::string::npos;)
                t->replace(at, guest_path.size(), repl);
    };
    rename(guest_out_ + "/report.json", opts_.report_path);
    rename(guest_out_ + "/junit.xml", opts_.junit_path);
    rename(guest_out_ + "/record.jsonl", opts_.record_path);
    rename(guest_out_ + "/ktap.txt", opts_.ktap_path == "-" ? "(stdout)" : opts_.ktap_path);
    rename(guest_out_ + "/kcidb.json", opts_.kcidb_path);
    for (const auto& [guest_path, host_path] : path_renames_)
        rename(guest_path, host_path);

    res.kernel_findings = con_.findings;
    res.guest_stall = con_.stall_line;
    res.guest_abandoned = con_.abandoned_status;
    if (!con_.stall_line.empty())
        lab["guest_stall"] = con_.stall_line;
    if (con_.abandoned_status)
        lab["guest_abandoned_status"] = *con_.abandoned_status;
    if (boot.end != BootEnd::done) {
        res.failure = boot.failure;
        res.message = boot.message;
        res.console_tail = con_.tail_text();
        // A panic, or a guest that stopped answering, after the init started:
        // the kernel under test, each told apart in lab.failure.
        res.kernel_crashed =
            (boot.failure == Failure::panic || boot.failure == Failure::unresponsive) &&
            con_.saw_init;
        lab["failure"] = to_string(boot.failure);
        lab["failure_message"] = boot.message;
        lab["console_tail"] = std::vector<std::string>(con_.tail.begin(), con_.tail.end());
        res.lab = lab;
        if (res.kernel_crashed && takes_profile_and_report(opts_.guest_command) &&
            opts_.exec_command.empty()) {
            res.report = crash_report(res);
            if (!opts_.report_path.empty())
                report::write_atomically(opts_.report_path, res.report->dump(2) + "\n");
        }
        return res;
    }

    res.guest_status = con_.done_status;
    if (auto st = slurp_if_exists(out_dir_ + "/status"); st && !res.guest_status)
        res.guest_status = std::atoi(st->c_str());
    lab["guest_exit_status"] =
        res.guest_status ? nlohmann::json(*res.guest_status) : nlohmann::json(nullptr);
    progress(opts_,
             fmt::format("guest finished: {} exited with status {} (boot {:.1f} s, "
                         "run {:.1f} s, total {:.1f} s)",
                         describe_guest_command(opts_), res.guest_status.value_or(-1),
                         lab.value("boot_s", 0.0), lab.value("run_s", 0.0), seconds_since(t0_)));
    res.lab = lab;
    if (!takes_profile_and_report(opts_.guest_command))
        return res;
    if (auto text = slurp_if_exists(out_dir_ + "/report.json")) {
        nlohmann::json rep;
        try {
            rep = nlohmann::json::parse(*text);
        } catch (const nlohmann::json::exception& e) {
            res.failure = Failure::transport;
            res.message = fmt::format("the guest's report is not valid JSON: {}", e.what());
            return res;
        }
        if (!rep.is_object()) {
            res.failure = Failure::transport;
            res.message = "the guest's report is not a JSON object";
            return res;
        }
        rep["lab"] = lab;
        res.report = std::move(rep);
        if (!opts_.report_path.empty())
            report::write_atomically(opts_.report_path, res.report->dump(2) + "\n");
    }
    copy_out(out_dir_ + "/junit.xml", opts_.junit_path, "JUnit XML");
    if (!opts_.ktap_path.empty())
        res.ktap = slurp_if_exists(out_dir_ + "/ktap.txt");
    if (!opts_.kcidb_path.empty())
        res.kcidb = slurp_if_exists(out_dir_ + "/kcidb.json");
    if (opts_.lava)
        res.lava = slurp_if_exists(out_dir_ + "/lava.json");
    copy_out(out_dir_ + "/record.jsonl", opts_.record_path, "recorded event stream");
    return res;
}

} // namespace

// The guest's gmemstress could not write a report: the kernel under test
// crashed under it. The host writes one: the splat as kernel findings
// (verdict fail), what is known of the guest, and the lab section.
nlohmann::json LabRun::crash_report(const Result& res) const {
    report::Report r;
    r.tool_version = GMS_VERSION;
    r.timestamp = utc_timestamp();
    r.command = opts_.guest_command;
    Caps unknown;
    unknown.kernel_release = con_.guest_release;
    unknown.kvm_error = "not known: the guest kernel crashed before gmemstress reported";
    r.host = unknown.to_json();
    r.profile = {{"name", host_profile_.empty() ? "(default)" : host_profile_}};
    r.kernel_log = res.kernel_findings;
    bool unresponsive = res.failure == Failure::unresponsive;
    // A guest that stopped answering printed no splat: the finding is the silence.
    if (unresponsive)
        r.kernel_log.push_back({"unresponsive", res.message, 0});
    if (r.kernel_log.empty()) // a reset or triple fault prints nothing
        r.kernel_log.push_back({"guest_crash", res.message, 0});
    r.kernel_log_reason = unresponsive
                              ? "read from the lab's serial console: the guest stopped answering"
                              : "read from the lab's serial console: the guest kernel crashed";
    r.errors.push_back(fmt::format("the guest {} while {} ran; no report from the guest: {}",
                                   unresponsive ? "stopped answering" : "kernel crashed",
                                   describe_guest_command(opts_), res.message));
    nlohmann::json j = report::to_json(r);
    j["lab"] = res.lab;
    return j;
}

Result run_lab(const Options& opts) {
    return LabRun(opts).run();
}

} // namespace gms::lab
