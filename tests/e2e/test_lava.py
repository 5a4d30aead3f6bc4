"""`run --lava`: with LAVA's helpers on PATH (fake lava-test-case and
lava-test-set scripts that record their arguments) they are called once per
case and set, with the results the JSON report of the same run implies
(measurements with their units); without them, the same calls are printed
as the signal lines LAVA's dispatcher parses (<LAVA_SIGNAL_TESTCASE
TEST_CASE_ID=... RESULT=...>, TESTSET START/STOP, STARTTC/ENDTC around a
case's log), checked here with the dispatcher's own parsing rules (a
parameter is KEY=VALUE split at blanks). A helper that fails turns a pass
into a tool error (exit 4): results LAVA did not record are not a pass."""
# gmemstress-test: needs-kvm
import os
import re
import shlex
import stat

from gms_e2e import main, require_kvm, run, tmpdir, validate_report

RESULT = {"pass": "pass", "fail": "fail", "skip": "skip", "error": "unknown"}
VERDICT = {"verified": "pass", "violated": "fail", "unverifiable": "skip", "incomplete": "unknown"}


def name(s):
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", s) or "unnamed"


def expected(rep):
    """{case: (set, result, has measurement)} as reports/lava.h lays them out."""
    out = {}

    def add(set_name, case, result, measured=False):
        base = unique = name(case)
        k = 2
        while unique in out:
            unique, k = f"{base}_{k}", k + 1
        out[unique] = (set_name, result, measured)

    for w in rep["workloads"]:
        s, pre = f"workload.{w['label']}", f"workload.{w['label']}."
        add(s, pre + "run", RESULT[w["outcome"]])
        for c in w["checks"]:
            add(s, pre + c["name"], RESULT[c["outcome"]])
        ran = w["outcome"] != "skip" and w["duration_s"] > 0 and (
            any(op["count"] for op in w["ops"].values()) or w["verification"]["pages_checked"]
            or any(c["outcome"] != "skip" for c in w["checks"]))
        for op, st in sorted(w["ops"].items()):
            if not ran or not st["latency_ns"]["count"]:
                continue
            metrics = ["throughput"] + (["bandwidth"] if st["bytes"] else []) + \
                ["latency_p50", "latency_p99", "latency_max"]
            for m in metrics:
                add(s, f"{pre}{op}.{m}", "pass", True)
    for c in rep["conformance"]:
        add("conformance", "conformance." + c["name"], RESULT[c["outcome"]])
    for i in rep["invariants"]:
        add("invariants", "invariants." + i["name"], VERDICT[i["verdict"]])
    for k, _ in enumerate(rep["errors"]):
        add("tool_errors", f"tool_errors.error_{k + 1}", "unknown")
    kl = rep["kernel_log"]
    if not kl["available"]:
        add("kernel_log", "kernel_log.scan", "skip")
    elif not kl["findings"]:
        add("kernel_log", "kernel_log.clean", "pass")
    for f in kl["findings"]:
        add("kernel_log", "kernel_log." + f["kind"], "fail")
    for f in kl.get("waived", []):
        add("kernel_log", "kernel_log.waived." + f["kind"], "pass")
    verdict = RESULT[rep["verdict"]]
    add("", "gmemstress", "unknown" if rep["interrupted"] and verdict != "fail" else verdict)
    return out


