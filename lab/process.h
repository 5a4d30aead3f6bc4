// Child processes of the lab (QEMU, xz, dpkg-deb) with an RAII guard: the
// owner going away (return, exception, signal-driven unwind) kills and reaps
// the child's whole process group, and PR_SET_PDEATHSIG kills it if
// gmemstress itself dies, so no QEMU is ever left running.
#pragma once

#include "core/fd.h"

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace gms::lab {

class Child {
  public:
    struct Io {
        bool pipe_stdout = false;    // else stdout goes to stdout_file or /dev/null
        bool pipe_stderr = false;    // else stderr goes to /dev/null ...
        bool inherit_stderr = false; // ... or, with this, to gmemstress's own stderr
        std::string stdout_file;     // truncated and written by the child
    };

    // Forks and execs argv[0] (PATH lookup) in a new process group, stdin on
    // /dev/null. Throws EnvError if the program cannot be executed (not
    // installed), SysError for other failures.
    static Child spawn(const std::vector<std::string>& argv, const Io& io);

    Child() = default;
    Child(Child&& o) noexcept;
    Child& operator=(Child&& o) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0 && !status_; }
    int stdout_fd() const { return out_.get(); }
    int stderr_fd() const { return err_.get(); }
    void close_stdout() { out_.reset(); }
    void close_stderr() { err_.reset(); }

    // Reaps without blocking; the exit code (128+signal if killed) once exited.
    std::optional<int> poll();
    // SIGTERM to the group, up to grace_s for it to exit, then SIGKILL; reaps.
    // Idempotent. Returns the exit code.
    int terminate(double grace_s = 2.0);

  private:
    pid_t pid_ = -1;
    std::optional<int> status_;
    UniqueFd out_, err_;
};

// Reads a child's piped stdout until the child closes it; then reaps it.
// Bounded by timeout_s (then the child is killed: EnvError); SIGINT/SIGTERM
// of gmemstress kill it too (Interrupted). Sets status to the exit code.
std::string read_stdout_to_end(Child& c, const std::string& what, double timeout_s, int& status);

// Decodes a waitpid() status: exit code, or 128 + signal number.
int decode_wait_status(int status);

struct CaptureResult {
    int status = -1;    // exit code (128+signal), -1 if it timed out
    std::string output; // stdout (unless redirected to a file) + stderr, bounded
};

// Runs a short helper to completion (bounded by timeout_s, then killed).
// stdout goes to stdout_file when given.
CaptureResult run_capture(const std::vector<std::string>& argv, double timeout_s,
                          const std::string& stdout_file = "");

// Absolute path of an executable found on PATH (or the name itself if it
// contains a '/' and is executable); nullopt if none.
std::optional<std::string> find_program(const std::string& name);

} // namespace gms::lab
