#!/usr/bin/env python3
"""The `pin-convert` profile on the project's test kernel (`lab --test-kernel`):
KVM_X86_SW_PROTECTED_VM is there, the in-place conversion series is not, so
the workload skips with the ioctl's ENOTTY (and, where the kernel offers no
GUEST_MEMFD_FLAG_MMAP on a sw_protected VM, says so too): verdict skip, exit 3."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, load_json, require_host_tools  # noqa: E402
from test_lab_pin_convert import check_skipped  # noqa: E402


def main():
    require_host_tools()
    lab = Lab()
    try:
        report_path = lab.path("pin-convert.json")
        p = lab.run(["--test-kernel", "--offline", "--profile", "pin-convert", "--report",
                     report_path, "--timeout", "600s"], timeout=900)
        reason, has_sw = check_skipped(lab, p, report_path)
        check(has_sw, "the test kernel offers KVM_X86_SW_PROTECTED_VM")
        report = load_json(report_path)
        print(f"test kernel {report.get('lab', {}).get('kernel_release')}: {reason}")
    finally:
        lab.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
