#!/usr/bin/env python3
"""Runs the tests that need a real /dev/kvm wherever a real KVM is.

ctest runs every test labelled `kvm` through this gate (CMake sets it as the
test's launcher). Where the host's /dev/kvm can run guest_memfd VMs the gate
simply executes the test. Where it cannot (a host that is itself a guest, a CI
runner without nested virtualization), the `kvm-batch` fixture boots the QEMU
lab ONCE, runs every `kvm` test inside it, one after the other, and stores each
test's output and exit status; the gate then replays the stored result, so that
each test is still reported as its own ctest test, with its own output, skip
reason and exit status. Nothing is skipped for lack of /dev/kvm.

Modes (the gate and the fixture read the same environment):
  GMS_KVM_TESTS=auto   (default) the host's /dev/kvm when usable, else the lab
  GMS_KVM_TESTS=host   always on the host (a test then skips if KVM is missing)
  GMS_KVM_TESTS=lab    always in the lab, e.g. to test a kernel of your own:
  GMS_LAB_KERNEL=BZIMAGE  the lab boots it (default: Debian's newest, cached)
  GMS_LAB_ARGS="..."   more `gmemstress lab` options for the batch boot
  GMS_KVM_BATCH_FILTER=REGEX  the batch runs only the tests whose names match
                       (the others then fail: they have no result); for
                       `ctest -R REGEX` runs that should not boot all of them

Usage (CMake writes these command lines; see tests/CMakeLists.txt):
  kvm_gate.py --build-dir DIR -- CMD [ARGS...]   run (or replay) one test
  kvm_gate.py --build-dir DIR --setup            the fixture: the lab batch when needed
  kvm_gate.py --run-batch MANIFEST BATCHDIR      inside the guest: run the manifest
The batch takes every test that requires the `kvm_batch` fixture.
"""
import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time

import ctest_info  # beside this script

KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_GUEST_MEMFD = 234
FIXTURE = "kvm_batch"


def host_kvm_problem():
    """None when this machine's KVM can run guest_memfd VMs, else why not."""
    dev = os.environ.get("GMS_KVM_DEVICE") or "/dev/kvm"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{dev}: {e.strerror}"
    try:
        try:
            vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as e:
            return f"{dev} opens but KVM_CREATE_VM fails: {e.strerror}"
        try:
            if fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD) <= 0:
                return f"the host kernel {os.uname().release} has no guest_memfd"
        finally:
            os.close(vm)
    finally:
        os.close(fd)
    return None


def where_to_run():
    """('host', why) or ('lab', why)."""
    if os.environ.get("GMS_IN_LAB") == "1":
        return "host", "inside the lab guest"
    mode = os.environ.get("GMS_KVM_TESTS", "auto")
    if mode not in ("auto", "host", "lab"):
        sys.exit(f"kvm_gate: GMS_KVM_TESTS={mode!r}: expected auto, host or lab")
    if mode != "auto":
        return mode, f"GMS_KVM_TESTS={mode}"
    problem = host_kvm_problem()
    return ("lab", f"no usable KVM on this host ({problem})") if problem else \
        ("host", "the host's /dev/kvm is usable")


def batch_dir(build):
    return os.path.join(build, "kvm-batch")


def key_of(command):
    return hashlib.sha1(json.dumps(command).encode()).hexdigest()[:16]


