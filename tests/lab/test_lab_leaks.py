#!/usr/bin/env python3
"""The guest's view after a punch, the invalidation balance and the folio
leak detector, proven on the test kernel (issue 11, item 7).

Boots the test kernel (lab/patches/gmemstress-plants.patch) once clean and
once per plant this detector set is meant for, runs the smoke profile (its
guest-fault workload has the punch step: punch_pages per round) and asserts:

- no plant: folio_release and invalidation_balance verified, guest-fault
  passes with pages checked after punches, exit 0;
- ref-leak (0x08): folio_release violated, naming pfns with a reference
  count above 0 read from /proc/kpagecount after the drain, exit 1;
- stale-guest (0x40): invalidation_balance violated (a punch of a bound
  range with no KVM invalidation) and guest-fault's after-punch check
  reading a stale value, exit 1;
- punch-leaves (0x04): guest-fault's after-punch check names the page the
  punch left behind (the guest reads its old value), exit 1.

GMS_LEAK_CASES=none,ref-leak runs a subset.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fail, require_host_tools, selected  # noqa: E402

AFTER_PUNCH = "after punch hole returned the guest read"


def invariant(r, name):
    for i in r.get("invariants", []):
        if i["name"] == name:
            print(f"invariant {name}: {i['verdict']} [{i.get('backend')}] {i.get('reason')} "
                  f"{i.get('evidence')}")
            for v in i.get("violations", [])[:3]:
                print(f"  violation: {v}")
            return i
    fail(f"the report has no invariant {name}: {[i['name'] for i in r.get('invariants', [])]}")


def guest_fault(r):
    for w in r["workloads"]:
        if w["name"] == "guest-fault":
            return w
    fail("the profile ran no guest-fault workload")


def after_punch_mismatches(r):
    return [m for m in guest_fault(r)["verification"]["first_mismatches"] if AFTER_PUNCH in m]


def expect_clean(r, rc):
    check(rc == 0, f"no plant: exit 0 (got {rc})")
    check(r["verdict"] == "pass", f"no plant: verdict pass (got {r['verdict']})")
    for name in ("folio_release", "invalidation_balance"):
        inv = invariant(r, name)
        check(inv["verdict"] == "verified",
              f"no plant: {name} verified ({inv['verdict']}: {inv.get('reason')})")
    fr = invariant(r, "folio_release")["evidence"]
    check(fr["folios_departed"] > 0 and fr["not_freed"] == 0,
          f"no plant: every folio that left a guest_memfd was freed ({fr})")
    ib = invariant(r, "invalidation_balance")["evidence"]
    # Vm::destroy deletes the memslots before the files go: releases are
    # usually of unbound files, punches of guest-fault's bound ones.
    check(ib["punches_of_bound_ranges"] > 0 and ib["mmu_unmap_gfn_range"] > 0,
          f"no plant: punches of bound ranges were judged, with guest_memfd's unmaps ({ib})")
    gf = guest_fault(r)
    check(gf["outcome"] == "pass", f"no plant: guest-fault passes ({gf['outcome']}: "
          f"{gf.get('reason')})")
    checked = gf["counters"].get("pages_checked_after_punch", 0)
    check(checked > 0, f"no plant: the guest read back punched pages ({checked})")


def expect_ref_leak(r, rc):
    check(rc == 1, f"ref-leak: exit 1, failures found (got {rc})")
    inv = invariant(r, "folio_release")
    check(inv["verdict"] == "violated",
          f"ref-leak: folio_release violated ({inv['verdict']}: {inv.get('reason')})")
    ev = inv["evidence"]
    check(ev["not_freed_with_refcount"] > 0,
          f"ref-leak: leaked folios still have references after the drain ({ev})")
    held = [v for v in inv["violations"] if "refcount" in v and "refcount 0" not in v
            and "not read" not in v and "unreadable" not in v]
    check(held, f"ref-leak: a violation names pfn, file, index and its refcount "
          f"({inv['violations'][:2]})")
    print(f"evidence: {held[0]}")


def expect_stale_guest(r, rc):
    check(rc == 1, f"stale-guest: exit 1, failures found (got {rc})")
    inv = invariant(r, "invalidation_balance")
    check(inv["verdict"] == "violated", f"stale-guest: invalidation_balance violated "
          f"({inv['verdict']}: {inv.get('reason')})")
    missing = [v for v in inv["violations"] if "returned without invalidating" in v]
    check(missing, f"stale-guest: a punch of a bound range without KVM invalidation is named "
          f"({inv['violations'][:2]})")
    print(f"evidence: {missing[0]}")
    stale = after_punch_mismatches(r)
    check(stale, f"stale-guest: the guest read a punched page as non-zero after the punch "
          f"returned ({guest_fault(r)['verification']['first_mismatches'][:2]})")
    print(f"evidence: {stale[0]}")
    check(guest_fault(r)["outcome"] == "fail", "stale-guest: guest-fault fails")


def expect_punch_leaves(r, rc):
    check(rc == 1, f"punch-leaves: exit 1, failures found (got {rc})")
    left = after_punch_mismatches(r)
    check(left, f"punch-leaves: the guest read the page the punch left behind "
          f"({guest_fault(r)['verification']['first_mismatches'][:2]})")
    print(f"evidence: {left[0]}")


CASES = [
    (None, expect_clean),
    ("ref-leak", expect_ref_leak),
    ("stale-guest", expect_stale_guest),
    ("punch-leaves", expect_punch_leaves),
]


def main():
    require_host_tools()
    lab = Lab()
    try:
        for plant, expect in selected(CASES, "GMS_LEAK_CASES"):
            print(f"=== plant: {plant or 'none'} ===", flush=True)
            r, rc = lab.run_plant(plant, ["--offline", "-p", "smoke", "--timeout", "10m"],
                                  ["--test-kernel"], "leak", timeout=1500)
            expect(r, rc)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
