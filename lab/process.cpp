#include "lab/process.h"

#include "core/error.h"
#include "core/run_control.h"
#include "core/util.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace gms::lab {

int decode_wait_status(int status) {
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

std::optional<std::string> find_program(const std::string& name) {
    auto executable = [](const std::string& p) {
        struct stat st {};
        return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
    };
    if (name.find('/') != std::string::npos)
        return executable(name) ? std::optional<std::string>(name) : std::nullopt;
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    // sbin too: kmod/dpkg helpers live there and PATH of non-root users lacks it.
    dirs += ":/usr/local/sbin:/usr/sbin:/sbin";
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t colon = dirs.find(':', start);
        std::string dir =
            dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        if (!dir.empty() && executable(dir + "/" + name))
            return dir + "/" + name;
        if (colon == std::string::npos)
            break;
        start = colon + 1;
    }
    return std::nullopt;
}

namespace {

UniqueFd open_or_throw(const std::string& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0)
        throw SysError("open", path, errno);
    return UniqueFd(fd);
}

void make_pipe(UniqueFd& rd, UniqueFd& wr) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0)
        throw SysError("pipe2", "O_CLOEXEC", errno);
    rd.reset(p[0]);
    wr.reset(p[1]);
}

} // namespace

Child Child::spawn(const std::vector<std::string>& argv, const Io& io) {
    if (argv.empty())
        throw Error("Child::spawn: empty argv");
    auto program = find_program(argv[0]);
    if (!program)
        throw EnvError(fmt::format("'{}' not found on PATH", argv[0]));

    UniqueFd devnull = open_or_throw("/dev/null", O_RDWR);
    UniqueFd out_rd, out_wr, err_rd, err_wr, exec_rd, exec_wr;
    if (io.pipe_stdout)
        make_pipe(out_rd, out_wr);
    else if (!io.stdout_file.empty())
        out_wr = open_or_throw(io.stdout_file, O_WRONLY | O_CREAT | O_TRUNC);
    if (io.pipe_stderr)
        make_pipe(err_rd, err_wr);
    make_pipe(exec_rd, exec_wr); // reports a failed exec (CLOEXEC: closes on success)

    // Everything the child needs is prepared before fork: it only makes
    // async-signal-safe calls.
    std::vector<char*> cargv;
    for (const auto& a : argv)
        cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    const char* path = program->c_str();
    int in_fd = devnull.get();
    int o_fd = out_wr ? out_wr.get() : devnull.get();
    int e_fd = err_wr ? err_wr.get() : io.inherit_stderr ? STDERR_FILENO : devnull.get();
    int x_fd = exec_wr.get();
    pid_t parent = ::getpid();

    pid_t pid = ::fork();
    if (pid < 0)
        throw SysError("fork", argv[0], errno);
    if (pid == 0) {
        ::setpgid(0, 0); // own group: a terminal's ^C reaches gmemstress, which decides
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent)
            ::_exit(127);
        sigset_t all;
        sigemptyset(&all);
        ::sigprocmask(SIG_SETMASK, &all, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::dup2(in_fd, 0);
        ::dup2(o_fd, 1);
        ::dup2(e_fd, 2);
        ::execv(path, cargv.data());
        int e = errno;
        ssize_t ignored = ::write(x_fd, &e, sizeof e);
        (void)ignored;
        ::_exit(127);
    }
    ::setpgid(pid, pid); // also from the parent: no window where a kill(-pid) misses

    Child c;
    c.pid_ = pid;
    c.out_ = std::move(out_rd);
    c.err_ = std::move(err_rd);
    exec_wr.reset();
    out_wr.reset();
    err_wr.reset();
    int err = 0;
    ssize_t n;
    do {
        n = ::read(exec_rd.get(), &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    if (n == sizeof err) {
        c.terminate(0);
        throw EnvError(fmt::format("cannot execute {}: {}", *program, std::strerror(err)));
    }
    return c;
}

Child::Child(Child&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), status_(o.status_), out_(std::move(o.out_)),
      err_(std::move(o.err_)) {}

Child& Child::operator=(Child&& o) noexcept {
    if (this != &o) {
        terminate();
        pid_ = std::exchange(o.pid_, -1);
        status_ = o.status_;
        out_ = std::move(o.out_);
        err_ = std::move(o.err_);
    }
    return *this;
}

Child::~Child() {
    terminate();
}

std::optional<int> Child::poll() {
    if (pid_ <= 0 || status_)
        return status_;
    // Peek without reaping: while the leader is a zombie its group id cannot be
    // reused, so anything left in the group can be killed safely first.
    siginfo_t info{};
    if (::waitid(P_PID, id_t(pid_), &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno == ECHILD)
            status_ = 255;
        return status_;
    }
    if (info.si_pid != pid_)
        return std::nullopt;
    ::kill(-pid_, SIGKILL);
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, 0);
    } while (r < 0 && errno == EINTR);
    status_ = r == pid_ ? decode_wait_status(st) : 255;
    return status_;
}

