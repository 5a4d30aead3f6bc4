"""`gmemstress probe-cost` on the host: pairs of runs with the probes off and
on, ratios per pair, a verdict that follows from the figures; bad input and
interruption handled like `run`. The cost figure itself is not asserted (a
timed test proves nothing): only that it was measured honestly."""
# gmemstress-test: needs-kvm
import json
import os
import signal
import subprocess
import time

from gms_e2e import GMS_BIN, main, require_kvm, run, skip, tmpdir

SHORT = ["--set", "workload.host-fault.duration=\"1s\"", "--set", "workload.guest-fault.duration=\"1s\""]


def check_report(rep, rc):
    assert rep["command"] == "probe-cost"
    assert rep["pairs"], "no pair of runs"
    orders = [p["order"] for p in rep["pairs"]]
    assert orders[0] == "on,off", "rep 1 should start with the probes on (fail fast)"
    if len(orders) > 1:
        assert orders[1] == "off,on", orders
    for p in rep["pairs"]:
        assert p["on"]["backends"], "probes-on run without a backend in use"
        assert "tracepoint" in p["on"]["backends"] or "fentry" in p["on"]["backends"] \
            or "kprobe" in p["on"]["backends"]
    by_label = {w["label"]: w for w in rep["workloads"]}
    hf = by_label["host-fault"]
    assert hf["measured"], hf
    assert len(hf["ratios"]) == len(rep["pairs"])
    for p, ratio in zip(rep["pairs"], hf["ratios"]):
        want = p["on"]["ops_per_s"]["host-fault"] / p["off"]["ops_per_s"]["host-fault"]
        assert abs(ratio - want) < 1e-9, (ratio, want)
    # The verdict follows from the figures.
    lost = sum(p["on"]["losses"] for p in rep["pairs"])
    over = [w for w in rep["workloads"] if w["measured"] and w["cost"] > rep["max_cost"]]
    if lost or over or rep["kernel_log"]["findings"]:
        assert rep["verdict"] == "fail" and rc == 1, (rep["verdict"], rc, rep["verdict_reason"])
    else:
        assert rep["verdict"] == "pass" and rc == 0, (rep["verdict"], rc, rep["verdict_reason"])
    assert rep["verdict_reason"]


def test():
    require_kvm()
    if os.geteuid() != 0:
        skip("probe-cost attaches BPF programs: needs root")
    d = tmpdir()
    report = os.path.join(d, "cost.json")

    p = run("probe-cost", "--reps", "2", "--report", report, *SHORT, timeout=300)
    print(p.stdout, p.stderr)
    if p.returncode == 3:
        skip(f"probes cannot attach here: {p.stderr.strip()}")
    assert p.returncode in (0, 1), f"exit {p.returncode}"
    rep = json.load(open(report))
    check_report(rep, p.returncode)
    assert "on/off" in p.stdout and "verdict:" in p.stdout

    # A target nothing can meet fails, naming the workload; 0% is allowed.
    p = run("probe-cost", "--reps", "1", "--max-cost", "0%", "--report", report, *SHORT,
            "--set", "workload.host-fault.threads=1", timeout=300)
    rep = json.load(open(report))
    hf = next(w for w in rep["workloads"] if w["label"] == "host-fault")
    if hf["median_ratio"] < 1:
        assert p.returncode == 1 and "host-fault" in rep["verdict_reason"], rep["verdict_reason"]

    # Bad input: exit 2, named, nothing written.
    bad = os.path.join(d, "bad.json")
    for args, needle in ((["--reps", "0"], "--reps 0"), (["--max-cost", "120%"], "--max-cost 120%"),
                         (["--max-cost", "cheap"], "--max-cost cheap"),
                         (["--probe-backend", "dtrace"], "dtrace")):
        p = run("probe-cost", "--report", bad, *args)
        assert p.returncode == 2, f"{args}: exit {p.returncode}\n{p.stderr}"
        assert needle in p.stderr, f"{args}: stderr lacks {needle!r}: {p.stderr}"
    assert not os.path.exists(bad)

    # SIGINT: the pairs done so far are kept, the report is marked, exit 130.
    proc = subprocess.Popen([GMS_BIN, "probe-cost", "--reps", "50", "--report", report, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"exit {proc.returncode}: {err}"
    rep = json.load(open(report))
    assert rep["interrupted"] is True and "SIGINT" in rep["interrupt_reason"]
    assert len(rep["pairs"]) < 50


main(test)
