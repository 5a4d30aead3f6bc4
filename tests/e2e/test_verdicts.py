"""A run in which nothing ran is verdict `skip` (exit 3), never `pass`: a
workload that did no operation and ran no check is `skip` with a reason; one
workload that ran is enough for a pass. The honesty rules of validate_report()
catch a report that claims otherwise."""
# gmemstress-test: needs-kvm
import copy
import os

from gms_e2e import (NOTHING_RUNS_PROFILE, check_honesty, main, require_kvm, run, tmpdir,
                     validate_report)

RAN = """[[workload]]
kind = "host-fault"
ops = 200
duration = "5s"
"""


def rejects(rep, why):
    try:
        check_honesty(rep)
    except AssertionError as e:
        print(f"rejected as expected ({why}): {e}")
        return
    raise AssertionError(f"validate_report accepted a dishonest report: {why}")


def test():
    require_kvm()
    d = tmpdir()
    prof = os.path.join(d, "nothing.toml")
    with open(prof, "w") as f:
        f.write(NOTHING_RUNS_PROFILE)
    report = os.path.join(d, "r.json")
    p = run("run", "--profile", prof, "--report", report)
    print(p.stdout)
    assert p.returncode == 3, f"nothing ran: exit {p.returncode}, expected 3\n{p.stderr}"
    assert "verdict: skip" in p.stdout, p.stdout
    rep = validate_report(report)
    assert rep["verdict"] == "skip", rep["verdict"]
    (w,) = rep["workloads"]
    assert w["outcome"] == "skip" and "nothing ran" in w["reason"], (w["outcome"], w["reason"])

    # The same report, doctored the old way (the workload and the verdict say
    # pass): the honesty rules must refuse it.
    bad = copy.deepcopy(rep)
    bad["workloads"][0]["outcome"] = "pass"
    bad["verdict"] = "pass"
    rejects(bad, "a workload passed without running anything")
    bad = copy.deepcopy(rep)
    bad["verdict"] = "pass"
    rejects(bad, "verdict pass with every workload skipped")

    # One workload that ran makes it a pass; the one that did not is listed as skipped.
    with open(prof, "a") as f:
        f.write(RAN)
    p = run("run", "--profile", prof, "--report", report, "--quiet")
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    rep = validate_report(report)
    assert rep["verdict"] == "pass", rep["verdict"]
    outcomes = {w["name"]: w["outcome"] for w in rep["workloads"]}
    assert outcomes == {"lifecycle": "skip", "host-fault": "pass"}, outcomes
    # A pass hiding a workload that claims pass without running: refused too.
    bad = copy.deepcopy(rep)
    bad["workloads"][0]["outcome"] = "pass"
    rejects(bad, "a workload passed without running anything, next to one that ran")


main(test)
