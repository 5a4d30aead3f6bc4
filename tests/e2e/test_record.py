"""`gmemstress run --record FILE`: the probes' decoded event stream is saved
with the coverage and the workloads' expectations; without probes it is a
usage error; a recording that cannot be saved does not cost the report, for
`run` and for `watch` alike."""
# gmemstress-test: needs-kvm
import json
import os

from gms_e2e import main, require_kvm, run, skip, tmpdir, validate_report

PROFILE = """name = "record"
duration = "10s"
[guest_memfd]
size = "4MiB"
flags = ["mmap", "init_shared"]
[[workload]]
kind = "host-fault"
duration = "1s"
"""


def test():
    require_kvm()
    if os.geteuid() != 0:
        skip("recording needs the probes: root")
    d = tmpdir()
    report, record = os.path.join(d, "r.json"), os.path.join(d, "events.jsonl")
    prof = os.path.join(d, "record.toml")
    with open(prof, "w") as f:
        f.write(PROFILE)
    SHORT = ["--profile", prof]

    p = run("run", *SHORT, "--report", report, "--record", record, "--quiet")
    if p.returncode == 3:
        skip(f"probes cannot attach here: {p.stderr.strip()}")
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    rep = validate_report(report)
    assert rep["probes"]["status"] == "attached"
    with open(record) as f:
        lines = [json.loads(line) for line in f]
    meta = lines[0]["meta"]
    assert meta["command"] == "run" and meta["profile"] == "record"
    assert meta["recording_dropped"] == 0
    assert meta["coverage"]["attached"], "no attach point in the recording's coverage"
    assert "expect" in meta and meta["expect"].get("gmem_files", 0) > 0, meta.get("expect")
    # Every record decoded from the ring buffer, plus the host's markers (the
    # files' lifecycle, announced by the workloads; the leak drain and the
    # refcounts read after it, by the session), except the events of the
    # secretmem calibration's own file (where fentry runs it), which are not
    # part of the run's stream.
    markers = ("gmem_created", "gmem_released", "leak_drain", "folio_refcount")
    events = [e for e in lines[1:] if e["type"] not in markers]
    assert events, "no event recorded"
    decoded = rep["probes"]["events_decoded"]
    calibration = rep["probes"]["events_of_calibration_files"]
    assert len(events) == decoded - calibration, \
        f"{len(events)} events recorded, {decoded} decoded, {calibration} of the calibration"
    files = [e for e in lines[1:] if e["type"] == "gmem_created"]
    assert len(files) == meta["expect"]["gmem_files"], (len(files), meta["expect"])

    # Without probes there is nothing to record: a usage error, nothing written.
    other = os.path.join(d, "r2.json")
    p = run("run", *SHORT, "--report", other, "--record", record + "2", "--probes", "off")
    assert p.returncode == 2 and "--record" in p.stderr, (p.returncode, p.stderr)
    assert not os.path.exists(other) and not os.path.exists(record + "2")

    # A recording that cannot be saved (the path is a directory): the report
    # is still written, with the error, and the run is an error (exit 4).
    blocked = os.path.join(d, "a-directory")
    os.mkdir(blocked)
    p = run("run", *SHORT, "--report", report, "--record", blocked, "--quiet")
    assert p.returncode == 4, f"exit {p.returncode}: {p.stderr}"
    rep = validate_report(report)
    assert any("recording not saved" in e for e in rep["errors"]), rep["errors"]

    # watch saves its recording the same way: with the command and what it watched...
    wreport, wrecord = os.path.join(d, "w.json"), os.path.join(d, "watch.jsonl")
    WATCH = ["watch", "--all-guest-memfds", "--duration", "1s", "--no-calibrate", "--interval", "0.2"]
    p = run(*WATCH, "--report", wreport, "--record", wrecord, timeout=120)
    assert p.returncode == 0, f"watch: exit {p.returncode}: {p.stderr}"
    rep = validate_report(wreport)
    assert rep["command"] == "watch" and not rep["errors"], rep["errors"]
    with open(wrecord) as f:
        meta = json.loads(f.readline())["meta"]
    assert meta["command"] == "watch" and meta["all"] is True and meta["pid"] == 0, meta
    assert meta["kernel"] == os.uname().release, meta

    # ...and when it cannot, the report is still written, with the error (exit 4).
    os.unlink(wreport)
    p = run(*WATCH, "--report", wreport, "--record", blocked, "--json", timeout=120)
    assert p.returncode == 4, f"watch: exit {p.returncode}: {p.stderr}"
    rep = validate_report(wreport)
    assert rep["command"] == "watch" and rep["verdict"] == "error", rep["verdict"]
    assert any("recording not saved" in e for e in rep["errors"]), rep["errors"]
    assert json.loads(p.stdout)["errors"] == rep["errors"], "--json printed another report"


main(test)
