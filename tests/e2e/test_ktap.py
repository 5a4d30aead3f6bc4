"""`run --ktap` is KTAP the kernel's own parser accepts: a real short run's
KTAP is parsed by tools/testing/kunit/kunit_parser.py (from Debian's
linux-source, scripts/fetch-kunit-parser.sh) without errors, and its passed,
failed and skipped counts equal what the JSON report of the same run says.
A deliberately broken KTAP (a subtest whose result line names another test)
must make the parser report an error, so the check can fail. Also `--ktap -`
(KTAP alone on stdout) and a run in which nothing ran (one SKIP)."""
# gmemstress-test: needs-kvm
import os
import subprocess
import sys

from gms_e2e import (NEEDS_ATTRIBUTES_PROFILE, SOURCE_DIR, main, require_kvm, run, skip, tmpdir,
                     validate_report)



def kunit_parser():
    """The kernel's kunit_parser module, fetched once (SKIP when it cannot be)."""
    script = os.path.join(SOURCE_DIR, "scripts", "fetch-kunit-parser.sh")
    p = subprocess.run([script], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        skip(f"the kernel's KTAP parser is not available: {p.stderr.strip()}")
    sys.path.insert(0, p.stdout.strip().splitlines()[-1])
    import kunit_parser as kp
    return kp


def parse(kp, text):
    """(counts, status). The parser prints its progress and any [ERROR] lines
    itself (on stdout, which ctest shows on failure) and counts the errors."""
    test = kp.parse_run_tests(text.splitlines())
    sys.stdout.flush()
    return test.counts, test.status


def expected_counts(rep):
    """Leaves by outcome, as reports/ktap.h lays them out."""
    n = {"pass": 0, "fail": 0, "skip": 0, "error": 0, "xfail": 0}
    if rep["verdict"] == "skip":
        n["skip"] = 1
        return n
    for w in rep["workloads"]:
        n[w["outcome"]] += 1
        for c in w["checks"]:
            n[c["outcome"]] += 1
    for c in rep["conformance"]:
        n[c["outcome"]] += 1
    for i in rep["invariants"]:
        n[{"verified": "pass", "violated": "fail"}.get(i["verdict"], "skip")] += 1
    n["error"] += len(rep["errors"])
    kl = rep["kernel_log"]
    if kl["findings"]:
        n["fail"] += len(kl["findings"])
    else:
        n["pass" if kl["available"] else "skip"] += 1
    n["xfail"] += len(kl.get("waived", []))  # waived findings: ok # XFAIL
    return n


def check_against_report(kp, ktap, rep, what):
    counts, status = parse(kp, ktap)
    print(f"{what}: {counts} ({status})")
    assert counts.errors == 0, f"{what}: {counts.errors} parse errors (above) in:\n{ktap}"
    n = expected_counts(rep)
    got = (counts.passed, counts.failed, counts.skipped, counts.crashed)
    # kunit_parser reads "ok ... # XFAIL" as a pass.
    want = (n["pass"] + n["xfail"], n["fail"] + n["error"], n["skip"], 0)
    assert got == want, f"{what}: kunit_parser counted (passed, failed, skipped, crashed) " \
        f"{got}, the JSON report says {want}"
    totals = ktap.rstrip("\n").splitlines()[-1]
    assert totals == (f"# Totals: pass:{n['pass']} fail:{n['fail']} xfail:{n['xfail']} xpass:0 "
                      f"skip:{n['skip']} error:{n['error']}"), totals


def test():
    require_kvm()
    kp = kunit_parser()
    d = tmpdir()
    report, ktap = os.path.join(d, "r.json"), os.path.join(d, "r.ktap")

    # A real short run (the smoke profile, shortened).
    p = run("run", "--profile", "smoke", "--duration", "4s", "--report", report, "--ktap", ktap,
            "--quiet", timeout=300)
    assert p.returncode in (0, 1), f"smoke: exit {p.returncode}\n{p.stderr}"
    rep = validate_report(report)
    text = open(ktap).read()
    assert text.startswith("KTAP version 1\n"), text[:200]
    check_against_report(kp, text, rep, "smoke")

    # A run with a real failure (a wrong WRITE bit: io.write_validation
    # fails), KTAP on stdout: nothing else there, the summary on stderr.
    p = run("run", "--profile", "conformance", "--probes", "off", "--flag-bit", "write=0",
            "--report", report, "--ktap", "-", "--exit-codes", "kselftest")
    assert p.returncode == 1, f"conformance with a wrong bit: exit {p.returncode}\n{p.stderr}"
    assert p.stdout.startswith("KTAP version 1\n"), p.stdout[:300]
    assert "verdict: fail" in p.stderr, p.stderr
    rep = validate_report(report)
    assert rep["verdict"] == "fail", rep["verdict"]
    check_against_report(kp, p.stdout, rep, "conformance, failing")

    # Nothing ran: one SKIP, never 1..0; kselftest's skip code.
    prof = os.path.join(d, "needs.toml")
    with open(prof, "w") as f:
        f.write(NEEDS_ATTRIBUTES_PROFILE)
    p = run("run", "--profile", prof, "--report", report, "--ktap", "-", "--exit-codes",
            "kselftest")
    rep = validate_report(report)
    if rep["verdict"] == "skip":
        assert p.returncode == 4, f"nothing ran, kselftest style: exit {p.returncode}"
        assert "1..1\n" in p.stdout and "ok 1 gmemstress # SKIP nothing ran" in p.stdout, p.stdout
    check_against_report(kp, p.stdout, rep, "nothing ran")

    # The check can fail: a subtest whose result line names another test.
    broken = text.replace("ok 1 workload.host-fault\n", "ok 1 workload.host-faults\n", 1)
    assert broken != text, "the smoke KTAP has no workload.host-fault subtest to break"
    counts, _ = parse(kp, broken)
    print(f"broken: {counts}")
    assert counts.errors > 0, "kunit_parser accepted a mismatched subtest name"


main(test)