def write_json(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- one test ------------------------------------------------------------------------

def gate(build, command):
    # Catch2's test discovery (at build time) lists tests; it never runs them.
    if any(a in ("--list-tests", "--list-reporters") for a in command):
        os.execvp(command[0], command)
    where, why = where_to_run()
    if where == "host":
        os.execvp(command[0], command)
    replay(build, command, why)


def replay(build, command, why):
    d = batch_dir(build)
    path = os.path.join(d, "results", key_of(command) + ".json")
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        try:
            with open(os.path.join(d, "incomplete.txt")) as f:
                cause = f.read()
        except OSError:
            cause = "see the output of the 'kvm-batch' test"
        print(f"FAIL: {why}, so this test runs in the lab batch, but the batch has no result for "
              f"it ({path}: {getattr(e, 'strerror', None) or e}): {cause}")
        sys.exit(1)
    info = {}
    try:
        with open(os.path.join(d, "batch.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        pass
    print(f"[kvm_gate] {why}: this test ran in the QEMU lab (guest kernel "
          f"{info.get('kernel_release', '?')}) in {res['duration_s']:.1f} s, exit status "
          f"{res['status']}")
    sys.stdout.write(res["output"])
    sys.stdout.flush()
    sys.exit(res["status"])


# ---- the fixture ---------------------------------------------------------------------

def ctest_tests(ctest, build):
    """Every test that requires the kvm_batch fixture, as ctest would run it
    (command, environment, working directory, timeout)."""
    try:
        registered = ctest_info.show_only(build, ctest)
    except RuntimeError as e:
        sys.exit(f"kvm_gate: {e}")
    tests = []
    for t in registered:
        props = t["props"]
        if not t["command"] or FIXTURE not in props.get("FIXTURES_REQUIRED", []):
            continue
        tests.append({
            "name": t["name"],
            "command": t["command"],
            "env": props.get("ENVIRONMENT", []),
            "cwd": props.get("WORKING_DIRECTORY") or build,
            "timeout": float(props.get("TIMEOUT", 600)),
        })
    return tests


def strip_gate(command):
    """The test's own command: what follows `--` after this script on the
    launcher's command line."""
    me = os.path.abspath(__file__)
    for i, a in enumerate(command):
        if os.path.abspath(a) == me:
            rest = command[i + 1:]
            return rest[rest.index("--") + 1:] if "--" in rest else rest
    return command


def setup(build):
    where, why = where_to_run()
    if where == "host":
        print(f"kvm-batch: {why}: the kvm tests run on the host, one ctest test each; "
              f"no lab boot needed")
        return 0
    gms = os.environ["GMS_BIN"]
    ctest = os.environ.get("GMS_CTEST", "ctest")
    d = batch_dir(build)
    results = os.path.join(d, "results")
    os.makedirs(results, exist_ok=True)
    for f in os.listdir(results):  # a result is never older than this ctest run
        os.remove(os.path.join(results, f))
    for f in ("batch.json", "manifest.json", "incomplete.txt"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    tests = ctest_tests(ctest, build)
    if os.environ.get("GMS_KVM_BATCH_FILTER"):
        wanted = re.compile(os.environ["GMS_KVM_BATCH_FILTER"])
        tests = [t for t in tests if wanted.search(t["name"])]
    if not tests:
        print(f"FAIL: no test requires the {FIXTURE} fixture (the build registers none?)")
        return 1
    manifest = os.path.join(d, "manifest.json")
    write_json(manifest, tests)
    budget = sum(t["timeout"] for t in tests)
    lab_timeout = float(os.environ.get("GMS_KVM_BATCH_TIMEOUT", min(budget, 3600)))
    cmd = [gms, "lab", "--exec", "--writable", d, "--memory", "3G",
           "--timeout", f"{int(lab_timeout)}s", "--keep-console", os.path.join(d, "console.log"),
           "--keep-dmesg", os.path.join(d, "dmesg.txt")]
    if os.environ.get("GMS_LAB_KERNEL"):
        cmd += ["--kernel", os.environ["GMS_LAB_KERNEL"]]
    # The host's caches by the same paths (the guest sees the host's root,
    # read-only, and has no network): e.g. the kernel's KTAP parser that
    # install-deps fetched into ~/.cache/gmemstress/kunit.
    for key in ("HOME", "XDG_CACHE_HOME", "GMS_KUNIT_DIR"):
        if os.environ.get(key):
            cmd += ["--env", f"{key}={os.environ[key]}"]
    cmd += shlex.split(os.environ.get("GMS_LAB_ARGS", ""))
    cmd += ["--", sys.executable if sys.executable else "python3", os.path.abspath(__file__),
            "--run-batch", manifest, d]
    print(f"kvm-batch: {why}: running the {len(tests)} tests that need KVM in ONE lab boot")
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, text=True, capture_output=True)
    print(p.stdout, end="")
    print(p.stderr, end="", file=sys.stderr)
    print(f"kvm-batch: gmemstress lab exited {p.returncode} after {time.monotonic() - t0:.1f} s")
    done = len(os.listdir(results))
    print(f"kvm-batch: {done} of {len(tests)} tests have a result")
    # The tests' own verdicts are theirs to report (each replays its result as
    # its own ctest test). A batch cut short (a --timeout on a slow host) still
    # lets the tests that finished report: ctest would skip every dependent of
    # a failed fixture, hiding 64 results for the lack of 4. The tests without a
    # result then fail, each naming why.
    if p.returncode != 0 or done != len(tests):
        why = (f"the lab batch did not complete (gmemstress lab exit {p.returncode}, "
               f"{done}/{len(tests)} results); the console is in {os.path.join(d, 'console.log')}")
        with open(os.path.join(d, "incomplete.txt"), "w") as f:
            f.write(why)
        if done == 0:
            print(f"FAIL: {why}")
            return 1
        print(f"INCOMPLETE: {why}; the tests without a result fail")
    return 0


# ---- inside the guest ----------------------------------------------------------------

def run_batch(manifest, d):
    with open(manifest) as f:
        tests = json.load(f)
    results = os.path.join(d, "results")
    release = os.uname().release
    write_json(os.path.join(d, "batch.json"), {"kernel_release": release, "tests": len(tests)})
    failed = 0
    for i, t in enumerate(tests, 1):
        env = dict(os.environ)
        for kv in t["env"]:
            k, _, v = kv.partition("=")
            env[k] = v
        command = strip_gate(t["command"])
        t0 = time.monotonic()
        try:
            p = subprocess.run(command, cwd=t["cwd"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               timeout=t["timeout"])
            status, output = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            status, output = 1, out + f"\nFAIL: timed out after {t['timeout']:.0f} s in the lab\n"
        except OSError as e:
            status, output = 1, (f"FAIL: cannot run {command[0]} in {t['cwd']} in the lab: "
                                 f"{e.strerror} ({e.filename})\n")
        took = time.monotonic() - t0
        write_json(os.path.join(results, key_of(command) + ".json"), {
            "name": t["name"], "command": command, "status": status, "output": output,
            "duration_s": took})
        failed += status != 0
        print(f"[{i}/{len(tests)}] exit {status:3d} {took:7.1f} s  {t['name']}", flush=True)
    print(f"kvm-batch (guest {release}): {len(tests)} tests ran, {failed} exited non-zero "
          f"(skips included: ctest reads their exit status)")
    return 0


def main(argv):
    if len(argv) == 3 and argv[0] == "--run-batch":
        return run_batch(argv[1], argv[2])
    if len(argv) < 3 or argv[0] != "--build-dir":
        print(__doc__)
        return 2
    build = argv[1]
    if argv[2] == "--setup":
        return setup(build)
    if argv[2] != "--" or len(argv) < 4:
        print(__doc__)
        return 2
    gate(build, argv[3:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
