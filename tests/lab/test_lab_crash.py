#!/usr/bin/env python3
"""A guest kernel that crashes in the middle of a run ends the lab at once:
exit 1 (a finding about the kernel under test, not "the lab could not run"),
the splat printed, and a valid report written by the host with the crash as a
kernel-log finding (verdict fail) and the "lab" object. The crash is real:
Debian's kernel is made to panic through /proc/sysrq-trigger 8 s into smoke
(--before), the same path an Oops takes under the lab's oops=panic."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, check_schema, fetch_kernel, load_json  # noqa: E402

kernel = fetch_kernel()
lab = Lab()
try:
    report_path = lab.path("crash.json")
    p = lab.run(["--profile", "smoke", "--timeout", "300s", "--report", report_path,
                 "--keep-console", lab.path("console.log"),
                 "--before", "(sleep 8; echo c > /proc/sysrq-trigger) &",
                 "--", "--probes", "off", "--duration", "60s"], timeout=400)
    check(p.returncode == 1, f"a guest kernel crash is exit 1, a kernel finding (exit {p.returncode})")
    check(p.elapsed < 150, f"the lab ended with the crash, not at its 300 s --timeout "
                           f"({p.elapsed:.0f} s)")
    check("the guest kernel crashed" in p.stderr, "the crash is named on stderr")
    check("sysrq triggered crash" in p.stderr, "the splat's panic line is printed")
    check(os.path.exists(report_path), "the host wrote a report although the guest could not")
    report = load_json(report_path)
    check_schema(report)
    check(report.get("verdict") == "fail", f"the report's verdict is fail ({report.get('verdict')})")
    findings = report.get("kernel_log", {}).get("findings", [])
    kinds = sorted({f.get("kind") for f in findings})
    check("panic" in kinds, f"the panic is a kernel-log finding ({kinds})")
    check(any("crashed" in e for e in report.get("errors", [])), "an error names the crash")
    lab_info = report.get("lab", {})
    check(lab_info.get("kernel_release") == kernel["release"],
          f"the lab object names the guest kernel ({lab_info.get('kernel_release')})")
    check(report.get("host", {}).get("kernel_release") == kernel["release"],
          "host.kernel_release is the guest's kernel")
finally:
    lab.cleanup()
print("PASS")
