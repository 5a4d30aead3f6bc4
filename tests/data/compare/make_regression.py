#!/usr/bin/env python3
"""Makes the synthetic regression of tests/data/compare from real lab reports.

    tests/data/compare/make_regression.py new-1.json new-2.json new-3.json

writes regressed-1.json ... next to them: each a copy of new-N.json with one
documented edit, so `gmemstress compare --base base-*.json --new regressed-*.json`
must find every kind of regression:

- all three: the busiest operation of the first workload that ran gets twice
  slower (every latency bucket [lo, hi] becomes [2 lo, 2 hi + 1]: the same
  bucket one log2 bin up; min, max, sum and percentiles follow), and that
  workload half as fast (its duration doubles, its timeline is stretched).
  The slowdown is beyond the base runs' spread; the halved throughput is not
  (their throughput varies several-fold): compare must say so;
- regressed-2.json: a kernel-log WARNING no base report has;
- regressed-3.json: its first verified invariant becomes violated.

The verdict is recomputed (fail when there is a finding or a violation).
"""
import json
import math
import os
import sys

MARK = "synthetic: tests/data/compare/make_regression.py"


def percentile(buckets, total, mx, q):
    rank = min(max(math.ceil(q * total), 1), total)
    seen = 0
    for lo, hi, n in buckets:
        seen += n
        if seen >= rank:
            return min(hi, mx)
    return mx


def slow_down(op):
    h = op["latency_ns"]
    h["buckets"] = [[2 * lo, 2 * hi + 1, n] for lo, hi, n in h["buckets"]]
    for k in ("min", "max", "sum"):
        h[k] *= 2
    h["mean"] *= 2
    for key, q in (("p50", .5), ("p90", .9), ("p99", .99), ("p999", .999)):
        h[key] = percentile(h["buckets"], h["count"], h["max"], q)


def stretch(timeline):
    counts = []
    for c in timeline["counts"]:
        counts += [c // 2, c - c // 2]
    timeline["counts"] = counts


def regress(rep, index):
    w = next(w for w in rep["workloads"] if any(o["latency_ns"]["count"] for o in w["ops"].values()))
    busiest = max(w["ops"].values(), key=lambda o: o["latency_ns"]["count"])
    slow_down(busiest)
    w["duration_s"] *= 2
    for op in w["ops"].values():
        stretch(op["timeline"])
    if index == 2:
        rep["kernel_log"]["findings"].append({
            "kind": "WARNING",
            "line": "WARNING: CPU: 1 PID: 4242 at virt/kvm/guest_memfd.c:512 "
                    f"kvm_gmem_punch_hole+0x1a/0x2b0 [kvm] ({MARK})",
            "timestamp_us": 1234567})
    if index == 3:
        inv = next(i for i in rep["invariants"] if i["verdict"] == "verified")
        inv["verdict"] = "violated"
        inv["violations"] = [f"file 1: a page left in the page cache after the punch ({MARK})"]
    if rep["kernel_log"]["findings"] or any(i["verdict"] == "violated" for i in rep["invariants"]):
        rep["verdict"] = "fail"
    return rep


def main(paths):
    for i, path in enumerate(paths, 1):
        with open(path) as f:
            rep = json.load(f)
        out = os.path.join(os.path.dirname(path), f"regressed-{i}.json")
        with open(out, "w") as f:
            json.dump(regress(rep, i), f, indent=2)
            f.write("\n")
        print(out)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1:])
