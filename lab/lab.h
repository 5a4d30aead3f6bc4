// The QEMU lab: boots a given kernel (e.g. Debian's newest, fetched by
// scripts/fetch-lab-kernel.sh) with nested KVM, runs this same gmemstress
// binary inside it over a read-only 9p share of the host root, and brings the
// report, the guest's kernel log and the serial console back. See docs/LAB.md.
#pragma once

#include "reports/model.h"

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::lab {

// ---- Inputs -----------------------------------------------------------------

struct Options {
    std::string kernel;                   // bzImage; empty: Debian's newest (fetched, cached)
    std::string modules_dir;              // a lib/modules/<release> tree (any layout below)
    std::vector<std::string> kernel_debs; // linux-modules / linux-binary .deb files
    std::string profile; // built-in name or a host path; empty: the command's default
    unsigned cpus = 2;
    uint64_t memory = 2ull << 30;
    double timeout_s = 600;  // boot + run + shutdown
    std::string report_path; // the guest's report + "lab", written atomically
    std::string junit_path;  // the guest's JUnit XML, copied
    std::string html_path;   // the report as HTML (reports/html.h), written by the caller
    std::string record_path; // the guest's recorded event stream (run --record), copied
    std::string ktap_path;   // run --ktap: Result::ktap, for the caller to write here
    std::string kcidb_path;  // run --kcidb: Result::kcidb, for the caller to write here
    std::string kcidb_origin, kcidb_build_id; // passed to the guest's run
    bool lava = false;                        // run --lava: Result::lava, for the caller to make
    std::vector<std::string> waivers;         // run --waivers files (host paths)
    std::string console_path;                 // full serial console (+ QEMU's stderr)
    std::string dmesg_path;                   // the guest's dmesg at the end of the run
    std::string accel = "auto";               // auto | kvm | tcg
    std::string guest_command = "run";        // gmemstress subcommand run in the guest
    std::vector<std::string> guest_args;      // after `--`
    // --exec: this command (any program) instead of gmemstress; its output
    // and exit status are passed through.
    std::vector<std::string> exec_command;
    std::vector<std::string> writable; // host directories the guest may write (same paths)
    std::vector<std::string> env;      // KEY=VALUE for the guest command
    std::string before;       // shell command run in the guest just before it (e.g. a trigger, &)
    std::string kernel_cache; // where fetched kernels live (default_kernel_cache_dir())
    // --test-kernel / --kernel-tree: boot the project's test kernel, built
    // (once, cached) from Debian's linux-source or from this tree.
    bool test_kernel = false;
    std::string kernel_tree;
    std::vector<std::string> kconfig_fragments; // more fragments for the test kernel
    bool sanitizers = false; // the test kernel with lab/kconfig/gmemstress-sanitizers.config
    bool offline = false;    // no download: the newest cached kernel
    std::string append;      // more kernel command line (e.g. loglevel=7)
    // --plant: bugs the test kernel plants (lab/patches), by name; implies
    // --test-kernel unless --kernel names a kernel built with the plants.
    std::vector<std::string> plants;
    std::string qemu = "qemu-system-x86_64";
    std::string busybox;       // static busybox; default: found on the host
    bool keep_workdir = false; // debugging: leave the initramfs etc. behind
    bool quiet = false;        // no progress lines on stderr
};

// The bugs the test kernel can plant (lab/patches/gmemstress-plants.patch),
// one bit of kvm.gms_plant= each.
struct Plant {
    const char* name;
    uint32_t bit;
    const char* what;
};
const std::vector<Plant>& plants();
// The kvm.gms_plant= mask for these names; UsageError naming an unknown one.
uint32_t plant_mask(const std::vector<std::string>& names);

// What the guest runs, in words: "gmemstress run", "exec python3 ...".
std::string describe_guest_command(const Options& o);

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
    std::optional<std::string> ktap;      // the guest's KTAP (Options::ktap_path)
    std::optional<std::string> kcidb;     // the guest's KCIDB JSON (Options::kcidb_path)
    std::optional<std::string> lava;      // the guest's LAVA calls as JSON (Options::lava)
    // Oops, BUG, panic ... lines the guest kernel printed on the console.
    std::vector<report::KmsgFinding> kernel_findings;
    // The guest kernel crashed after the lab's init started: a finding about
    // the kernel under test (exit 1), not a lab that could not run.
    bool kernel_crashed = false;
    nlohmann::json lab = nlohmann::json::object();
};

// Boots, runs, collects. Throws UsageError/EnvError for bad inputs or a host
// that cannot run the lab (before QEMU starts); everything after that is in
// the Result. Kills QEMU on every path.
Result run_lab(const Options& opts);

// ---- The kernel cache ----------------------------------------------------------

// $GMS_LAB_KERNEL_DIR, else $XDG_CACHE_HOME/gmemstress/kernels, else
// ~/.cache/gmemstress/kernels: outside any clone, one download per machine.
std::string default_kernel_cache_dir();

struct FetchOptions {
    std::string cache_dir; // empty: default_kernel_cache_dir()
    bool offline = false;
    bool quiet = false; // else apt's progress shows on stderr
    double timeout_s = 1800;
};
struct CachedKernel {
    std::string release, version, kernel, modules;
};
// Debian's newest amd64 kernel (trixie-backports, sid), downloaded once and
// cached; without a network (or offline) the newest cached one. EnvError
// saying what to do when there is none.
CachedKernel fetch_newest_kernel(const FetchOptions& o);

// The project's test kernel (scripts/build-test-kernel.sh, embedded): Debian's
// newest linux-source or the user's tree, allnoconfig + lab/kconfig fragments,
// everything built in. Built once per (source, fragments), cached in
// default_test_kernel_dir(); a tree is handed to make every time (incremental).
std::string default_test_kernel_dir();
struct TestKernelOptions {
    std::string tree;                   // empty: Debian's newest linux-source
    std::vector<std::string> fragments; // applied after the project's own
    bool sanitizers = false;            // + lab/kconfig/gmemstress-sanitizers.config
    bool offline = false;
    bool quiet = false; // else make's progress lines show on stderr
    double timeout_s = 4 * 3600;
};
struct TestKernel {
    std::string release, kernel, config, source, key;
    std::string plants; // hash of lab/patches applied (kvm.gms_plant= exists), or "none"
};
TestKernel build_test_kernel(const TestKernelOptions& o);

// Console lines of a guest kernel that are findings (timestamp prefix
// removed before classifying); the rest are nullopt.
std::optional<report::KmsgFinding> console_finding(const std::string& line);

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
    std::vector<std::string> command;  // absolute gmemstress path + args (guest view)
    std::vector<std::string> writable; // host dirs mounted read-write at the same path
    std::vector<std::string> env;      // KEY=VALUE added to the command's environment
    std::string before;                // shell command run first, in the same shell
    // The kvm.gms_plant= mask the kernel must have taken (0: no check), so a
    // kernel without the plants is a setup failure, never a clean run.
    uint32_t plant_mask = 0;
};
std::string make_init_script(const GuestPlan& plan);
// Where the results share is mounted, as the guest command sees it.
std::string guest_out_dir(const GuestPlan& plan);

// Single-quotes a word for /bin/sh.
std::string shell_quote(const std::string& s);

} // namespace gms::lab
