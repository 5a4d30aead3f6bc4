"""Shared helpers of the QEMU lab tests (tests/lab/test_*.py).

Each test is one ctest test labelled `lab`; exit code 77 means skipped and the
reason is printed. The kernel is Debian's newest, fetched (and cached) by
scripts/fetch-lab-kernel.sh.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok: {msg}")


def env():
    try:
        return os.environ["GMS_BIN"], os.environ["GMS_SOURCE_DIR"], os.environ["GMS_BUILD_DIR"]
    except KeyError as e:
        fail(f"{e} is not set (run through ctest)")


def require_host_tools():
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86; "
             "scripts/install-deps.sh)")
    if not any(os.access(p, os.X_OK) for p in ("/bin/busybox", "/usr/bin/busybox")):
        skip("busybox is not installed (apt-get install busybox-static)")


def kernel_cache_dir():
    """Where `gmemstress lab` caches Debian's kernels (its own default)."""
    if os.environ.get("GMS_LAB_KERNEL_DIR"):
        return os.environ["GMS_LAB_KERNEL_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ.get("HOME", "/root"),
                                                               ".cache")
    return os.path.join(cache, "gmemstress", "kernels")


def fetch_kernel():
    """Returns dict(release, version, kernel, modules) of Debian's newest
    kernel, in the cache `gmemstress lab` itself uses (fetched once per machine)."""
    require_host_tools()
    _, src, _ = env()
    script = os.path.join(src, "scripts", "fetch-lab-kernel.sh")
    t0 = time.monotonic()
    p = subprocess.run([script, "--dest", kernel_cache_dir()], capture_output=True, text=True,
                       timeout=900)
    if p.returncode != 0:
        skip("cannot obtain Debian's kernel (network?): "
             + (p.stderr.strip().splitlines() or ["no output"])[-1])
    info = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    for key in ("release", "kernel", "modules"):
        if key not in info:
            fail(f"fetch-lab-kernel.sh printed no {key}=: {p.stdout!r}")
    print(f"kernel: {info['release']} ({info.get('version')}) in {time.monotonic() - t0:.1f} s: "
          f"{info['kernel']}")
    return info


def qemu_processes_under(path):
    """PIDs of processes whose command line mentions path (our private TMPDIR)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if path in cmd:
            found.append(int(pid))
    return found


class Lab:
    """Runs `gmemstress lab` with a private TMPDIR, so that QEMU processes of
    this test (and only those) can be recognised and must be gone after."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="gms-labtest-")

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self):
        e = dict(os.environ)
        e["TMPDIR"] = self.tmp
        return e

    def path(self, name):
        return os.path.join(self.tmp, name)

    def run(self, args, timeout=600):
        gms, _, _ = env()
        cmd = [gms, "lab"] + args
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env())
        except subprocess.TimeoutExpired as e:
            self.assert_no_stray_qemu()
            fail(f"gmemstress lab did not finish within {timeout} s (its own --timeout should "
                 f"have stopped it): {e.stderr}")
        p.elapsed = time.monotonic() - t0
        print(f"exit {p.returncode} after {p.elapsed:.1f} s")
        print("--- stderr ---\n" + p.stderr[-6000:] + "--- end ---", flush=True)
        self.assert_no_stray_qemu()
        return p

    def run_plant(self, plant, args, unplanted_args, prefix, timeout):
        """One `gmemstress lab` run with `plant` switched on (None: `unplanted_args`
        name the kernel instead). Returns (report, exit status); no report fails."""
        name = plant or "none"
        report = self.path(f"{prefix}-{name}.json")
        args = args + ["-r", report] + (["--plant", plant] if plant else unplanted_args)
        p = self.run(args, timeout=timeout)
        if not os.path.exists(report):
            fail(f"plant {name}: no report (exit {p.returncode}); stderr: {p.stderr[-2000:]}")
        return load_json(report), p.returncode

    def run_gms(self, args, extra_env=None, timeout=120):
        """Any gmemstress command (not `lab`), with this test's TMPDIR."""
        gms, _, _ = env()
        e = self.env()
        e.update(extra_env or {})
        print("$ " + " ".join(f"{k}={v}" for k, v in (extra_env or {}).items()) + " "
              + " ".join([gms] + args), flush=True)
        p = subprocess.run([gms] + args, capture_output=True, text=True, timeout=timeout, env=e)
        print(f"exit {p.returncode}\n--- stderr ---\n{p.stderr[-3000:]}--- end ---", flush=True)
        return p

    def start(self, args):
        gms, _, _ = env()
        cmd = [gms, "lab"] + args
        print("$ " + " ".join(cmd) + " &", flush=True)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env())

    def assert_no_stray_qemu(self):
        # The workdir lives in our TMPDIR and is on QEMU's command line.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and qemu_processes_under(self.tmp):
            time.sleep(0.1)
        left = qemu_processes_under(self.tmp)
        if left:
            for pid in left:  # do not leave them running after the test either
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            fail(f"QEMU processes left running after gmemstress lab exited: {left}")
        print("ok: no QEMU process left behind")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def check_schema(report):
    """The report, "lab" object included, still validates against the schema."""
    _, src, _ = env()
    schema_path = os.path.join(src, "reports", "schema", "report.schema.json")
    try:
        import jsonschema
    except ImportError:
        print("note: python3-jsonschema not installed; schema not checked")
        return
    with open(schema_path) as f:
        schema = json.load(f)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(report), key=str)
    check(not errors, f"the report validates against {os.path.relpath(schema_path, src)} "
                      f"({[e.message for e in errors[:3]]})")


