"""Shared helpers for the end-to-end tests (run by ctest, see tests/CMakeLists.txt)."""
import json
import os
import subprocess
import sys
import tempfile

import jsonschema

GMS_BIN = os.environ.get("GMS_BIN", "gmemstress")
SOURCE_DIR = os.environ.get("GMS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMA_PATH = os.path.join(SOURCE_DIR, "reports", "schema", "report.schema.json")
SKIP = 77


# Profiles several tests run for their outcome on this kernel.
# Only the convert workload, which skips where the kernel has no conversion
# mode (no memory attributes): exit 3 there.
NEEDS_ATTRIBUTES_PROFILE = """name = "needs-attributes"
duration = "10s"
[guest_memfd]
size = "2MiB"
flags = ["mmap", "init_shared"]
[probes]
mode = "off"
[[workload]]
kind = "convert"
"""

# The lifecycle workload's time budget runs out before its first scenario:
# it creates nothing, does nothing and has no check, so nothing ran (exit 3).
NOTHING_RUNS_PROFILE = """name = "nothing-ran"
duration = "20s"
[guest_memfd]
size = "1MiB"
flags = ["mmap", "init_shared"]
[probes]
mode = "off"
[[workload]]
kind = "lifecycle"
duration = 0.000001
"""

def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def kvm_usable():
    """(True, '') or (False, why)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return True, ""
    except OSError as e:
        return False, f"/dev/kvm not usable: {e.strerror}"


def require_kvm():
    ok, why = kvm_usable()
    if not ok:
        skip(why)


def run(*args, timeout=300, check_rc=None, **kw):
    """Runs gmemstress; returns CompletedProcess. check_rc asserts the exit code."""
    p = subprocess.run([GMS_BIN, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc is not None and p.returncode != check_rc:
        print("stdout:", p.stdout)
        print("stderr:", p.stderr)
        raise AssertionError(f"gmemstress {' '.join(args)}: exit {p.returncode}, expected {check_rc}")
    return p


def expect_usage_error(args, *needles):
    """A usage error: exit 2, and stderr names every needle (the flag, FILE:LINE ...)."""
    p = run(*args)
    assert p.returncode == 2, f"{args}: exit {p.returncode}, expected 2\n{p.stderr}"
    for n in needles:
        assert n in p.stderr, f"{args}: stderr lacks {n!r}:\n{p.stderr}"


def tmpdir():
    return tempfile.mkdtemp(prefix="gms-e2e-")


def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def did_run(w):
    """A workload did something: an operation, a verified page, or a check that
    did not skip (reports/model.cpp did_run(), the same rule)."""
    return (any(op["count"] > 0 for op in w["ops"].values())
            or w["verification"]["pages_checked"] > 0
            or any(c["outcome"] != "skip" for c in w["checks"]))


def validate_report(path):
    """Loads a report, validates it against the schema and the honesty rules; returns it."""
    with open(path) as f:
        rep = json.load(f)
    check_honesty(rep)
    return rep


def check_honesty(rep):
    """The schema and the honesty rules: skips say why, a pass ran something
    and hides no failure, the verdict follows from the parts."""
    jsonschema.Draft202012Validator(load_schema()).validate(rep)
    # Every report of a detected host says which patch series its kernel carries.
    assert "series" in rep, "report without the series fingerprint"
    # This gmemstress's runs are watched (optional in the schema only for
    # reports written before the watchdog).
    if rep["command"] == "run":
        for k in ("stalls", "stall_threshold_s", "incomplete", "incomplete_reason"):
            assert k in rep, f"run report without {k}"
    for w in rep["workloads"]:
        if w["outcome"] == "skip":
            assert w["reason"], f"workload {w['label']} skipped without a reason"
        for c in w["checks"]:
            if c["outcome"] == "skip":
                assert c["reason"], f"check {c['name']} skipped without a reason"
        if w["outcome"] == "pass":
            assert w["verification"]["mismatches"] == 0, f"{w['label']} passed with mismatches"
            assert not any(c["outcome"] in ("fail", "error") for c in w["checks"]), \
                f"{w['label']} passed with failed checks"
            assert did_run(w), f"{w['label']} passed without running anything (no operation, " \
                "no verified page, every check skipped)"
    for i in rep["invariants"]:
        if i["verdict"] == "verified":
            assert i["backend"], f"invariant {i['name']} verified without a backend"
    # The verdict must follow from the parts.
    outcomes = [w["outcome"] for w in rep["workloads"]]
    outcomes += [c["outcome"] for w in rep["workloads"] for c in w["checks"]]
    failed = ("fail" in outcomes or rep["kernel_log"]["findings"] or rep.get("stalls")
              or any(i["verdict"] == "violated" for i in rep["invariants"]))
    if failed:
        assert rep["verdict"] == "fail", "verdict hides a failure"
    elif "error" in outcomes or rep["errors"]:
        assert rep["verdict"] == "error"
    elif rep["command"] != "watch" and not ran_something(rep):
        assert rep["verdict"] == "skip", "nothing ran, yet the verdict is not skip"
    else:
        assert rep["verdict"] == "pass", f"verdict {rep['verdict']}, expected pass"


def ran_something(rep):
    """Some workload ran (not skipped, and did something) or a report-level
    conformance check ran (Report::verdict(), the same rule)."""
    return (any(w["outcome"] != "skip" and did_run(w) for w in rep["workloads"])
            or any(c["outcome"] != "skip" for c in rep["conformance"]))


def main(fn):
    try:
        fn()
    except AssertionError as e:
        print(f"FAIL: {e}")
        sys.exit(1)
    print("PASS")
    sys.exit(0)
