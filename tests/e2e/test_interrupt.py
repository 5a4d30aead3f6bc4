"""SIGINT/SIGTERM: workloads stop, the report is written, marked interrupted, exit 130."""
# gmemstress-test: needs-kvm
import os
import signal
import subprocess
import time

from gms_e2e import GMS_BIN, main, require_kvm, tmpdir, validate_report


def interrupt(sig):
    d = tmpdir()
    report = os.path.join(d, "r.json")
    p = subprocess.Popen([GMS_BIN, "run", "--profile", "soak", "--duration", "60s", "--report", report,
                          "--quiet", "--gmem-size", "16MiB", "--probes", "off"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Probes off: what is under test is the stop and the report; the probes'
    # teardown (tested by the probes' own tests) takes ~20 s under the lab's TCG.
    time.sleep(3)
    t0 = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    waited = time.monotonic() - t0
    print(out, err)
    assert p.returncode == 130, f"exit {p.returncode} after {signal.Signals(sig).name}"
    assert waited < 15, f"took {waited:.1f}s to stop"
    rep = validate_report(report)
    assert rep["interrupted"] is True
    assert signal.Signals(sig).name in rep["interrupt_reason"], rep["interrupt_reason"]
    assert rep["duration_s"] < 20


def test():
    require_kvm()
    interrupt(signal.SIGINT)
    interrupt(signal.SIGTERM)


main(test)
