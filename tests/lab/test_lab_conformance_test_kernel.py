#!/usr/bin/env python3
"""The `conformance` profile on the project's test kernel (`lab --test-kernel`).

The test kernel has KVM_X86_SW_PROTECTED_VM, so the checks of private memory
run there instead of skipping: KVM_EXIT_MEMORY_FAULT on a private access (to a
memslot without guest_memfd, and while the guest_memfd memslot is deleted),
memory attributes, KVM_PRE_FAULT_MEMORY of private memory, and the file
checks repeated on a second VM type. Asserted: every check passes or skips
with a reason, nothing fails or errors, both VM types were checked, and each
of those private-memory checks actually ran and passed. Prints the counts
that docs/CONFORMANCE.md records."""
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, check_schema, fail, load_json, require_host_tools  # noqa: E402

# The private-memory checks, all on KVM_X86_SW_PROTECTED_VM.
MUST_PASS = [
    "sw_protected.exits.private_access_not_private_slot",
    "sw_protected.exits.private_access_slot_deleted",
    "sw_protected.attributes.set_private_and_shared",
    "sw_protected.attributes.misaligned",
    "sw_protected.memslot.overlapping_file_range",
    "sw_protected.none.fallocate.sequence",
    "sw_protected.mmap.mmap.fault_private",
    "default.mmap-init_shared.mmap.fault_overflow",
    "kvm.default_vm.guest_memfd_flags",
]


def main():
    require_host_tools()
    lab = Lab()
    try:
        report_path = lab.path("conformance.json")
        p = lab.run(["--test-kernel", "--offline", "--profile", "conformance", "--timeout", "900s",
                     "--report", report_path, "--keep-console", lab.path("console.log")],
                    timeout=1200)
        print("--- guest stdout ---\n" + p.stdout + "--- end ---")
        if not os.path.exists(report_path):
            fail(f"no report came back (exit {p.returncode}): {p.stderr[-2000:]}")
        report = load_json(report_path)
        check_schema(report)
        (w,) = [w for w in report["workloads"] if w["name"] == "conformance"]
        checks = w["checks"]
        by_name = {c["name"]: c for c in checks}
        n = collections.Counter(c["outcome"] for c in checks)
        print(f"test kernel {report.get('lab', {}).get('kernel_release')}: {len(checks)} checks, "
              f"{n['pass']} pass, {n['skip']} skip, {n['fail']} fail, {n['error']} error")
        for c in checks:
            if c["outcome"] in ("fail", "error"):
                print(f"  {c['outcome']}: {c['name']}: expected {c['expected']}; observed "
                      f"{c['observed']}; {c.get('reason', '')}")
        check(n["fail"] == 0 and n["error"] == 0, "no conformance check failed or errored")
        check(all(c.get("reason") for c in checks if c["outcome"] == "skip"),
              "every skipped check says why")
        check(any(name.startswith("sw_protected.") for name in by_name) and
              any(name.startswith("default.") for name in by_name),
              "the checks ran on both VM types the test kernel lists")
        for name in MUST_PASS:
            c = by_name.get(name)
            check(c is not None and c["outcome"] == "pass",
                  f"{name} ran and passed ({c['outcome'] if c else 'missing'}"
                  f"{': ' + c.get('reason', '') if c and c['outcome'] != 'pass' else ''})")
        pre = by_name.get("sw_protected.pre_fault.private")
        check(pre is not None and pre["outcome"] in ("pass", "skip"),
              f"pre-faulting private memory passed or skipped with a reason "
              f"({pre and pre['outcome']}: {pre and pre.get('reason')})")
        check(p.returncode == 0 and report.get("verdict") == "pass",
              f"gmemstress run passed in the guest (exit {p.returncode}, verdict "
              f"{report.get('verdict')})")
    finally:
        lab.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
