#!/usr/bin/env python3
"""Each detector catches its bug on a real kernel (docs/DETECTION.md).

The test kernel carries lab/patches/gmemstress-plants.patch: test-only
switches (kvm.gms_plant=, one bit per bug class) that plant known guest_memfd
bugs. This test boots the test kernel once per plant (`gmemstress lab
--plant NAME`), runs a profile, and asserts that the detector meant for that
bug fires with its evidence and that the exit code says "failures found"
(1); and that the same kernel with no plant gives no finding (exit 0).

A row is added here only once its detector exists: DETECTION.md lists every
plant with its detector, or with why none catches it yet.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fail, fetch_kernel, require_host_tools, selected  # noqa: E402

STALE = "6b6b6b6b"  # the bytes the nozero plant leaves in a page


def workloads(r):
    return {w["label"]: w for w in r["workloads"]}


def invariant(r, name):
    for i in r.get("invariants", []):
        if i["name"] == name:
            return i
    fail(f"the report has no invariant {name}: {[i['name'] for i in r.get('invariants', [])]}")


def mismatch_lines(r):
    return [m for w in r["workloads"] for m in w["verification"]["first_mismatches"]]


def expect_clean(r, rc):
    check(rc == 0, f"no plant: exit 0 (got {rc})")
    check(r["verdict"] == "pass", f"no plant: verdict pass (got {r['verdict']})")
    check(not r["kernel_log"]["findings"], f"no plant: no kernel-log finding "
          f"({r['kernel_log']['findings'][:2]})")
    for name in ("uptodate", "page_cache_balance"):
        inv = invariant(r, name)
        check(inv["verdict"] == "verified", f"no plant: {name} verified ({inv['verdict']}: "
              f"{inv.get('reason')})")
    bad = [w["label"] for w in r["workloads"] if w["outcome"] not in ("pass", "skip")]
    check(not bad, f"no plant: every workload passes or skips ({bad})")


def expect_nozero(r, rc):
    check(rc == 1, f"nozero: exit 1, failures found (got {rc})")
    lines = mismatch_lines(r)
    stale = [m for m in lines if STALE in m.lower()]
    check(stale, f"nozero: the data checks name pages holding the stale bytes 0x{STALE} "
          f"({lines[:3]})")
    print(f"evidence: {stale[0]}")
    failed = [w["label"] for w in r["workloads"] if w["outcome"] == "fail"]
    check(any(w in failed for w in ("host-fault", "guest-fault")),
          f"nozero: a fault workload fails on it ({failed})")


def expect_not_uptodate(r, rc):
    check(rc == 1, f"not-uptodate: exit 1, failures found (got {rc})")
    inv = invariant(r, "uptodate")
    check(inv["verdict"] == "violated", f"not-uptodate: the uptodate invariant is violated "
          f"({inv['verdict']}: {inv.get('reason')})")
    check(inv["violations"], "not-uptodate: with the hand-outs it names")
    print(f"evidence: {inv['violations'][0]}")


def expect_punch_leaves(r, rc):
    check(rc == 1, f"punch-leaves: exit 1, failures found (got {rc})")
    w = workloads(r).get("punch-hole")
    if w is None:
        fail("the profile ran no punch-hole workload")
    check(w["outcome"] == "fail", f"punch-leaves: punch-hole fails ({w['outcome']}: "
          f"{w['reason']})")
    after_punch = [m for m in w["verification"]["first_mismatches"]]
    check(after_punch, f"punch-leaves: it names pages that did not read zero after a punch "
          f"({w['reason']})")
    print(f"evidence: {after_punch[0]}")
    # page_cache_balance stays verified here: the page left behind is removed
    # when the file is released, so adds and removals still balance per file.


def expect_warn(r, rc):
    check(rc == 1, f"warn: exit 1, failures found (got {rc})")
    # The plant's WARN_ONCE sits in kvm_gmem_fallocate's punch path.
    f = [x for x in r["kernel_log"]["findings"] if "kvm_gmem_fallocate" in x["line"]]
    check(f, f"warn: a kernel-log finding names the WARN in kvm_gmem_fallocate "
          f"({r['kernel_log']['findings'][:3]})")
    print(f"evidence: {f[0]['kind']}: {f[0]['line']}")


# plant -> (profile, what must be seen). The same kernel, booted once each.
CASES = [
    (None, "smoke", expect_clean),
    ("nozero", "smoke", expect_nozero),
    ("not-uptodate", "smoke", expect_not_uptodate),
    ("punch-leaves", "smoke", expect_punch_leaves),
    ("warn", "smoke", expect_warn),
]


def run_case(lab, plant, profile, expect):
    name = plant or "none"
    r, rc = lab.run_plant(plant, ["--offline", "-p", profile, "--timeout", "10m"],
                          ["--test-kernel"], "plant", timeout=1500)
    lab_section = r.get("lab", {})
    want = [plant] if plant else None
    check(lab_section.get("plants") == want, f"plant {name}: the report's lab section says "
          f"which plants were on ({lab_section.get('plants')})")
    expect(r, rc)
    return r


def main():
    require_host_tools()
    only = os.environ.get("GMS_PLANTS")  # e.g. "nozero,warn" while working on one
    lab = Lab()
    try:
        for plant, profile, expect in selected(CASES, "GMS_PLANTS"):
            print(f"=== plant: {plant or 'none'} ===", flush=True)
            run_case(lab, plant, profile, expect)
        p = lab.run(["--offline", "--plant", "bogus", "-p", "smoke"], timeout=120)
        check(p.returncode == 2 and re.search(r"--plant bogus: no such plant", p.stderr),
              f"an unknown plant is a usage error naming it (exit {p.returncode})")
        # A kernel without the plants cannot pass for one with them.
        if not only:
            k = fetch_kernel()
            p = lab.run(["--kernel", k["kernel"], "--plant", "nozero", "-p", "smoke"],
                        timeout=600)
            check(p.returncode == 3 and "kvm.gms_plant" in p.stderr,
                  f"Debian's kernel (no plants) with --plant: setup failure naming "
                  f"kvm.gms_plant, exit 3 (got {p.returncode})")
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
