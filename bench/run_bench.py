#!/usr/bin/env python3
"""gmemstress vs. minimal C baselines, side by side in one run.

For each benchmark, runs the C baseline and gmemstress alternately REPS times
(so drift on the machine hits both alike) doing the same work for the same
time, and reports throughput and the gmemstress/baseline ratio (median).

Usage: bench/run_bench.py [--build build] [--reps 5] [--seconds 3]
                          [--only host|guest|callscope]

--only callscope: the watchdog's cost (docs/STALLS.md). host-fault with the
call scopes off (GMS_BENCH_NO_CALLSCOPE=1: every scope is a null check) and
on, alternately; the ratio is on/off. Host-fault makes two scoped accesses
per touch, the most of any workload.

The cost of the probes (off vs. on) is measured by `gmemstress probe-cost`
(docs/PROBES.md), on the host and in the lab.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def gms_throughput(gms, profile, seconds, ops_keys, per_bytes=None, env=None):
    """Ops/s of the first workload: the summed `count` of ops_keys, or with
    per_bytes their summed `bytes` / per_bytes (e.g. pages of guest_round).
    env: variables added to gmemstress's environment."""
    with tempfile.TemporaryDirectory() as d:
        rep = os.path.join(d, "r.json")
        subprocess.run([gms, "run", "--profile", profile, "--set", f"workload.0.duration={seconds}",
                        "--report", rep, "--quiet"], check=False, capture_output=True,
                       env={**os.environ, **(env or {})})
        with open(rep) as f:
            r = json.load(f)
    w = r["workloads"][0]
    if w["outcome"] not in ("pass",):
        sys.exit(f"gmemstress {profile}: workload {w['outcome']}: {w['reason']}")
    missing = [k for k in ops_keys if k not in w["ops"]]
    if missing:
        sys.exit(f"gmemstress {profile}: report has no op {missing} (ops: {sorted(w['ops'])})")
    if per_bytes:
        n = sum(w["ops"][k]["bytes"] for k in ops_keys) / per_bytes
    else:
        n = sum(w["ops"][k]["count"] for k in ops_keys)
    return n / w["duration_s"]


def baseline_throughput(exe, args, key):
    p = subprocess.run([exe, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{exe} failed ({p.returncode}): {p.stderr}{p.stdout}")
    r = json.loads(p.stdout)
    return r[key] / r["seconds"]


def compare(name, unit, reps, run_a, run_b, labels=("baseline", "gmemstress")):
    a, b = [], []
    for i in range(reps):
        a.append(run_a())
        b.append(run_b())
        print(f"  {name} rep {i + 1}: {labels[0]} {a[-1]:,.0f} {unit}, "
              f"{labels[1]} {b[-1]:,.0f} {unit}", file=sys.stderr)
    ratios = [y / x for x, y in zip(a, b)]
    ma, mb, mr = statistics.median(a), statistics.median(b), statistics.median(ratios)
    print(f"| {name} | {ma:,.0f} {unit} | {mb:,.0f} {unit} | {mr:.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}) |")
    return mr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--only", choices=["host", "guest", "callscope"])
    a = ap.parse_args()
    gms = os.path.join(a.build, "cli", "gmemstress")
    need = [gms] + [os.path.join(a.build, "bench", f"baseline_{b}_fault") for b in ("host", "guest")
                    if a.only in (None, b)]
    if a.only == "callscope":
        print(f"| benchmark | call scopes off (median) | on (median) | ratio on/off "
              f"(median of {a.reps}) |")
        print("| --- | --- | --- | --- |")
        host = os.path.join(HERE, "host-fault.toml")
        keys = ["fault_read", "fault_write"]
        compare("host-fault, 2 threads, 16 MiB", "touches/s", a.reps,
                lambda: gms_throughput(gms, host, a.seconds, keys,
                                       env={"GMS_BENCH_NO_CALLSCOPE": "1"}),
                lambda: gms_throughput(gms, host, a.seconds, keys),
                labels=("scopes off", "scopes on"))
        return
    missing = [p for p in need if not os.access(p, os.X_OK)]
    if missing:
        sys.exit(f"not built: {', '.join(missing)} (ninja -C {a.build} gmemstress "
                 "baseline_host_fault baseline_guest_fault)")
    print(f"| benchmark | baseline (median) | gmemstress (median) | ratio (median of {a.reps}) |")
    print("| --- | --- | --- | --- |")
    if a.only in (None, "host"):
        compare("host-fault, 2 threads, 16 MiB", "touches/s", a.reps,
                lambda: baseline_throughput(os.path.join(a.build, "bench", "baseline_host_fault"),
                                            ["16", "2", str(a.seconds)], "touches"),
                lambda: gms_throughput(gms, os.path.join(HERE, "host-fault.toml"), a.seconds,
                                       ["fault_read", "fault_write"]))
    if a.only in (None, "guest"):
        # Pages of completed guest batches on both sides: gmemstress records one
        # guest_round op per batch with bytes = pages * 4096.
        compare("guest-fault, 1 VM, 1 vCPU, 16 MiB", "pages/s", a.reps,
                lambda: baseline_throughput(os.path.join(a.build, "bench", "baseline_guest_fault"),
                                            ["16", str(a.seconds)], "pages"),
                lambda: gms_throughput(gms, os.path.join(HERE, "guest-fault.toml"), a.seconds,
                                       ["guest_round"], per_bytes=4096))


if __name__ == "__main__":
    main()
