"""Bounded memory and time; same seed, same sequence of operations."""
# gmemstress-test: needs-kvm
import json
import os

from gms_e2e import main, require_kvm, run, tmpdir, validate_report


def test():
    require_kvm()
    d = tmpdir()
    report = os.path.join(d, "r.json")
    # 4 TiB per guest_memfd can never fit: refused up front, exit 3, nothing written.
    p = run("run", "--gmem-size", "4TiB", "--report", report)
    assert p.returncode == 3, f"exit {p.returncode}: {p.stderr}"
    assert "MemAvailable" in p.stderr, p.stderr
    assert not os.path.exists(report)

    # --duration bounds the run even when the profile asks for more.
    p = run("run", "--profile", "fault-storm", "--duration", "3s", "--gmem-size", "8MiB",
            "--report", report, "--quiet", "--probes", "off", timeout=60)
    rep = validate_report(report)
    assert rep["duration_s"] < 8, f"--duration 3s ran {rep['duration_s']}s"

    # Same seed and op counts: the same operations.
    def counts(seed):
        path = os.path.join(d, f"seed{seed}.json")
        run("run", "--profile", "smoke", "--seed", str(seed), "--set", "workload.host-fault.ops=3000",
            "--set", "workload.host-fault.threads=1", "--set", "workload.host-fault.duration=60",
            "--set", "duration=120", "--probes", "off", "--report", path, "--quiet", timeout=180)
        rep = validate_report(path)
        hf = next(w for w in rep["workloads"] if w["name"] == "host-fault")
        return {k: v["count"] for k, v in hf["ops"].items()}, hf["verification"]["pages_checked"]

    a, b = counts(5), counts(5)
    assert a == b, f"same seed, different operations: {a} vs {b}"


main(test)
