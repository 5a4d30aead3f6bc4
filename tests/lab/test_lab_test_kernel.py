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
import re
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
                 # The modes take half the workload's time, the layout, race
                 # and flag-set checks the rest (about 10 s of it under TCG).
                 "--set", "duration=80s", "--set", "workload.convert.duration=70s"],
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
    extended(checks)
    log = r["kernel_log"]
    check(log["available"] and not log["findings"],
          f"the kernel log is clean over the conversions and races: {log}")
    conversions = sum(op["count"] for name, op in w["ops"].items() if "convert" in name
                      or "private" in name or "shared" in name)
    check(conversions > 0, f"conversions were counted in the report's ops ({conversions})")
    check(w["outcome"] == "pass", f"the convert workload passed ({w['outcome']}: {w['reason']})")
    check(p.returncode == 0, f"gmemstress lab exited 0 (got {p.returncode})")


def count(text, what):
    """The number before `what` in a check's observed text (0 if absent)."""
    m = re.search(r"(\d+) " + re.escape(what), text or "")
    return int(m.group(1)) if m else 0


def extended(checks):
    """Layouts, races and flag sets ran for real on a KVM_X86_SW_PROTECTED_VM.

    On 7.3 a VM with private memory offers guest_memfd MMAP but not
    INIT_SHARED (kvm_arch_supports_gmem_init_shared): flags none and mmap run,
    mmap_init_shared skips with the kernel's refusal as its reason.
    """
    def passed(name):
        c = checks.get(name)
        if c is None:
            fail(f"the report has no {name} check: {sorted(checks)}")
        check(c["outcome"] == "pass",
              f"{name} passes on the test kernel: {c['outcome']} "
              f"(observed: {c['observed']}; {c['reason']})")
        print(f"  {name}: {c['observed']}")
        return c["observed"]

    o = passed("convert.layout.straddle_2m")
    check(count(o, "conversions of pages") > 0, "the 2 MiB straddle converted pages")
    check("2 MiB boundary at gpa 0x10200000" in o, "the straddled range crosses a 2 MiB boundary")
    o = passed("convert.layout.interleave")
    check(count(o, "conversions of") > 0, "the interleaving converted pages one by one")
    for name in ("convert.race.faults", "convert.race.punch"):
        o = passed(name)
        check(count(o, "conversions") > 0, f"{name}: conversions raced")
        check(count(o, "guest rounds") > 0, f"{name}: the vCPU wrote the range meanwhile")
        check(count(o, "words checked") > 0, f"{name}: the settled pages were checked")
    check(count(checks["convert.race.punch"]["observed"], "punches") > 0,
          "punch holes raced the conversions")
    for flags in ("none", "mmap"):
        o = passed(f"convert.flags.{flags}")
        check(count(o, "conversions of pages") > 0 and count(o, "conversions of") > 0,
              f"convert.flags.{flags} converted pages")
    o = checks["convert.flags.mmap"]["observed"]
    check(count(o, "SIGBUS checks") > 0,
          "with MMAP, private pages were checked to SIGBUS through the guest_memfd mapping")
    c = checks.get("convert.flags.mmap_init_shared")
    check(c is not None and c["outcome"] == "skip" and "INIT_SHARED" in c["reason"],
          f"convert.flags.mmap_init_shared skips with the kernel's refusal: {c}")


if __name__ == "__main__":
    main()
