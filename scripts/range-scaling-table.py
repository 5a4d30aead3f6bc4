#!/usr/bin/env python3
"""Prints the Markdown rows of docs/RANGE_SCALING.md's "Measured" table from
range-scaling reports, so that the figures there can be regenerated from a
rerun (the commands are in that document).

Usage: scripts/range-scaling-table.py REPORT.json [REPORT.json ...]

One row per operation of each report's range-scaling workload: where it ran
(host or the QEMU lab, and the lab's accelerator), the kernel, the sizes, the
linear fit's ns/page, the log-log exponent, the class (or why there is none),
the projected sizes for a guest-visible stall and a soft lockup, and how many
repetitions were outliers. Exit status 1 when a report has no range-scaling
section.
"""
import json
import sys


def size(b):
    if b is None:
        return "never"
    for unit, n in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= n:
            v = b / n
            return f"{v:.0f} {unit}" if v >= 100 or v == int(v) else f"{v:.1f} {unit}"
    return f"{b} B"


def projection(o, name):
    for p in o.get("projections", []):
        if p["threshold"] == name:
            if p["bytes"] is not None:
                return f"{size(p['bytes'])} ({p['basis']})"
            return "never" if p["pages"] is None else "beyond 2^63 bytes"
    return "–"


def where(rep):
    lab = rep.get("lab")
    if isinstance(lab, dict):
        return f"lab ({lab.get('accel', '?')}, {lab.get('cpus', '?')} vCPUs)"
    return "host"


def rows(path):
    with open(path) as f:
        rep = json.load(f)
    kernel = (rep.get("lab") or {}).get("kernel_release") or rep.get("host", {}).get(
        "kernel_release", "?")
    found = False
    for w in rep.get("workloads", []):
        rs = w.get("range_scaling")
        if not rs:
            continue
        found = True
        for o in rs["ops"]:
            head = f"| {kernel} | {where(rep)} | {o['name']} |"
            if o["skip_reason"]:
                print(f"{head} skipped: {o['skip_reason']} | | | | | | |")
                continue
            s = o["samples"]
            sizes = f"{size(s[0]['range_bytes'])}..{size(s[-1]['range_bytes'])} ({len(s)})" \
                if s else "none"
            lin = f"{o['linear']['slope_ns_per_page']:.0f}" if o["linear"] else "–"
            exp = f"{o['power']['exponent']:.2f}" if o["power"] else "–"
            growth = o["growth"] or f"unclassified ({o['growth_reason']})"
            print(f"{head} {sizes} | {lin} | {exp} | {growth} | "
                  f"{projection(o, 'guest_stall')} | {projection(o, 'soft_lockup')} | "
                  f"{len(o['outliers'])} |")
        print(f"<!-- {path}: {rep.get('timestamp')}, verdict {rep.get('verdict')}, "
              f"workload {w.get('duration_s', 0):.0f} s, reps {rs['reps']}, "
              f"soft lockup {rs['soft_lockup_s']:g} s, stall {rs['stall_s']:g} s; "
              f"{'; '.join(rs['notes'])} -->")
    return found


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| kernel | where | operation | sizes | ns/page | exponent | class | stall at | "
          "soft lockup at | outliers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = all([rows(p) for p in sys.argv[1:]])
    if not ok:
        print("range-scaling-table: a report has no range-scaling workload", file=sys.stderr)
    sys.exit(0 if ok else 1)


main()
