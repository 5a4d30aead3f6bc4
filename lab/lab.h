// The QEMU lab: boots a given kernel (e.g. Debian's newest, fetched by
// scripts/fetch-lab-kernel.sh) with nested KVM, runs this same gmemstress
// binary inside it over a read-only 9p share of the host root, and brings the
// report, the guest's kernel log and the serial console back. See docs/LAB.md.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::lab {

// ---- Inputs -----------------------------------------------------------------

struct Options {
    std::string kernel;                   // bzImage (may come from kernel_debs)
    std::string modules_dir;              // a lib/modules/<release> tree (any layout below)
    std::vector<std::string> kernel_debs; // linux-modules / linux-binary .deb files
    std::string profile; // built-in name or a host path; empty: the command's default
    unsigned cpus = 2;
    uint64_t memory = 2ull << 30;
    double timeout_s = 600;              // boot + run + shutdown
    std::string report_path;             // the guest's report + "lab", written atomically
    std::string junit_path;              // the guest's JUnit XML, copied
    std::string record_path;             // the guest's recorded event stream (run --record), copied
    std::string console_path;            // full serial console (+ QEMU's stderr)
    std::string dmesg_path;              // the guest's dmesg at the end of the run
    std::string accel = "auto";          // auto | kvm | tcg
    std::string guest_command = "run";   // gmemstress subcommand run in the guest
    std::vector<std::string> guest_args; // after `--`
    std::string append;                  // more kernel command line (e.g. loglevel=7)
    std::string qemu = "qemu-system-x86_64";
    std::string busybox;       // static busybox; default: found on the host
    bool keep_workdir = false; // debugging: leave the initramfs etc. behind
    bool quiet = false;        // no progress lines on stderr
};

// Guest commands that take the lab's --profile and --report (host paths the
// lab translates), as opposed to commands such as caps that print only.
bool takes_profile_and_report(const std::string& guest_command);

// ---- Outcome ----------------------------------------------------------------

enum class Failure {
    none,
    boot,        // QEMU or the kernel did not reach the guest's init
    setup,       // init ran but modules / mounts / /dev/kvm failed
    panic,       // kernel panic (or the kernel halted/rebooted) before the run finished
    timeout,     // --timeout reached
    interrupted, // SIGINT / SIGTERM of gmemstress lab
    transport,   // the run finished but its results did not arrive
};
std::string to_string(Failure f);

struct Result {
    Failure failure = Failure::none;
    std::string message;             // what went wrong, in words (empty on success)
    std::string console_tail;        // last lines of the console (for failures)
    std::optional<int> guest_status; // exit status of gmemstress in the guest
    std::string guest_stdout, guest_stderr;
    std::optional<nlohmann::json> report; // the guest's report with "lab" added
    nlohmann::json lab = nlohmann::json::object();
};

// Boots, runs, collects. Throws UsageError/EnvError for bad inputs or a host
// that cannot run the lab (before QEMU starts); everything after that is in
// the Result. Kills QEMU on every path.
Result run_lab(const Options& opts);

// ---- Pieces (exposed for tests) ----------------------------------------------

// The x86 boot header of a bzImage. Throws EnvError naming the file when it
// is not one.
struct BzImageInfo {
    uint16_t protocol = 0; // boot protocol version, e.g. 0x020f
    std::string version;   // "7.3.4+deb13-amd64 (debian-kernel@...) #1 SMP ..."
    std::string release;   // first word of version (uname -r)
};
BzImageInfo read_bzimage(const std::string& path);

// key=value strings of a kernel module's .modinfo ELF section. Throws
// EnvError if the file is not an ELF64 module.
std::multimap<std::string, std::string> parse_modinfo(const std::string& elf_bytes,
                                                      const std::string& what);

// Module names are compared with '-' and '_' equal, as the kernel does.
std::string normalize_module_name(const std::string& name);

struct ModuleFile {
    std::string name; // normalized
    std::string path; // .ko / .ko.xz / .ko.zst / .ko.gz
};
// Every module below dir, by normalized name.
std::map<std::string, ModuleFile> index_modules(const std::string& dir);
// Names listed in dir's modules.builtin (if present), normalized.
std::vector<std::string> builtin_modules(const std::string& dir);

// An ELF that needs no program interpreter (statically linked)?
bool is_static_elf(const std::string& path);

// newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it.
class CpioWriter {
  public:
    void add_dir(const std::string& path, uint32_t mode = 0755);
    void add_file(const std::string& path, const std::string& data, uint32_t mode = 0644);
    void add_symlink(const std::string& path, const std::string& target);
    void add_char_device(const std::string& path, uint32_t major, uint32_t minor,
                         uint32_t mode = 0600);
    // Appends the trailer and returns the archive.
    std::string finish();

  private:
    void add(const std::string& path, uint32_t mode, const std::string& data, uint32_t rmaj = 0,
             uint32_t rmin = 0);
    std::string out_;
    uint32_t ino_ = 1;
};

// What the guest's /init does, as data (rendered by make_init_script).
struct GuestPlan {
    std::string token;                     // marks the init's console lines
    std::vector<std::string> base_modules; // ordered: dependencies first
    std::vector<std::string> amd_modules;  // kvm-amd and what it needs beyond base
    std::vector<std::string> intel_modules;
    std::string host_cwd = "/"; // the guest command runs here (read-only)
    // The guest's writable tmpfs: /tmp, or /run when the binary itself lives
    // under the host's /tmp (a tmpfs there would hide it).
    std::string scratch = "/tmp";
    std::vector<std::string> command; // absolute gmemstress path + args (guest view)
};
std::string make_init_script(const GuestPlan& plan);
// Where the results share is mounted, as the guest command sees it.
std::string guest_out_dir(const GuestPlan& plan);

// Single-quotes a word for /bin/sh.
std::string shell_quote(const std::string& s);

} // namespace gms::lab
