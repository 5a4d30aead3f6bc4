#!/usr/bin/env python3
"""Never hang, always say what is stuck (issue 11, item 6), on real kernels.

1. The test kernel with the long-hold plant (lab/patches/gmemstress-plants.patch:
   msleep(kvm.gms_plant_hold_ms) with invalidate_lock held in punch hole),
   the first punch held for 45 s: punch-hole with run.stall_threshold 5s,
   duration 8s, grace 5s. The watchdog must report the stall while it lasts
   (on stderr, and the console marker the lab follows), the run must end at
   its duration plus grace without waiting for the stuck punch: exit 1, the
   report written by the watchdog, marked incomplete, with a stall of
   fallocate(PUNCH_HOLE) still running, in D state, its kernel stack through
   msleep and guest_memfd's punch path; and the lab must end long before the
   hold does (and long before its --timeout).
2. The same kernel with a 9 s hold in a 20 s run: the stall is reported and
   then seen to end; the run completes on its own (not incomplete), exit 1.
3. A guest that stops answering (Debian's kernel; once its run has started
   the test freezes QEMU with SIGSTOP: no panic, no output) is told
   apart from a panic and a boot failure: exit 1, lab failure
   `unresponsive`, a report saying so with the last console lines, well
   before --timeout.
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_schema, fail, fetch_kernel, load_json,  # noqa: E402
                        qemu_processes_under, require_host_tools)

HOLD_S = 45
DURATION_S, GRACE_S, THRESHOLD_S = 8, 5, 5


def punch_stall(report):
    for st in report.get("stalls", []):
        if st["operation"] == "fallocate(PUNCH_HOLE)":
            return st
    return None


def stack_shows_the_hold(st):
    frames = st.get("kernel_stack", [])
    return (any(f.startswith("msleep") for f in frames)
            and any("kvm_gmem" in f for f in frames)), frames


def run_held(lab, hold_ms, duration_s, name):
    report_path = lab.path(f"{name}.json")
    args = ["--offline", "--plant", "long-hold",
            "--append", f"kvm.gms_plant_hold_ms={hold_ms} kvm.gms_plant_holds=1",
            "--timeout", "900s", "--report", report_path,
            "--keep-console", lab.path(f"{name}-console.log"),
            "-p", "punch-race", "--",
            "--duration", f"{duration_s}s",
            "--set", 'workload.punch-hole.duration="0s"',
            "--set", f'run.stall_threshold="{THRESHOLD_S}s"',
            "--set", f'run.grace="{GRACE_S}s"',
            "--probes", "off"]
    p = lab.run(args, timeout=1200)
    check(os.path.exists(report_path), f"{name}: a report was written ({p.stderr[-500:]})")
    report = load_json(report_path)
    check_schema(report)
    return p, report


def case_held(lab):
    """1. a punch that never returns in time."""
    p, r = run_held(lab, HOLD_S * 1000, DURATION_S, "held")
    check(p.returncode == 1, f"a stall is a kernel problem: exit 1 (got {p.returncode})")
    check(r["verdict"] == "fail", f"verdict fail ({r['verdict']})")
    check(r.get("lab", {}).get("plants") == ["long-hold"], "the long-hold plant was on")
    check(r["incomplete"] is True, "the report says the run did not end by itself")
    print(f"incomplete: {r['incomplete_reason']}")
    st = punch_stall(r)
    check(st is not None, f"a stall of fallocate(PUNCH_HOLE) is reported "
                          f"({[s['operation'] for s in r['stalls']]})")
    check(not st["ended"], "the punch was still stuck when the run was abandoned")
    check(st["duration_s"] >= THRESHOLD_S, f"it lasted over the threshold ({st['duration_s']})")
    check(st["duration_s"] < HOLD_S, f"and the report did not wait for it ({st['duration_s']} s)")
    check(st["task_state"].startswith("D"), f"the puncher sleeps uninterruptibly "
                                            f"({st['task_state']})")
    ok, frames = stack_shows_the_hold(st)
    check(ok, f"its kernel stack shows the planted msleep in guest_memfd's punch ({frames})")
    print("stack of the stuck punch:\n  " + "\n  ".join(frames))
    check("offset=" in st["args"] and "len=" in st["args"], f"its arguments ({st['args']})")
    check(st["thread"] == "puncher", f"the thread is named ({st['thread']})")
    check(st["workload"] == "punch-hole", f"and its workload ({st['workload']})")
    check(re.search(r"gmemstress: STALL: thread \d+ \(puncher\) in fallocate\(PUNCH_HOLE\)",
                    p.stderr), "the stall was reported on stderr while it lasted")
    check("guest_stall" in r["lab"], "the lab saw the guest's stall marker on the console")
    dur = r["duration_s"]
    check(dur <= DURATION_S + GRACE_S + 3, f"the run ended within duration + grace "
                                           f"({dur:.1f} s <= {DURATION_S}+{GRACE_S}+3)")
    run_s = r["lab"].get("run_s")
    check(run_s is not None and run_s < HOLD_S - 5,
          f"the guest finished before the hold ended (run_s {run_s}, hold {HOLD_S} s)")
    wl = {w["label"]: w for w in r["workloads"]}
    check(wl.get("punch-hole", {}).get("outcome") == "fail",
          f"the workload in progress failed ({wl.get('punch-hole', {}).get('reason')})")
    inv = {i["verdict"] for i in r["invariants"]}
    check(inv <= {"incomplete"}, f"no invariant claims a verdict from an abandoned run ({inv})")


def case_ends(lab):
    """2. a hold that ends: reported while it lasts, then its end."""
    p, r = run_held(lab, 9000, 20, "ends")
    check(p.returncode == 1, f"a stall that ended is still a finding: exit 1 ({p.returncode})")
    check(r["incomplete"] is False, f"the run ended by itself ({r['incomplete_reason']})")
    st = punch_stall(r)
    check(st is not None and st["ended"], f"the punch's stall is reported, ended ({st})")
    # Under TCG on a loaded host the guest measured a 9 s msleep as 5.4 s once
    # (not understood; docs/STALLS.md): the bound is the threshold, not 9 s.
    check(THRESHOLD_S <= st["duration_s"] <= 12,
          f"it lasted at least the threshold and at most the 9 s hold plus slack "
          f"({st['duration_s']})")
    ok, frames = stack_shows_the_hold(st)
    check(ok, f"its stack was taken while it lasted ({frames})")
    check("gmemstress: stall ended" in p.stderr, "its end was reported on stderr")


def qemu_pids(lab):
    pids = []
    for pid in qemu_processes_under(lab.tmp):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if b"qemu-system" in argv0:
            pids.append(pid)
    return pids


def case_silent(lab):
    """3. a guest that stops answering: once its run has started, the QEMU
    process is frozen (SIGSTOP): no console, no heartbeat, no panic, as a
    guest hung with interrupts off looks from outside. (Busy loops inside
    the guest did not silence it: the kernel kept the heartbeat running.)"""
    fetch_kernel()
    report_path = lab.path("silent.json")
    proc = lab.start(["--profile", "smoke", "--timeout", "600s", "--unresponsive", "20s",
                      "--report", report_path, "--", "--probes", "off", "--duration", "120s"])
    stopped_at, err = None, []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:  # until the guest's run reports progress
            err.append(line)
            if "lab: guest: [" in line or time.monotonic() > deadline:
                break
        pids = qemu_pids(lab)
        check(pids, f"the guest's run started and its QEMU is found ({''.join(err[-3:])})")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            rest = proc.communicate(timeout=300)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("gmemstress lab did not notice the frozen guest within 300 s")
        elapsed = time.monotonic() - stopped_at
    finally:
        for pid in qemu_pids(lab):  # never leave a stopped QEMU behind
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
    stderr = "".join(err) + rest
    print("--- stderr ---\n" + stderr[-4000:] + "--- end ---", flush=True)
    check(proc.returncode == 1, f"an unresponsive guest is a kernel problem: exit 1 "
          f"({proc.returncode})")
    check(elapsed < 20 + 60, f"told within --unresponsive of the freeze, not at --timeout "
          f"({elapsed:.0f} s)")
    check("the guest stopped answering" in stderr, "named on stderr")
    check("crashed" not in stderr, "not called a crash")
    lab.assert_no_stray_qemu()
    r = load_json(report_path)
    check_schema(r)
    check(r["lab"].get("failure") == "unresponsive", f"lab.failure ({r['lab'].get('failure')})")
    check(r["lab"].get("console_tail"), "the report carries the last console lines")
    kinds = [f["kind"] for f in r["kernel_log"]["findings"]]
    check("unresponsive" in kinds, f"a finding says unresponsive ({kinds})")
    check("panic" not in kinds, f"not a panic ({kinds})")
    check(r["verdict"] == "fail", f"verdict fail ({r['verdict']})")


def main():
    require_host_tools()
    only = os.environ.get("GMS_STALL_CASES")  # e.g. "held,silent" while working on one
    lab = Lab()
    try:
        for name, case in (("held", case_held), ("ends", case_ends), ("silent", case_silent)):
            if only and name not in only.split(","):
                continue
            print(f"=== {name} ===", flush=True)
            case(lab)
    finally:
        lab.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
