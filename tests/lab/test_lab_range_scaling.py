#!/usr/bin/env python3
"""The `range-scaling` profile in the lab on Debian's newest kernel: the sizes
grew geometrically from 1 MiB; punch hole, allocate and release were timed at
every size with a linear and a log-log fit each; punch hole is classified
linear (or n log n: what the exponent cannot tell apart), with a positive
ns/page and projections past the sizes measured; conversions skip with the
reason where the kernel has no private memory (Debian's has no
KVM_X86_SW_PROTECTED_VM); no finding: exit 0, verdict pass, no check failed,
nothing in the kernel log. Prints the measured slopes (docs/RANGE_SCALING.md)."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_kernel_log, check_lab_section,  # noqa: E402
                        fetch_kernel, load_json)

MiB = 1 << 20

kernel = fetch_kernel()
lab = Lab()
try:
    report_path = lab.path("range-scaling.json")
    p = lab.run(["--kernel", kernel["kernel"], "--memory", "4G", "--profile", "range-scaling",
                 "--timeout", "420s", "--report", report_path,
                 "--keep-console", lab.path("console.log")], timeout=500)
    print("--- guest stdout ---\n" + p.stdout + "--- end ---")
    check(os.path.exists(report_path), "the report came back to the host")
    report = load_json(report_path)
    if os.environ.get("GMS_KEEP_REPORT"):  # for docs/RANGE_SCALING.md's table
        shutil.copy(report_path, os.environ["GMS_KEEP_REPORT"])
    check_lab_section(report, kernel, p.returncode)
    ws = [w for w in report.get("workloads", []) if w.get("name") == "range-scaling"]
    check(len(ws) == 1, "the report has the range-scaling workload")
    w = ws[0]
    rs = w.get("range_scaling")
    check(isinstance(rs, dict), "the workload carries its range_scaling section")
    for n in rs.get("notes", []):
        print(f"note: {n}")
    check(rs.get("soft_lockup_s") == 2 * rs.get("watchdog_thresh_s", 0) > 0,
          f"soft-lockup threshold is 2 x watchdog_thresh ({rs.get('soft_lockup_s')} s, "
          f"{rs.get('watchdog_source')})")
    ops = {o["name"]: o for o in rs.get("ops", [])}
    print("ops: " + ", ".join(sorted(ops)))

    for name in ("punch_hole", "allocate", "release"):
        o = ops.get(name)
        check(o is not None and not o.get("skip_reason"), f"{name} was timed")
        sizes = [s["range_bytes"] for s in o["samples"]]
        print(f"{name}: sizes {[s // MiB for s in sizes]} MiB; linear {o.get('linear')}; "
              f"power {o.get('power')}; growth {o.get('growth')}; "
              f"projections {o.get('projections')}; outliers {o.get('outliers')}")
        check(sizes and sizes[0] == MiB, f"{name}: sizes start at 1 MiB")
        check(all(b == 2 * a for a, b in zip(sizes, sizes[1:])),
              f"{name}: sizes grew geometrically (x2)")
        check(len(sizes) >= 5 and sizes[-1] >= 16 * MiB,
              f"{name}: at least 5 sizes up to 16 MiB or more ({len(sizes)}, up to "
              f"{sizes[-1] // MiB} MiB)")
        check(all(len(s["ns"]) == rs["reps"] for s in o["samples"]),
              f"{name}: {rs['reps']} repetitions at every size")
        check(o.get("linear") and o.get("power"), f"{name}: linear and log-log fits exist")
        check(o.get("growth") in ("constant", "linear", "n log n"),
              f"{name}: classified, not superlinear ({o.get('growth')})")

    punch = ops["punch_hole"]
    check(punch["growth"] in ("linear", "n log n"),
          f"punch_hole grows linearly (exponent {punch['power']['exponent']:.2f}: "
          f"{punch['growth']})")
    check(punch["linear"]["slope_ns_per_page"] > 0,
          f"punch_hole costs {punch['linear']['slope_ns_per_page']:.1f} ns/page")
    largest = punch["samples"][-1]["range_bytes"]
    proj = {x["threshold"]: x for x in punch["projections"]}
    check("soft_lockup" in proj and "guest_stall" in proj,
          "punch_hole projects the soft-lockup and guest-stall sizes")
    check(proj["soft_lockup"]["bytes"] and proj["soft_lockup"]["bytes"] > largest,
          f"a {rs['soft_lockup_s']} s punch lies beyond the sizes measured "
          f"({proj['soft_lockup']['bytes'] / (1 << 30):.1f} GiB > {largest // MiB} MiB)")
    check(proj["soft_lockup"]["bytes"] > proj["guest_stall"]["bytes"],
          "the soft-lockup size is larger than the guest-stall size")

    for name in ("convert_to_private", "convert_to_shared"):
        o = ops.get(name)
        check(o is not None, f"{name} is in the report (run or skipped)")
        if o.get("skip_reason"):
            print(f"{name}: skipped: {o['skip_reason']}")
            check("PROTECTED" in o["skip_reason"] or "PRIVATE" in o["skip_reason"],
                  f"{name} says why it skipped")
        else:
            check(o.get("growth") in ("constant", "linear", "n log n"),
                  f"{name}: classified, not superlinear ({o.get('growth')})")

    bad = [c for c in w.get("checks", []) if c.get("outcome") not in ("pass", "skip")]
    check(not bad, f"no growth check failed ({bad})")
    check(p.returncode == 0 and report.get("verdict") == "pass",
          f"no finding: exit {p.returncode}, verdict {report.get('verdict')}")
    check_kernel_log(report)
    check(w.get("duration_s", 0) < 150, f"the workload took {w.get('duration_s', 0):.0f} s (< 150)")
finally:
    lab.cleanup()
print("PASS")