def check_lab_section(report, kernel, rc):
    check_schema(report)
    lab = report.get("lab")
    check(isinstance(lab, dict), "the report has a top-level 'lab' object")
    check(lab.get("kernel_release") == kernel["release"],
          f"lab.kernel_release is the fetched kernel's ({lab.get('kernel_release')})")
    check(os.path.samefile(lab.get("kernel"), kernel["kernel"]), "lab.kernel names the bzImage")
    check(lab.get("accel") in ("kvm", "tcg"), f"lab.accel is kvm or tcg ({lab.get('accel')})")
    check(lab.get("cpus", 0) >= 1 and lab.get("memory_bytes", 0) >= 512 << 20,
          "lab.cpus and lab.memory_bytes recorded")
    check(lab.get("boot_s", 0) > 0, f"lab.boot_s recorded ({lab.get('boot_s')})")
    check(lab.get("guest_exit_status") == rc,
          f"lab.guest_exit_status ({lab.get('guest_exit_status')}) is the command's exit status ({rc})")
    return lab


def check_probes(report):
    """fentry/kprobe in use and the secretmem calibration saw direct-map pairs."""
    probes = report.get("probes", {})
    attached = [a for a in probes.get("attach_points", []) if a.get("attached")]
    strong = sorted({a.get("backend") for a in attached} & {"fentry", "kprobe"})
    check(strong, f"the fentry or kprobe backend was used (attached backends: "
                  f"{sorted({a.get('backend') for a in attached})})")
    cal = probes.get("calibration", {})
    print(f"calibration: {cal}")
    check(cal.get("ran") is True and cal.get("ok") is True,
          f"the secretmem calibration ran and succeeded ({cal.get('reason')})")
    zaps, restores = cal.get("zaps_matched", 0), cal.get("restores_matched", 0)
    check(zaps > 0 and zaps == restores,
          f"the calibration observed direct-map zap/restore pairs ({zaps} zaps, {restores} restores)")
    check(cal.get("pages") in (None, zaps),
          f"every calibration page was zapped and restored ({cal.get('pages')} pages)")


def invariant(report, name):
    for inv in report.get("invariants", []):
        if inv.get("name") == name:
            print(f"invariant {name}: {inv.get('verdict')} [{inv.get('backend')}] "
                  f"{inv.get('reason')} {inv.get('evidence')}")
            return inv
    fail(f"the report has no '{name}' invariant ({[i.get('name') for i in report.get('invariants', [])]})")


