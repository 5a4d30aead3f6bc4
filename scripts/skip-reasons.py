#!/usr/bin/env python3
"""Prints why each skipped ctest test was skipped (ctest hides the output of
skipped tests), then, per label (unit, integration, e2e, lab), how many tests
ran, passed, failed and skipped, and where the KVM tests ran (host or lab).

Usage: scripts/skip-reasons.py BUILD_DIR   (after `ctest --test-dir BUILD_DIR`)
Exit status: 0, or 1 when the log shows a failed test (so a CI step that runs
only this script still goes red).
"""
import os
import re
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import ctest_info  # noqa: E402

build = sys.argv[1] if len(sys.argv) > 1 else "build"
log_path = f"{build}/Testing/Temporary/LastTest.log"
try:
    text = open(log_path, errors="replace").read()
except OSError as e:
    sys.exit(f"skip-reasons: cannot read {log_path}: {e.strerror}")


def labels_of_tests():
    """{test name: [labels]}, from ctest itself."""
    try:
        return {t["name"]: t["props"].get("LABELS", []) for t in ctest_info.show_only(build)}
    except (RuntimeError, OSError) as e:
        print(f"skip-reasons: no labels ({e})")
        return {}


def skip_reason(lines):
    reason = []
    for i, line in enumerate(lines):
        if line.startswith("SKIP:"):  # e2e / lab scripts
            reason.append(line[5:].strip())
        elif line.rstrip().endswith("SKIPPED:"):  # Catch2
            for follow in lines[i + 1:]:
                if not follow.strip():
                    break
                if follow.strip() not in ("explicitly with messages:", "explicitly with message:",
                                          "explicitly"):
                    reason.append(follow.strip())
    return " ".join(reason) or "(no reason printed)"


labels = labels_of_tests()
per_label = defaultdict(Counter)
totals = Counter()
where = Counter()
skips = []
blocks = re.split(r"^(?=\d+/\d+ Testing: )", text, flags=re.M)
for block in blocks:
    m = re.match(r"\d+/\d+ Testing: (.*)", block)
    if not m:
        continue
    name = m.group(1).strip()
    # ctest logs skipped tests as passed (the skip is the exit code): the
    # tests' own markers tell them apart.
    if re.search(r"SKIPPED:\s*$", block, re.M) or re.search(r"^SKIP: ", block, re.M):
        status = "skipped"
        skips.append((name, skip_reason(block.splitlines())))
    elif re.search(r"^Test Passed\.", block, re.M):
        status = "passed"
    else:
        status = "failed"
    totals[status] += 1
    if "[kvm_gate]" in block and "ran in the QEMU lab" in block:
        where["lab"] += 1
    for label in labels.get(name) or ["(no label)"]:
        per_label[label][status] += 1
        per_label[label]["ran"] += 1

for name, why in skips:
    print(f"skipped: {name}\n  why: {why}")
print("per label:")
for label in sorted(per_label):
    c = per_label[label]
    print(f"  {label:<12} {c['ran']:4d} ran, {c['passed']:4d} passed, {c['failed']:3d} failed, "
          f"{c['skipped']:3d} skipped")
if where["lab"]:
    print(f"  ({where['lab']} tests that need KVM ran inside the QEMU lab: this host has no "
          f"usable KVM or GMS_KVM_TESTS=lab)")
print(f"ctest: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
sys.exit(1 if totals["failed"] else 0)
