#!/usr/bin/env python3
"""The project's test kernel in the lab (`gmemstress lab --test-kernel`).

The kernel is built once per machine by the `test-kernel-build` fixture
(scripts/build-test-kernel.sh: Debian's linux-source, allnoconfig + the
lab/kconfig fragments, everything built in). On it, and only on it among the
kernels the lab can boot:
  - KVM_X86_SW_PROTECTED_VM exists, so KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) works
    and the convert workload converts pages for real (attributes and
    guest-initiated modes) instead of skipping;
  - fail-nth, failslab/fail_page_alloc and /proc/lock_stat exist.
Each of those is asserted: a test kernel that lost one of them fails here.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fail, require_host_tools  # noqa: E402

KVM_X86_SW_PROTECTED_VM = 1
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3


def main():
    require_host_tools()
    lab = Lab()
    try:
        caps_and_config(lab)
        conversions(lab)
    finally:
        lab.cleanup()


def caps_and_config(lab):
    probe = ("test -e /proc/thread-self/fail-nth && echo fail-nth; "
             "test -d /sys/kernel/debug/failslab && echo failslab; "
             "test -d /sys/kernel/debug/fail_page_alloc && echo fail_page_alloc; "
             "test -e /proc/lock_stat && echo lock_stat; "
             "zcat /proc/config.gz | grep -E '^CONFIG_(KVM_SW_PROTECTED_VM|DEBUG_VM|DEBUG_INFO_BTF)=y'; "
             "\"$0\" caps --json")
    gms = os.environ["GMS_BIN"]
    p = lab.run(["--test-kernel", "--offline", "--exec", "--", "/bin/sh", "-c", probe, gms],
                timeout=900)
    if p.returncode != 0:
        fail(f"the test kernel did not boot and run a command (exit {p.returncode})")
    out = p.stdout
    for feature in ("fail-nth", "failslab", "fail_page_alloc", "lock_stat",
                    "CONFIG_KVM_SW_PROTECTED_VM=y", "CONFIG_DEBUG_VM=y", "CONFIG_DEBUG_INFO_BTF=y"):
        check(feature in out.split(), f"the test kernel has {feature}")
    caps = json.loads(out[out.index("{"):])
    print(f"test kernel: {caps['kernel_release']}")
    check(caps["guest_memfd"], "guest_memfd is offered")
    check(caps["vm_types"] & (1 << KVM_X86_SW_PROTECTED_VM),
          f"KVM_X86_SW_PROTECTED_VM is a VM type (vm_types={caps['vm_types']:#x})")
    check(caps["bpf"]["fentry"]["usable"], "fentry probes load and attach")


def conversions(lab):
    report = lab.path("convert.json")
    p = lab.run(["--test-kernel", "--offline", "-p", "convert-storm", "-r", report, "--",
                 "--set", "duration=40s", "--set", "workload.convert.duration=30s"],
                timeout=900)
    if not os.path.exists(report):
        fail(f"no report (exit {p.returncode})")
    with open(report) as f:
        r = json.load(f)
    (w,) = [w for w in r["workloads"] if w["name"].startswith("convert")]
    checks = {c["name"]: c for c in w.get("checks", [])}
    for mode in ("attributes", "hypercall"):
        c = checks.get(f"convert.{mode}")
        if c is None:
            fail(f"the report has no convert.{mode} check: {sorted(checks)}")
        check(c["outcome"] == "pass",
              f"convert.{mode} converts pages on the test kernel: {c['outcome']} "
              f"(observed: {c['observed']}; {c['reason']})")
    conversions = sum(op["count"] for name, op in w["ops"].items() if "convert" in name
                      or "private" in name or "shared" in name)
    check(conversions > 0, f"conversions were counted in the report's ops ({conversions})")
    check(w["outcome"] == "pass", f"the convert workload passed ({w['outcome']}: {w['reason']})")
    check(p.returncode == 0, f"gmemstress lab exited 0 (got {p.returncode})")


if __name__ == "__main__":
    main()
