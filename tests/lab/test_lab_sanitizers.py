#!/usr/bin/env python3
"""The sanitizer layer catches what nothing else can (docs/DETECTION.md).

`gmemstress lab --sanitizers` boots the test kernel built with
lab/kconfig/gmemstress-sanitizers.config as well (lockdep, KASAN,
DEBUG_ATOMIC_SLEEP, DEBUG_LIST). Two plants are invisible to every other
detector and must be caught here, each as a kernel-log finding attributed to
the guest_memfd operation in its stack, with exit 1:
- lock-order (0x80): mmap_lock inside invalidate_lock in punch hole, the
  reverse in allocate -> lockdep's "possible circular locking dependency";
- use-after-free (0x100): punch hole reads a folio it freed -> "BUG: KASAN:
  use-after-free".
And the same kernel with no plant runs smoke clean (exit 0).

That kernel takes tens of minutes to build and CI does not build it: where it
is not cached this test skips and says how to build it.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, env, fail, kernel_findings, require_host_tools,  # noqa: E402
                        selected, skip)


def sanitizer_kernel_cached():
    _, source, _ = env()
    p = subprocess.run(["bash", os.path.join(source, "scripts", "build-test-kernel.sh"),
                        "--sanitizers", "--no-build"], capture_output=True, text=True,
                       timeout=120)
    if p.returncode == 3:
        skip("the sanitizer test kernel is not built here (CI does not build it: tens of "
             "minutes): scripts/build-test-kernel.sh --sanitizers, or gmemstress lab "
             "--sanitizers, builds and caches it")
    if p.returncode != 0:
        fail(f"build-test-kernel.sh --sanitizers --no-build: exit {p.returncode}: "
             f"{p.stderr.strip()[-500:]}")
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def expect_finding(r, rc, case, kind, text):
    """The plant's run failed (exit 1) with a kernel-log finding of `kind` saying `text`."""
    check(rc == 1, f"{case}: exit 1, failures found (got {rc})")
    f = kernel_findings(r, kind)
    check(f and text in f[0]["line"], f"{case}: a {kind} finding says {text!r} "
          f"({[(x['kind'], x['line']) for x in r['kernel_log']['findings'][:3]]})")
    return f


def expect_clean(r, rc):
    check(rc == 0, f"no plant: exit 0 (got {rc}; findings "
          f"{[(f['kind'], f['line']) for f in r['kernel_log']['findings'][:3]]})")
    check(r["verdict"] == "pass", f"no plant: verdict pass (got {r['verdict']})")
    check(not r["kernel_log"]["findings"], "no plant: no lockdep or KASAN report")
    outcomes = {w["label"]: w["outcome"] for w in r["workloads"]}
    check(all(o in ("pass", "skip") for o in outcomes.values()),
          f"no plant: every workload passes or skips ({outcomes})")
    ops = {w["label"]: sum(o["latency_ns"]["count"] for o in w["ops"].values())
           for w in r["workloads"]}
    check(all(ops.get(w, 0) > 0 for w in ("host-fault", "guest-fault", "punch-hole")),
          f"no plant: the fault and punch workloads ran under the sanitizers ({ops})")


def expect_lock_order(r, rc):
    f = expect_finding(r, rc, "lock-order", "lockdep", "circular locking dependency")
    splat = "\n".join(f[0]["splat"])
    check("invalidate_lock" in splat and "mmap_lock" in splat,
          "lock-order: the splat names both locks, invalidate_lock and mmap_lock")
    check(set(f[0]["operations"]) & {"punch_hole", "allocate", "fallocate"},
          f"lock-order: attributed to a guest_memfd operation ({f[0]['operations']}, "
          f"task {f[0].get('task')})")
    print(f"evidence: {f[0]['line']} ({f[0]['operations']}, {f[0].get('task')})")


def expect_use_after_free(r, rc):
    f = expect_finding(r, rc, "use-after-free", "sanitizer", "KASAN: use-after-free")
    # kvm_gmem_punch_hole is inlined into kvm_gmem_fallocate on 7.3.
    check(re.search(r"in kvm_gmem_(punch_hole|fallocate)\+", f[0]["line"]) and
          "punch_hole" in f[0]["operations"],
          f"use-after-free: in the punch path, attributed to punch_hole "
          f"({f[0]['line']}, {f[0]['operations']})")
    print(f"evidence: {f[0]['line']} ({f[0]['operations']}, {f[0].get('task')})")


CASES = [
    (None, expect_clean),
    ("lock-order", expect_lock_order),
    ("use-after-free", expect_use_after_free),
]


def main():
    require_host_tools()
    kernel = sanitizer_kernel_cached()
    print(f"sanitizer kernel: {kernel.get('release')} {kernel.get('kernel')}")
    lab = Lab()
    try:
        for plant, expect in selected(CASES, "GMS_PLANTS"):
            name = plant or "none"
            print(f"=== sanitizers, plant: {name} ===", flush=True)
            r, rc = lab.run_plant(plant, ["--offline", "--sanitizers", "-p", "smoke",
                                          "--timeout", "15m"], [], "san", timeout=1200)
            tk = r.get("lab", {}).get("test_kernel", {})
            check(tk.get("sanitizers") is True and tk.get("release") == kernel.get("release"),
                  f"plant {name}: the report says the sanitizer kernel ran ({tk})")
            expect(r, rc)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
