#!/usr/bin/env python3
"""invalidate_lock hold times and whole kernel splats, on real kernels.

The test kernel's plants (lab/patches/gmemstress-plants.patch):
- long-hold (kvm.gms_plant=0x10): msleep(3000) under invalidate_lock in punch
  hole, twice. The kernel prints nothing (the holder sleeps), so only the
  invalidate_lock probes can tell: the invariant invalidate_lock_hold must be
  violated naming punch_hole, ~3 s, with the holder's stack and syscall, and
  the run must exit 1.
- warn (0x20): a WARN_ONCE in punch hole. The report's kernel-log finding
  must carry the whole splat (headline, stack) attributed to punch_hole.
- no plant: holds measured, none over the threshold, /proc/lock_stat's row of
  the same lock class beside them (the test kernel has LOCK_STAT), exit 0.
And Debian's kernel (no lockdep): the same probes measure, lock_stat is
absent with its reason.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_schema, env, fail, fetch_kernel,  # noqa: E402
                        require_host_tools)

THRESHOLD_NS = 1_000_000_000


def invariant(r, name):
    for i in r.get("invariants", []):
        if i["name"] == name:
            return i
    fail(f"the report has no invariant {name}: {[i['name'] for i in r.get('invariants', [])]}")


def run(lab, name, args):
    _, src, _ = env()
    report = lab.path(f"locks-{name}.json")
    profile = os.path.join(src, "tests", "data", "lab-locks.toml")
    p = lab.run(["-p", profile, "-r", report, "--timeout", "10m"] + args, timeout=1500)
    if not os.path.exists(report):
        fail(f"{name}: no report (exit {p.returncode})")
    with open(report) as f:
        r = json.load(f)
    check_schema(r)
    return r, p.returncode


def check_measured(name, r):
    locks = r.get("locks")
    check(isinstance(locks, dict), f"{name}: the report has a locks section")
    check(locks["attached"], f"{name}: the invalidate_lock probes attached ({locks['reason']})")
    for fn in ("down_write", "down_read", "up_write", "up_read", "kvm_gmem_fallocate",
               "kvm_gmem_release"):
        check(fn in locks["functions"], f"{name}: {fn} probed ({locks['functions']})")
    ops = {(o["operation"], o["mode"]): o for o in locks["by_operation"]}
    punch = ops.get(("punch_hole", "write"))
    check(punch and punch["hold_ns"]["count"] > 0,
          f"{name}: punch_hole write holds measured ({sorted(ops)})")
    check(("release", "write") in ops, f"{name}: the file's release took it too ({sorted(ops)})")
    check(locks["anomalies"]["lost_events"] == 0, f"{name}: no lock record lost")
    print(f"{name}: punch_hole hold p50 {punch['hold_ns']['p50']} ns, p99 "
          f"{punch['hold_ns']['p99']} ns, max {punch['hold_ns']['max']} ns; "
          f"{locks['holds']} holds")
    return locks


def expect_clean(r, rc, lock_stat):
    name = "no plant" if lock_stat else "Debian's kernel"
    locks = check_measured(name, r)
    inv = invariant(r, "invalidate_lock_hold")
    check(inv["verdict"] == "verified", f"{name}: invalidate_lock_hold verified "
          f"({inv['verdict']}: {inv['reason']})")
    check(locks["over_threshold_count"] == 0, f"{name}: no hold over the threshold")
    check(rc == 0, f"{name}: exit 0 (got {rc}; {r['verdict']})")
    ls = locks["lock_stat"]
    if lock_stat:
        check(ls["available"], f"test kernel (LOCK_STAT): lock_stat's row beside ours ({ls})")
        check(ls["class_name"].startswith("mapping.invalidate_lock"),
              f"lock_stat class {ls['class_name']}")
        acq = sum(row["acquisitions"] for row in ls["rows"])
        check(acq >= locks["holds"], f"lock_stat counted at least our holds ({acq} >= "
              f"{locks['holds']})")
        print(f"lock_stat {ls['class_name']}: {ls['rows']}")
    else:
        check(not ls["available"] and "LOCK_STAT" in ls["reason"],
              f"Debian's kernel: lock_stat absent, saying why ({ls['reason']})")


def expect_long_hold(r, rc):
    locks = check_measured("long-hold", r)
    inv = invariant(r, "invalidate_lock_hold")
    check(inv["verdict"] == "violated", f"long-hold: invalidate_lock_hold violated "
          f"({inv['verdict']}: {inv['reason']})")
    check(any("punch_hole (write)" in v for v in inv["violations"]),
          f"long-hold: the violation names punch_hole ({inv['violations'][:2]})")
    over = locks["over_threshold"]
    check(locks["over_threshold_count"] == 2, f"long-hold: the plant's 2 holds are over the "
          f"threshold ({locks['over_threshold_count']})")
    for h in over:
        check(h["operation"] == "punch_hole" and h["mode"] == "write",
              f"long-hold: held by {h['operation']} ({h['mode']}), {h['hold_ns'] / 1e9:.3f} s")
    # Two msleep(3000): at least 6 s in all. Under TCG on a loaded host the
    # guest's clocks split them unevenly (1.87 s + 4.36 s was seen, lock_stat
    # agreeing) and a starved vCPU wakes late (3.9 s + 11.2 s), so the sum is
    # checked from below.
    total = sum(h["hold_ns"] for h in over)
    check(5e9 <= total <= 120e9, f"long-hold: the two holds last >= ~2 x 3 s "
          f"({total / 1e9:.3f} s)")
    h = max(over, key=lambda x: x["hold_ns"])
    check(h["syscall"] == "fallocate", f"long-hold: the syscall is fallocate ({h['syscall']})")
    check(any(f.startswith("kvm_gmem_fallocate") or f.startswith("kvm_gmem_punch_hole")
              for f in h["stack"]), f"long-hold: the stack names the punch ({h['stack'][:6]})")
    check(not any(f.startswith("bpf_") for f in h["stack"]),
          "long-hold: the stack is the holder's (the probes' own frames left out)")
    check(locks["longest"]["operation"] == "punch_hole", "long-hold: punch_hole held it longest")
    check(not r["kernel_log"]["findings"], f"long-hold: the kernel printed nothing "
          f"({r['kernel_log']['findings'][:1]})")
    check(rc == 1, f"long-hold: exit 1, failures found (got {rc})")
    print(f"evidence: {inv['violations'][0]}\n  stack: {h['stack'][:8]}")


def expect_warn(r, rc):
    f = [x for x in r["kernel_log"]["findings"] if x["kind"] == "WARNING"]
    check(f, f"warn: a WARNING finding ({r['kernel_log']['findings'][:2]})")
    w = f[0]
    text = "\n".join(w["splat"])
    check("gmemstress plant: punch hole" in text, "warn: the splat has the WARN's message")
    check(len(w["splat"]) >= 10 and "kvm_gmem_fallocate" in text,
          f"warn: the whole splat, stack included ({len(w['splat'])} lines)")
    check("punch_hole" in w["operations"], f"warn: attributed to punch_hole ({w['operations']})")
    check(w["task"].startswith("gmemstress:"), f"warn: the task is named ({w['task']})")
    check(rc == 1, f"warn: exit 1, failures found (got {rc})")
    print("evidence:\n  " + "\n  ".join(w["splat"][:14]))


def main():
    require_host_tools()
    only = os.environ.get("GMS_LOCK_CASES")  # e.g. "long-hold" while working on one
    lab = Lab()
    cases = [
        ("none", ["--offline", "--test-kernel"], lambda r, rc: expect_clean(r, rc, lock_stat=True)),
        ("long-hold", ["--offline", "--plant", "long-hold"], expect_long_hold),
        ("warn", ["--offline", "--plant", "warn"], expect_warn),
        ("debian", None, lambda r, rc: expect_clean(r, rc, lock_stat=False)),
    ]
    try:
        for name, args, expect in cases:
            if only and name not in only.split(","):
                continue
            print(f"=== {name} ===", flush=True)
            if args is None:  # Debian's newest kernel, as `gmemstress lab` fetches it
                args = ["--kernel", fetch_kernel()["kernel"]]
            r, rc = run(lab, name, args)
            expect(r, rc)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
