// Debian's newest kernel for the lab, fetched and cached by gmemstress itself
// (the embedded scripts/fetch-lab-kernel.sh does the apt work).
#include "core/error.h"
#include "lab/lab.h"
#include "lab/process.h"

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <sstream>

namespace gms::lab {

extern const char* const kFetchKernelScript;
extern const char* const kBuildTestKernelScript;
extern const char* const kLabBootConfig;
extern const char* const kGmemstressConfig;
extern const char* const kGmemstressDebugConfig;
extern const char* const kGmemstressSanitizersConfig;
extern const char* const kPlantsPatch;

namespace {

std::string cache_root() {
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        return std::string(x) + "/gmemstress";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : "/root") + "/.cache/gmemstress";
}

// Runs one of the embedded kernel scripts with the user's stderr (its
// progress: apt's downloads, make's steps) unless quiet, and returns the
// "key=value" lines it printed on stdout as its result.
std::map<std::string, std::string> run_kernel_script(const std::vector<std::string>& argv,
                                                     const std::string& what, bool quiet,
                                                     double timeout_s, int& status) {
    Child::Io io;
    io.pipe_stdout = true;
    io.inherit_stderr = !quiet;
    Child c = Child::spawn(argv, io);
    std::istringstream lines(read_stdout_to_end(c, what, timeout_s, status));
    std::map<std::string, std::string> kv;
    for (std::string line; std::getline(lines, line);)
        if (auto eq = line.find('='); eq != std::string::npos)
            kv[line.substr(0, eq)] = line.substr(eq + 1);
    return kv;
}

} // namespace

std::string default_kernel_cache_dir() {
    if (const char* d = std::getenv("GMS_LAB_KERNEL_DIR"); d && *d)
        return d;
    return cache_root() + "/kernels";
}

std::string default_test_kernel_dir() {
    if (const char* d = std::getenv("GMS_TEST_KERNEL_DIR"); d && *d)
        return d;
    return cache_root() + "/test-kernel";
}

TestKernel build_test_kernel(const TestKernelOptions& o) {
    std::string dest = default_test_kernel_dir();
    // The fragments and the plants travel with the binary: written next to
    // the cache, where the script reads them (their content is part of the
    // cache key).
    auto write_all = [&](const std::string& dir,
                         std::initializer_list<std::pair<const char*, const char*>> files) {
        std::filesystem::create_directories(dir);
        for (auto [name, text] : files) {
            std::string path = dir + "/" + name, tmp = path + ".tmp";
            std::ofstream(tmp, std::ios::trunc) << text;
            std::filesystem::rename(tmp, path);
        }
    };
    std::string kconfig_dir = dest + "/kconfig", patch_dir = dest + "/patches";
    write_all(kconfig_dir, {{"lab-boot.config", kLabBootConfig},
                            {"gmemstress.config", kGmemstressConfig},
                            {"gmemstress-debug.config", kGmemstressDebugConfig},
                            {"gmemstress-sanitizers.config", kGmemstressSanitizersConfig}});
    write_all(patch_dir, {{"gmemstress-plants.patch", kPlantsPatch}});
    std::vector<std::string> argv = {
        "bash",        "-c",     kBuildTestKernelScript, "build-test-kernel",
        "--cache",     dest,     "--kconfig-dir",        kconfig_dir,
        "--patch-dir", patch_dir};
    if (!o.tree.empty())
        argv.insert(argv.end(), {"--tree", o.tree});
    for (const auto& f : o.fragments)
        argv.insert(argv.end(), {"--fragment", f});
    if (o.offline)
        argv.push_back("--offline");
    if (o.sanitizers)
        argv.push_back("--sanitizers");
    int status = -1;
    auto kv = run_kernel_script(argv, "building the test kernel", o.quiet, o.timeout_s, status);
    TestKernel k{kv["release"], kv["kernel"], kv["config"], kv["source"], kv["key"], kv["plants"]};
    if (status != 0 || k.kernel.empty())
        throw EnvError(
            fmt::format("no test kernel: building it {} failed (exit {}; the reason is above{})",
                        o.tree.empty() ? "from Debian's linux-source" : "from " + o.tree, status,
                        o.quiet ? ", rerun without --quiet" : ""));
    return k;
}

CachedKernel fetch_newest_kernel(const FetchOptions& o) {
    std::string dest = o.cache_dir.empty() ? default_kernel_cache_dir() : o.cache_dir;
    std::vector<std::string> argv = {"bash",   "-c", kFetchKernelScript, "fetch-lab-kernel",
                                     "--dest", dest};
    if (o.offline)
        argv.push_back("--offline");
    int status = -1;
    auto kv = run_kernel_script(argv, "fetching the lab kernel", o.quiet, o.timeout_s, status);
    CachedKernel k{kv["release"], kv["version"], kv["kernel"], kv["modules"]};
    if (status != 0 || k.kernel.empty())
        throw EnvError(fmt::format(
            "no lab kernel: fetching Debian's newest kernel into {} failed (exit {}{}) and none "
            "is cached there; connect to Debian's package servers once (the kernel is then "
            "cached), or pass --kernel BZIMAGE",
            dest, status, o.offline ? ", --offline" : ""));
    return k;
}

} // namespace gms::lab
