#!/usr/bin/env python3
"""The `conformance` profile in the lab on Debian's newest kernel, with probes:
every ABI check passes or skips with a reason; fentry/kprobe probes were used;
the secretmem calibration saw direct-map zap/restore pairs; the uptodate and
page-cache invariants were verified with event counts matching the
workload; the guest's kernel log had no findings."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_invariants, check_kernel_log,  # noqa: E402
                        check_lab_section, check_probes, fetch_kernel, load_json)

kernel = fetch_kernel()
lab = Lab()
try:
    report_path = lab.path("conformance.json")
    p = lab.run(["--kernel", kernel["kernel"], "--profile", "conformance", "--timeout", "420s",
                 "--report", report_path, "--keep-console", lab.path("console.log"), "--",
                 "--probes", "on"], timeout=500)
    print("--- guest stdout ---\n" + p.stdout + "--- end ---")
    check(os.path.exists(report_path), "the report came back to the host")
    report = load_json(report_path)
    check_lab_section(report, kernel, p.returncode)
    checks = list(report.get("conformance", []))
    for w in report.get("workloads", []):
        checks += w.get("checks", [])
    bad = [c for c in checks if c.get("outcome") not in ("pass", "skip")]
    for c in bad:
        print(f"  {c.get('outcome')}: {c.get('name')}: expected {c.get('expected')}, observed "
              f"{c.get('observed')} {c.get('reason')}")
    check(not bad, f"every conformance check passed or skipped ({len(bad)} did not)")
    passed = [c for c in checks if c.get("outcome") == "pass"]
    check(len(passed) >= 10, f"conformance checks ran and passed ({len(passed)} of {len(checks)})")
    check(all(c.get("reason") for c in checks if c.get("outcome") == "skip"),
          "every skipped check says why")
    check(p.returncode == 0 and report.get("verdict") == "pass",
          f"gmemstress run passed in the guest (exit {p.returncode}, verdict {report.get('verdict')})")
    check_probes(report)
    # conformance predicts its guest_memfd files, not its pages (see check_invariants).
    check_invariants(report, require_exact_pages=False)
    check_kernel_log(report)
finally:
    lab.cleanup()
print("PASS")
