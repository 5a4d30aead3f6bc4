// Debian's newest kernel for the lab, fetched and cached by gmemstress itself
// (the embedded scripts/fetch-lab-kernel.sh does the apt work).
#include "core/error.h"
#include "lab/lab.h"
#include "lab/process.h"

#include <cstdlib>
#include <fmt/format.h>
#include <sstream>

namespace gms::lab {

extern const char* const kFetchKernelScript;

std::string default_kernel_cache_dir() {
    if (const char* d = std::getenv("GMS_LAB_KERNEL_DIR"); d && *d)
        return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        return std::string(x) + "/gmemstress/kernels";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : "/root") + "/.cache/gmemstress/kernels";
}

CachedKernel fetch_newest_kernel(const FetchOptions& o) {
    std::string dest = o.cache_dir.empty() ? default_kernel_cache_dir() : o.cache_dir;
    std::vector<std::string> argv = {"bash",   "-c", kFetchKernelScript, "fetch-lab-kernel",
                                     "--dest", dest};
    if (o.offline)
        argv.push_back("--offline");
    // stderr stays the user's: apt's download progress shows there.
    Child::Io io;
    io.pipe_stdout = true;
    io.inherit_stderr = !o.quiet;
    Child c = Child::spawn(argv, io);
    int status = -1;
    std::string out = read_stdout_to_end(c, "fetching the lab kernel", o.timeout_s, status);
    CachedKernel k;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
        auto eq = line.find('=');
        if (eq == std::string::npos)
            continue;
        std::string key = line.substr(0, eq), value = line.substr(eq + 1);
        if (key == "release")
            k.release = value;
        else if (key == "version")
            k.version = value;
        else if (key == "kernel")
            k.kernel = value;
        else if (key == "modules")
            k.modules = value;
    }
    if (status != 0 || k.kernel.empty())
        throw EnvError(fmt::format(
            "no lab kernel: fetching Debian's newest kernel into {} failed (exit {}{}) and none "
            "is cached there; connect to Debian's package servers once (the kernel is then "
            "cached), or pass --kernel BZIMAGE",
            dest, status, o.offline ? ", --offline" : ""));
    return k;
}

} // namespace gms::lab