int Child::terminate(double grace_s) {
    if (pid_ <= 0)
        return status_.value_or(-1);
    if (!poll()) {
        // The group, not just the pid: helpers QEMU may have started die too.
        ::kill(-pid_, SIGTERM);
        uint64_t until = now_ns() + uint64_t(grace_s * 1e9);
        while (!poll() && now_ns() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!poll()) {
            ::kill(-pid_, SIGKILL);
            while (!poll())
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    out_.reset();
    err_.reset();
    return *status_;
}

CaptureResult run_capture(const std::vector<std::string>& argv, double timeout_s,
                          const std::string& stdout_file) {
    constexpr size_t kMaxOutput = 64 * 1024;
    Child::Io io;
    io.pipe_stdout = stdout_file.empty();
    io.stdout_file = stdout_file;
    io.pipe_stderr = true;
    Child c = Child::spawn(argv, io);
    CaptureResult res;
    uint64_t deadline = now_ns() + uint64_t(timeout_s * 1e9);
    char buf[8192];
    while (c.stdout_fd() >= 0 || c.stderr_fd() >= 0) {
        pollfd fds[2];
        int nfds = 0;
        for (int fd : {c.stdout_fd(), c.stderr_fd()})
            if (fd >= 0)
                fds[nfds++] = {fd, POLLIN, 0};
        uint64_t now = now_ns();
        if (RunControl::global().interrupted()) {
            c.terminate(0.5);
            throw Interrupted();
        }
        if (now >= deadline) {
            c.terminate(0.5);
            res.status = -1;
            return res;
        }
        int r = ::poll(fds, nfds, std::min(100, int((deadline - now) / 1000000) + 1));
        if (r < 0 && errno != EINTR)
            throw SysError("poll", argv[0], errno);
        for (int i = 0; i < nfds && r > 0; ++i) {
            if (!fds[i].revents)
                continue;
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                res.output.append(buf, size_t(n));
                if (res.output.size() > kMaxOutput)
                    res.output.erase(0, res.output.size() - kMaxOutput);
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd == c.stdout_fd() ? c.close_stdout() : c.close_stderr();
            }
        }
    }
    while (!c.poll()) {
        if (now_ns() >= deadline) {
            c.terminate(0.5);
            res.status = -1;
            return res;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    res.status = *c.poll();
    return res;
}

} // namespace gms::lab

namespace gms::lab {

std::string read_stdout_to_end(Child& c, const std::string& what, double timeout_s, int& status) {
    std::string out;
    uint64_t deadline = now_ns() + uint64_t(timeout_s * 1e9);
    char buf[8192];
    auto check_bounds = [&] {
        if (RunControl::global().interrupted()) {
            c.terminate(0.5);
            throw Interrupted();
        }
        if (now_ns() >= deadline) {
            c.terminate(0.5);
            throw EnvError(fmt::format("{} did not finish within {:.0f} s", what, timeout_s));
        }
    };
    while (c.stdout_fd() >= 0) {
        check_bounds();
        pollfd fd{c.stdout_fd(), POLLIN, 0};
        int r = ::poll(&fd, 1, 100);
        if (r < 0 && errno != EINTR)
            throw SysError("poll", "child stdout", errno);
        if (r <= 0)
            continue;
        ssize_t n = ::read(c.stdout_fd(), buf, sizeof buf);
        if (n > 0)
            out.append(buf, size_t(n));
        else if (n == 0 || errno != EINTR)
            c.close_stdout();
    }
    while (!c.poll()) {
        check_bounds();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    status = *c.poll();
    return out;
}

} // namespace gms::lab
