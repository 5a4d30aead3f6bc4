#!/usr/bin/env python3
"""Prints why each skipped ctest test was skipped (ctest hides the output of
skipped tests), then the totals as a plain closing line.

Usage: scripts/skip-reasons.py BUILD_DIR   (after `ctest --test-dir BUILD_DIR`)
"""
import re
import sys

log_path = f"{sys.argv[1] if len(sys.argv) > 1 else 'build'}/Testing/Temporary/LastTest.log"
try:
    text = open(log_path, errors="replace").read()
except OSError as e:
    sys.exit(f"skip-reasons: cannot read {log_path}: {e.strerror}")

blocks = re.split(r"^(?=\d+/\d+ Testing: )", text, flags=re.M)
passed = failed = skipped = 0
for block in blocks:
    m = re.match(r"\d+/\d+ Testing: (.*)", block)
    if not m:
        continue
    name = m.group(1).strip()
    # ctest logs skipped tests as "Test Passed." (the skip is the exit code):
    # the tests' own markers tell them apart.
    is_skip = re.search(r"SKIPPED:\s*$", block, re.M) or re.search(r"^SKIP: ", block, re.M)
    if not is_skip:
        if re.search(r"^Test Passed\.", block, re.M):
            passed += 1
        else:
            failed += 1
        continue
    skipped += 1
    reason = []
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("SKIP:"):  # e2e / lab scripts
            reason.append(line[5:].strip())
        elif line.rstrip().endswith("SKIPPED:"):  # Catch2
            for follow in lines[i + 1:]:
                if not follow.strip():
                    break
                if follow.strip() != "explicitly with messages:" and follow.strip() != "explicitly":
                    reason.append(follow.strip())
    print(f"skipped: {name}\n  why: {' '.join(reason) or '(no reason printed)'}")
print(f"ctest: {passed} passed, {failed} failed, {skipped} skipped")