def check_invariants(report, require_exact_pages=True):
    """uptodate and page-cache invariants verified, with event counts that match
    what the workloads say they did (recomputed here from the workloads).
    require_exact_pages=False: the profile's workloads predict files, not pages
    (conformance: 62 checks touch pages in ways not worth modelling); the file
    count must still match and every page added must have been removed."""
    for inv in report.get("invariants", []):
        check(inv.get("verdict") != "violated",
              f"invariant {inv.get('name')} not violated ({inv.get('violations')})")

    pc = invariant(report, "page_cache_balance")
    check(pc.get("verdict") == "verified", f"page_cache_balance verified ({pc.get('reason')})")
    ev = pc.get("evidence", {})
    check(ev.get("lost_events", 0) == 0, "no probe events lost (page cache)")
    ran = [w for w in report.get("workloads", []) if w.get("outcome") != "skip"]
    no_files = [w["name"] for w in ran if "gmem_files" not in w.get("counters", {})]
    check(not no_files, f"every workload that ran reports how many guest_memfd files it created "
                        f"(missing in: {no_files})")
    files = sum(w["counters"]["gmem_files"] for w in ran)
    check(files > 0 and ev.get("files_announced") == files,
          f"guest_memfd files seen by the probes ({ev.get('files_announced')}) == created by the "
          f"workloads ({files})")
    # Workloads that know exactly what they added to (and removed from) the page
    # cache say so; a racing one (e.g. punch-hole racing faults) cannot.
    touching = [w for w in ran if w["counters"]["gmem_files"] > 0]
    exact = [w for w in touching if "expected_pages_added" in w["counters"]
             and "expected_pages_removed" in w["counters"]]
    inexact = [w["name"] for w in touching if w not in exact]
    added = sum(w["counters"]["expected_pages_added"] for w in exact)
    removed = sum(w["counters"]["expected_pages_removed"] for w in exact)
    check(ev.get("pages_added", 0) > 0, f"the probes saw page-cache adds ({ev.get('pages_added')})")
    check(ev.get("pages_added") == ev.get("pages_removed") and ev.get("folios_live_at_end") == 0,
          "every page added to a guest_memfd page cache was removed by the end")
    if not inexact:
        check(ev.get("pages_added") == added and ev.get("pages_removed") == removed,
              f"page-cache adds/removes seen by the probes ({ev.get('pages_added')}/"
              f"{ev.get('pages_removed')}) == the workloads' ({added}/{removed})")
    else:
        if require_exact_pages:
            check(exact, f"some workloads account their page-cache pages exactly "
                         f"({[w['name'] for w in exact]})")
        check(ev.get("pages_added") >= added and ev.get("pages_removed") >= removed,
              f"page-cache adds/removes seen by the probes ({ev.get('pages_added')}/"
              f"{ev.get('pages_removed')}) include the exactly accounted workloads' ({added}/"
              f"{removed}); not exact because of {inexact}")

    up = invariant(report, "uptodate")
    check(up.get("verdict") == "verified", f"uptodate verified ({up.get('reason')})")
    ev = up.get("evidence", {})
    check(ev.get("lost_events", 0) == 0, "no probe events lost (uptodate)")
    handed = ev.get("handed_to_guest", 0) + ev.get("handed_to_user", 0)
    check(handed > 0, f"pages handed out to the guest or to user mappings were observed ({handed})")
    check(ev.get("not_uptodate", 0) == 0, "no page handed out without being uptodate")
    verified = sum(w.get("verification", {}).get("pages_checked", 0)
                   for w in report.get("workloads", []))
    check(ev.get("pages_verified_by_workloads") == verified,
          f"uptodate evidence counts the workloads' verified pages ({ev.get('pages_verified_by_workloads')}"
          f" == {verified})")


def check_kernel_log(report):
    kl = report.get("kernel_log")
    if isinstance(kl, dict):
        available, findings = kl.get("available"), kl.get("findings", [])
    else:  # a bare list of findings
        available, findings = report.get("kernel_log_available", True), kl or []
    check(available is True, "the guest's kernel log was read")
    check(findings == [], f"the kernel log had no findings ({findings[:3]})")


def selected(cases, env_var):
    """The cases whose plant (first field; None is "none") the comma list in
    `env_var` names, all when it is unset: for running one case while working on it."""
    only = os.environ.get(env_var)
    return [c for c in cases if not only or (c[0] or "none") in only.split(",")]


def kernel_findings(report, kind):
    return [f for f in report["kernel_log"]["findings"] if f["kind"] == kind]
