#!/usr/bin/env python3
"""The `pin-convert` profile (docs/SPLIT.md) on Debian's newest kernel in the
QEMU lab. That kernel does not carry the in-place conversion series, so the
workload must skip, naming what is missing (no KVM_SET_MEMORY_ATTRIBUTES2:
ENOTTY on a guest_memfd; the VM type without private memory when
KVM_X86_SW_PROTECTED_VM is not offered), never pass: verdict skip, exit 3,
the reason in the report's workload and in its pin_convert section, no case
run. test_lab_pin_convert_test_kernel.py does the same on the test kernel."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, check_schema, fail, fetch_kernel, load_json  # noqa: E402

SW_PROTECTED = 1  # KVM_X86_SW_PROTECTED_VM


def check_skipped(lab, p, report_path):
    """Asserts a pin-convert run on a kernel without the series skipped with
    the reasons; returns the workload's reason."""
    print("--- guest stdout ---\n" + p.stdout + "--- end ---")
    if not os.path.exists(report_path):
        fail(f"no report came back (exit {p.returncode}): {p.stderr[-2000:]}")
    report = load_json(report_path)
    check_schema(report)
    check(p.returncode == 3, f"nothing could run: exit 3 ({p.returncode})")
    check(report.get("verdict") == "skip", f"verdict skip ({report.get('verdict')})")
    check("verdict: skip" in p.stdout, "the summary says skip")
    (w,) = [w for w in report["workloads"] if w["name"] == "pin-convert"]
    reason = w.get("reason", "")
    print(f"reason: {reason}")
    check(w["outcome"] == "skip", f"the workload skipped ({w['outcome']})")
    series = report.get("series", {}).get("in_place_conversion", {})
    check(series.get("present") is False,
          f"the fingerprint agrees: no in-place conversion series ({series})")
    check("no KVM_SET_MEMORY_ATTRIBUTES2" in reason and "gives ENOTTY" in reason and
          "does not carry the in-place conversion series" in reason,
          "the reason says the ioctl is missing (ENOTTY) and the series is not in the kernel")
    has_sw = bool((report.get("host", {}).get("vm_types", 0) >> SW_PROTECTED) & 1)
    check(("VM type lacks private memory" in reason) == (not has_sw),
          f"the reason names the missing private-memory VM type iff KVM_X86_SW_PROTECTED_VM is "
          f"not offered (offered: {has_sw})")
    sec = w.get("pin_convert")
    check(isinstance(sec, dict) and sec.get("skip_reason") == reason and sec.get("cases") == [],
          "the pin_convert section carries the reason and no case")
    check(not w.get("ops") and not w.get("checks"), "no conversion was attempted")
    check(f"not run here: {reason}" in p.stdout, "the text summary names the reason")
    return reason, has_sw


def main():
    kernel = fetch_kernel()
    lab = Lab()
    try:
        report_path = lab.path("pin-convert.json")
        p = lab.run(["--kernel", kernel["kernel"], "--profile", "pin-convert", "--report",
                     report_path, "--timeout", "400s"], timeout=500)
        check_skipped(lab, p, report_path)
        check(load_json(report_path).get("lab", {}).get("kernel_release") == kernel["release"],
              f"it ran on {kernel['release']}")
    finally:
        lab.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
