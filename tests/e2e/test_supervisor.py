"""`run` forks a supervisor (engine::fork_supervisor, docs/STALLS.md): the run
happens in its one child. The child's exit status is the command's; killing
the supervisor outright (SIGKILL: it cannot forward anything) stops the child
as a SIGTERM would (report written, marked interrupted), it does not run on
to its duration; nothing is left behind."""
# gmemstress-test: needs-kvm
import ctypes
import os
import signal
import subprocess
import time

from gms_e2e import GMS_BIN, main, require_kvm, tmpdir, validate_report

PR_SET_CHILD_SUBREAPER = 36


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def start(report, duration="60s"):
    p = subprocess.Popen([GMS_BIN, "run", "--profile", "soak", "--duration", duration,
                          "--report", report, "--quiet", "--gmem-size", "16MiB",
                          # what is tested is the supervisor, not the probes'
                          # teardown (seconds more under the lab's TCG)
                          "--probes", "off"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The fork comes after startup (profile, caps): seconds on a host, more
    # under the lab's TCG. Wait for it, not a fixed time.
    deadline = time.monotonic() + 60
    time.sleep(1)
    kids = children(p.pid)
    while not kids and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        kids = children(p.pid)
    time.sleep(2)  # into the run, so that the signals below meet it running
    assert len(kids) == 1, f"one child runs the run (children of {p.pid}: {kids})"
    with open(f"/proc/{kids[0]}/comm") as f:
        assert f.read().strip() == "gmemstress"
    return p, kids[0]


def status_propagates():
    """The child's exit status (a pass, 0) is the supervisor's."""
    report = os.path.join(tmpdir(), "ok.json")
    p = subprocess.run([GMS_BIN, "run", "--profile", "smoke", "--duration", "3s", "--report", report,
                        "--quiet", "--probes", "off"], capture_output=True, text=True, timeout=120)
    rep = validate_report(report)
    want = {"pass": 0, "fail": 1, "skip": 3, "error": 4}[rep["verdict"]]
    assert p.returncode == want, f"exit {p.returncode}, verdict {rep['verdict']}\n{p.stderr}"


def supervisor_killed():
    """SIGKILL on the supervisor: the child stops as on SIGTERM, in time."""
    # Orphans are reparented to this process, so their status can be read.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    report = os.path.join(tmpdir(), "killed.json")
    p, child = start(report)
    t0 = time.monotonic()
    p.kill()
    p.wait(timeout=10)  # not communicate(): the child still holds the pipes
    assert p.returncode == -signal.SIGKILL
    deadline = t0 + 20
    status = None
    while time.monotonic() < deadline:
        pid, st = os.waitpid(child, os.WNOHANG)
        if pid == child:
            status = st
            break
        time.sleep(0.1)
    waited = time.monotonic() - t0
    if status is None:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise AssertionError(f"the child {child} still ran {waited:.0f} s after its supervisor "
                             "was killed")
    print(f"child stopped {waited:.1f} s after the supervisor was killed, status {status:#x}")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130, f"status {status:#x}"
    assert waited < 15, f"took {waited:.1f}s to stop"
    rep = validate_report(report)
    assert rep["interrupted"] is True
    assert "SIGTERM" in rep["interrupt_reason"], rep["interrupt_reason"]
    assert rep["duration_s"] < 20
    assert not os.path.exists(f"/proc/{child}"), "nothing left behind"


def interrupted_child_reaped():
    """SIGINT to the supervisor: forwarded, exit 130, the child reaped by it."""
    report = os.path.join(tmpdir(), "int.json")
    p, child = start(report)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 130, f"exit {p.returncode}"
    assert not os.path.exists(f"/proc/{child}"), f"child {child} left behind (zombie or running)"
    validate_report(report)


def test():
    require_kvm()
    status_propagates()
    interrupted_child_reaped()
    supervisor_killed()


main(test)
