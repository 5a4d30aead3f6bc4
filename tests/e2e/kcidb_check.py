"""Checks of KCIDB output shared by the e2e and lab tests: the schema
(reports/schema/kcidb-v5.3.schema.json, the copy of KernelCI's; see
reports/schema/README.md) and the statuses a report implies."""
import filecmp
import json
import os
import re

import jsonschema

from gms_e2e import SOURCE_DIR

SCHEMA = os.path.join(SOURCE_DIR, "reports", "schema", "kcidb-v5.3.schema.json")
# Where the project's shared data sits next to a clone (not in every CI).
SHARED = os.path.join(SOURCE_DIR, "..", "shared", "schemas", "kcidb-v5.3.schema.json")

OUTCOME = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP"}
VERDICT = {"verified": "PASS", "violated": "FAIL", "incomplete": "ERROR", "unverifiable": "SKIP"}


def validator():
    if os.path.exists(SHARED):
        assert filecmp.cmp(SCHEMA, SHARED, shallow=False), \
            f"{SCHEMA} differs from {SHARED}: update the copy (and reports/schema/README.md)"
    with open(SCHEMA) as f:
        schema = json.load(f)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(data, what):
    errors = sorted(validator().iter_errors(data), key=str)
    assert not errors, f"{what}: not valid KCIDB v5.3: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def by_path(data):
    return {t["path"]: t for t in data["tests"]}


def check_against_report(data, rep, origin, build_id, what):
    """Every test the report implies, with the status it implies."""
    validate(data, what)
    tests = data["tests"]
    ids = [t["id"] for t in tests]
    assert len(set(ids)) == len(ids), f"{what}: repeated test ids"
    for t in tests:
        assert t["origin"] == origin and t["id"].startswith(origin + ":"), t["id"]
        assert t["build_id"] == build_id, t["build_id"]
        assert t["environment"]["misc"]["caps"] == rep["host"], f"{what}: caps not in misc"
        # RFC 3339 (Debian's jsonschema does not check the date-time format).
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t.get("start_time", "")), t
        if "number" in t:
            assert t["status"] == "DONE", f"{what}: {t['path']} has a number but is {t['status']}"
    t = by_path(data)
    verdict = OUTCOME[rep["verdict"]]
    if rep["interrupted"] and verdict != "FAIL":
        verdict = "ERROR"
    assert t["gmemstress"]["status"] == verdict, (t["gmemstress"]["status"], rep["verdict"])
    for w in rep["workloads"]:
        path = f"gmemstress.workload.{w['label']}"
        assert t[path]["status"] == OUTCOME[w["outcome"]], (path, t[path]["status"], w["outcome"])
        statuses = sorted(v["status"] for p, v in t.items() if p.startswith(path + ".checks."))
        assert statuses == sorted(OUTCOME[c["outcome"]] for c in w["checks"]), (path, statuses)
        ran = w["outcome"] != "skip" and any(op["count"] for op in w["ops"].values())
        for op, st in w["ops"].items():
            tput = t.get(f"{path}.ops.{op}.throughput")
            done = st["latency_ns"]["count"]
            if ran and done and w["duration_s"] > 0:
                assert tput and tput["number"]["unit"] == "ops/s", f"{what}: no throughput of {op}"
                assert abs(tput["number"]["value"] - done / w["duration_s"]) <= \
                    1e-6 * tput["number"]["value"], (tput, done, w["duration_s"])
                p99 = t[f"{path}.ops.{op}.latency_p99"]["number"]
                assert p99 == {"value": st["latency_ns"]["p99"], "unit": "ns"}, p99
            else:
                assert tput is None, f"{what}: a throughput for {op}, which measured nothing"
    for c in rep["conformance"]:
        assert t[f"gmemstress.conformance.{c['name']}"]["status"] == OUTCOME[c["outcome"]]
    for i in rep["invariants"]:
        assert t[f"gmemstress.invariants.{i['name']}"]["status"] == VERDICT[i["verdict"]]
    kl = rep["kernel_log"]
    want = "FAIL" if kl["findings"] else "PASS" if kl["available"] else "SKIP"
    assert t["gmemstress.kernel_log"]["status"] == want
    fails = [p for p, v in t.items() if p.startswith("gmemstress.kernel_log.findings.")]
    assert len(fails) == len(kl["findings"])
    waived = [v for p, v in t.items() if p.startswith("gmemstress.kernel_log.waived.")]
    assert len(waived) == len(kl.get("waived", []))
    assert all(v["status"] == "DONE" and v["misc"]["waived_by"] for v in waived)
    errors = [p for p in t if p.startswith("gmemstress.tool_errors.")]
    assert len(errors) == len(rep["errors"])
    return t