def fake_helpers(d, fail_on=None):
    """lava-test-case and lava-test-set that append their argv to calls.txt
    (lava-test-case exits 1 for the case named fail_on)."""
    bindir = os.path.join(d, "lava-bin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(d, "calls.txt")
    for prog in ("lava-test-case", "lava-test-set"):
        path = os.path.join(bindir, prog)
        fail = f'[ "$1" = {shlex.quote(fail_on)} ] && exit 1\n' if fail_on and prog == \
            "lava-test-case" else ""
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nprintf '%s\\n' \"{prog} $*\" >> {shlex.quote(log)}\n{fail}exit 0\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bindir, log


def env_with_path(prefix=None):
    env = dict(os.environ)
    dirs = [p for p in env.get("PATH", "").split(":")
            if p and not os.path.exists(os.path.join(p, "lava-test-case"))
            and not os.path.exists(os.path.join(p, "lava-test-set"))]
    env["PATH"] = ":".join(([prefix] if prefix else []) + dirs)
    return env


def parse_calls(lines):
    """[(kind, args)] from the fake helpers' log or from signal lines."""
    calls = []
    for line in lines:
        m = re.fullmatch(r"<LAVA_SIGNAL_(\S+) ([^>]+)>", line)  # the dispatcher's pattern
        if m:
            calls.append(("signal", m.group(1), m.group(2).split()))
        elif line.startswith(("lava-test-case ", "lava-test-set ")):
            w = line.split()
            calls.append(("helper", w[0], w[1:]))
    return calls


def check_cases(cases, sets, rep, what):
    want = expected(rep)
    got = {c: (s, r, m is not None) for c, (s, r, m, _) in cases.items()}
    assert got == want, f"{what}: cases differ from the report:\n" + "\n".join(
        f"  {k}: got {got.get(k)}, want {want.get(k)}" for k in sorted(set(got) | set(want))
        if got.get(k) != want.get(k))
    for c, (_, _, m, units) in cases.items():
        if m is not None:
            float(m)
            assert units in ("ops/s", "B/s", "ns"), (c, units)
    assert sets and all(n == 1 for n in sets.values()), f"{what}: sets {sets}"


def from_helpers(calls):
    cases, sets, current = {}, {}, ""
    for kind, prog, args in calls:
        if kind != "helper":
            continue
        if prog == "lava-test-set":
            assert args[0] in ("start", "stop") and len(args) == 2, args
            if args[0] == "start":
                assert current == "", f"set {args[1]} started inside {current}"
                current = args[1]
                sets[current] = sets.get(current, 0) + 1
            else:
                assert args[1] == current, f"stop {args[1]} while in {current}"
                current = ""
            continue
        opts = dict(zip(args[1::2], args[2::2]))
        assert args[0] not in cases, f"case {args[0]} reported twice"
        assert set(opts) <= {"--result", "--measurement", "--units"}, args
        cases[args[0]] = (current, opts["--result"], opts.get("--measurement"), opts.get("--units"))
    assert current == "", f"set {current} never stopped"
    return cases, sets


def from_signals(calls):
    cases, sets, current, open_tc = {}, {}, "", None
    for _, sig, params in calls:
        if sig == "TESTSET":
            if params[0] == "START":
                assert current == "" and len(params) == 2, params
                current = params[1]
                sets[current] = sets.get(current, 0) + 1
            else:
                assert params == ["STOP"] and current, params
                current = ""
        elif sig == "STARTTC":
            assert open_tc is None, params
            open_tc = params[0]
        elif sig == "ENDTC":
            assert open_tc == params[0], (open_tc, params)
            open_tc = None
        elif sig == "TESTCASE":
            data = {}
            for p in params:  # the dispatcher's handle_testcase()
                parts = p.split("=")
                assert len(parts) == 2, f"malformed signal parameter {p!r}"
                data[parts[0].lower()] = parts[1]
            c = data["test_case_id"]
            assert c not in cases, f"case {c} reported twice"
            cases[c] = (current, data["result"], data.get("measurement"), data.get("units"))
    assert current == "" and open_tc is None
    return cases, sets


def test():
    require_kvm()
    d = tmpdir()
    report = os.path.join(d, "r.json")

    # With the helpers on PATH: they are called, no TESTCASE line is printed.
    bindir, log = fake_helpers(d)
    p = run("run", "--profile", "smoke", "--duration", "4s", "--report", report, "--lava",
            env=env_with_path(bindir), timeout=300)
    assert p.returncode in (0, 1), f"smoke: exit {p.returncode}\n{p.stderr}"
    rep = validate_report(report)
    with open(log) as f:
        calls = parse_calls(f.read().splitlines())
    cases, sets = from_helpers(calls)
    check_cases(cases, sets, rep, "helpers")
    assert "<LAVA_SIGNAL_TESTCASE" not in p.stdout and "<LAVA_SIGNAL_TESTSET" not in p.stdout
    assert any(m for _, _, m, _ in cases.values()), "no measurement reported"
    print(f"helpers: {len(cases)} cases in {len(sets)} sets, verdict {rep['verdict']}")

    # Without them: signal lines on stdout, after the summary; a real failure.
    p = run("run", "--profile", "conformance", "--probes", "off", "--flag-bit", "write=0",
            "--report", report, "--lava", env=env_with_path(), timeout=300)
    assert p.returncode == 1, f"conformance with a wrong bit: exit {p.returncode}\n{p.stderr}"
    rep = validate_report(report)
    lines = p.stdout.splitlines()
    assert "verdict: fail" in lines[:lines.index(next(l for l in lines if l.startswith("<LAVA")))]
    cases, sets = from_signals(parse_calls(lines))
    check_cases(cases, sets, rep, "signal lines")
    assert cases["gmemstress"][1] == "fail"
    assert "<LAVA_SIGNAL_STARTTC gmemstress>" in lines
    failed = [c for c, v in cases.items() if v[1] == "fail" and c != "gmemstress"]
    assert failed, "no failed case"
    print(f"signal lines: {len(cases)} cases, failed {failed}")

    # A helper that fails: exit 4, not 0 or 1, and stderr says which.
    bindir, log = fake_helpers(os.path.join(d, "failing"), fail_on="gmemstress")
    p = run("run", "--profile", "smoke", "--duration", "2s", "--report", report, "--lava",
            "--quiet", env=env_with_path(bindir), timeout=300)
    rep = validate_report(report)
    if rep["verdict"] == "pass":
        assert p.returncode == 4, f"a failed lava-test-case call: exit {p.returncode}"
    assert "LAVA: lava-test-case gmemstress --result" in p.stderr, p.stderr


main(test)
