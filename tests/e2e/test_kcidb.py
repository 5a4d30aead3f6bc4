"""`run --kcidb`: KCIDB v5.3 tests (KernelCI) that validate against the
schema (reports/schema/kcidb-v5.3.schema.json; start times RFC 3339)
and say what the JSON report of the same run says, for a passing run, a run
with a real failure (a wrong WRITE bit fails io.write_validation) and a
run in which nothing ran. The schema check can fail: a broken copy of the
output is rejected."""
# gmemstress-test: needs-kvm
import copy
import json
import os

import jsonschema

from gms_e2e import NOTHING_RUNS_PROFILE, main, require_kvm, run, tmpdir, validate_report
from kcidb_check import by_path, check_against_report, validator

ORIGIN = "gms_e2e"


def kcidb_run(d, name, *args, build_id=None, expect_rc=None):
    report, kcidb = os.path.join(d, f"{name}.json"), os.path.join(d, f"{name}.kcidb.json")
    extra = ["--kcidb-build-id", build_id] if build_id else []
    p = run("run", *args, "--report", report, "--kcidb", kcidb, "--kcidb-origin", ORIGIN, *extra,
            "--quiet", timeout=300)
    assert expect_rc is None or p.returncode in expect_rc, \
        f"{name}: exit {p.returncode}, expected {expect_rc}\n{p.stderr}"
    rep = validate_report(report)
    with open(kcidb) as f:
        data = json.load(f)
    return rep, data


def test():
    require_kvm()
    d = tmpdir()

    # A real short run: passes here (or fails honestly; the statuses follow).
    rep, data = kcidb_run(d, "smoke", "--profile", "smoke", "--duration", "4s",
                          build_id="b42", expect_rc=(0, 1))
    t = check_against_report(data, rep, ORIGIN, f"{ORIGIN}:b42", "smoke")
    done = [p for p, v in t.items() if v["status"] == "DONE"]
    assert any(p.endswith(".throughput") for p in done), f"smoke: no throughput test: {done}"
    assert any(p.endswith(".latency_p50") for p in done), f"smoke: no latency test: {done}"
    print(f"smoke: {len(t)} tests, verdict {rep['verdict']}, {len(done)} measurements")

    # A real failure: FAIL on the check, on the workload and at the top.
    rep, data = kcidb_run(d, "conformance", "--profile", "conformance", "--probes", "off",
                          "--flag-bit", "write=0", expect_rc=(1,))
    release = rep["host"]["kernel_release"]
    t = check_against_report(data, rep, ORIGIN, f"{ORIGIN}:{release}", "conformance")
    failed = [p for p, v in t.items() if v["status"] == "FAIL"]
    assert "gmemstress" in failed and any(".checks." in p or "conformance." in p for p in failed), \
        failed
    for p in failed:
        if ".checks." in p:
            assert "expected" in t[p]["log_excerpt"], t[p]
    print(f"conformance: FAIL tests {failed}")

    # Nothing ran: SKIP at the top, each workload SKIP with its reason, no number.
    prof = os.path.join(d, "nothing.toml")
    with open(prof, "w") as f:
        f.write(NOTHING_RUNS_PROFILE)
    rep, data = kcidb_run(d, "nothing", "--profile", prof, expect_rc=(3,))
    t = check_against_report(data, rep, ORIGIN, f"{ORIGIN}:{release}", "nothing ran")
    assert t["gmemstress"]["status"] == "SKIP"
    assert not [p for p, v in t.items() if "number" in v]

    # The check can fail: a bad status, a bad path, a bad origin are rejected.
    v = validator()
    for field, bad in (("status", "OK"), ("path", "work load.x"), ("origin", "Gms")):
        broken = copy.deepcopy(data)
        broken["tests"][0][field] = bad
        try:
            v.validate(broken)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"the schema accepted {field} = {bad!r}")


main(test)
