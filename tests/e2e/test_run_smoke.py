"""The default profile end to end on the real /dev/kvm: exit code, report, JUnit."""
# gmemstress-test: needs-kvm
import os
import xml.etree.ElementTree as ET

from gms_e2e import main, require_kvm, run, tmpdir, validate_report


def test():
    require_kvm()
    d = tmpdir()
    report, junit = os.path.join(d, "smoke.json"), os.path.join(d, "smoke.xml")
    p = run("run", "--report", report, "--junit", junit, timeout=120)
    print(p.stdout)
    print(p.stderr)
    rep = validate_report(report)
    expected_rc = {"pass": 0, "fail": 1, "error": 4}[rep["verdict"]]
    assert p.returncode == expected_rc, f"exit {p.returncode} for verdict {rep['verdict']}"
    assert rep["command"] == "run" and rep["profile"]["name"] == "smoke"
    assert not rep["interrupted"]
    assert rep["duration_s"] < 20, f"smoke took {rep['duration_s']}s (budget 15s)"
    ran = [w for w in rep["workloads"] if w["outcome"] != "skip"]
    assert ran, "every smoke workload skipped"
    for w in ran:
        assert sum(o["count"] for o in w["ops"].values()) > 0, f"{w['label']} did nothing"
    assert rep["verdict"] == "pass", f"smoke verdict {rep['verdict']}: {p.stdout}"

    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= len(rep["workloads"]) + len(rep["invariants"])
    skipped = [c for c in cases if c.find("skipped") is not None]
    for c in skipped:
        assert c.find("skipped").get("message"), f"JUnit skip without a reason: {c.get('name')}"


main(test)
