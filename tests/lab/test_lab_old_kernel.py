#!/usr/bin/env python3
"""Debian's trixie kernel (6.12) has guest_memfd only for non-default VM types
(KVM_CAP_GUEST_MEMFD=0 on a default VM): conformance cannot run a single
check there. A run in which nothing ran is verdict `skip`, exit 3, with the
kernel's reason, never `pass` (it was "verdict: pass" before)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_schema, env, fail, kernel_cache_dir,  # noqa: E402
                        load_json, require_host_tools, skip)

require_host_tools()
_, src, _ = env()
p = subprocess.run([os.path.join(src, "scripts", "fetch-lab-kernel.sh"), "--dest",
                    kernel_cache_dir(), "--suites", "trixie"], capture_output=True, text=True,
                   timeout=900)
if p.returncode != 0:
    skip("cannot obtain Debian trixie's kernel: " + (p.stderr.strip().splitlines() or ["?"])[-1])
kernel = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
if not kernel.get("release", "").startswith("6.12."):
    fail(f"trixie's kernel is no longer 6.12 ({kernel.get('release')}): update this test")
lab = Lab()
try:
    report_path = lab.path("conformance.json")
    p = lab.run(["--kernel", kernel["kernel"], "--profile", "conformance", "--report",
                 report_path, "--timeout", "400s"], timeout=500)
    check(p.returncode == 3, f"nothing could run: exit 3 ({p.returncode})")
    report = load_json(report_path)
    check_schema(report)
    check(report.get("verdict") == "skip", f"verdict skip, not pass ({report.get('verdict')})")
    check("verdict: skip" in p.stdout, "the summary says skip")
    work = report.get("workloads", [])
    check(len(work) == 1 and work[0].get("outcome") == "skip" and
          "KVM_CAP_GUEST_MEMFD" in work[0].get("reason", ""),
          f"the workload skipped with the kernel's reason ({[w.get('reason') for w in work]})")
    check(report.get("lab", {}).get("kernel_release") == kernel["release"],
          f"it ran on {kernel['release']}")
finally:
    lab.cleanup()
print("PASS")
