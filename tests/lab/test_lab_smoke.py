#!/usr/bin/env python3
"""The `smoke` profile in the lab on Debian's newest kernel, with probes: the
report comes back with its "lab" section; fentry/kprobe probes were used; the
secretmem calibration saw direct-map zap/restore pairs; the uptodate,
page-cache and direct-map invariants were verified with event counts matching
the workloads (the direct map checked on every folio the page cache saw); the
guest's kernel log had no findings; the guest's plain progress lines were
relayed while it ran (its stderr is not a terminal: no carriage returns);
--html drew every operation. Prints the boot-to-report time (docs/LAB.md)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_invariants, check_kernel_log,  # noqa: E402
                        check_lab_section, check_probes, fetch_kernel, invariant, load_json)


def check_direct_map(report):
    """direct_map verified on every folio added to a watched page cache (the
    checker takes its folios from the same tracepoint as the balance)."""
    dm = invariant(report, "direct_map")
    check(dm.get("verdict") == "verified", f"direct_map verified ({dm.get('reason')})")
    ev = dm.get("evidence", {})
    pc = invariant(report, "page_cache_balance").get("evidence", {})
    check(ev.get("lost_events", 1) == 0, "no probe events lost (direct map)")
    check(ev.get("folios_watched", 0) > 0 and ev.get("folios_watched") == pc.get("folios_added"),
          f"the direct map was checked on every folio added ({ev.get('folios_watched')} of "
          f"{pc.get('folios_added')})")


kernel = fetch_kernel()
lab = Lab()
try:
    report_path = lab.path("smoke.json")
    html_path = lab.path("smoke.html")
    p = lab.run(["--kernel", kernel["kernel"], "--profile", "smoke", "--cpus", "2",
                 "--timeout", "420s", "--report", report_path, "--html", html_path,
                 "--keep-console", lab.path("console.log"), "--", "--probes", "on"], timeout=500)
    print("--- guest stdout ---\n" + p.stdout + "--- end ---")
    check(os.path.exists(report_path), "the report came back to the host")
    report = load_json(report_path)
    lab_info = check_lab_section(report, kernel, p.returncode)
    check(p.returncode == 0, f"gmemstress run passed in the guest (exit {p.returncode}, verdict "
                             f"{report.get('verdict')})")
    check(report.get("verdict") == "pass", "the report's verdict is pass")
    check(all(w.get("outcome") in ("pass", "skip") for w in report.get("workloads", [])),
          "no workload failed")
    ran = [w["name"] for w in report.get("workloads", []) if w.get("outcome") == "pass"]
    check(len(ran) >= 3, f"the workloads ran in the guest ({ran})")
    check_probes(report)
    check_invariants(report)
    check_direct_map(report)
    check_kernel_log(report)
    relayed = [line for line in p.stderr.splitlines() if line.startswith("lab: guest: [")]
    check(len(relayed) >= 2 and all(" ops, " in line for line in relayed),
          f"the guest's progress lines were relayed ({len(relayed)} lines)")
    check("\r" not in p.stderr and "gmemstress: progress" not in p.stderr,
          "plain lines, no carriage returns, none printed twice")
    html = open(html_path).read()
    ops = sum(1 for w in report["workloads"] for o in w["ops"].values() if o["latency_ns"]["count"])
    check(html.count('<section class="op') == ops > 0, f"--html drew the {ops} operations")
    print(f"boot-to-report: {p.elapsed:.1f} s (boot {lab_info.get('boot_s', 0):.1f} s, run "
          f"{lab_info.get('run_s', 0):.1f} s) on {lab_info.get('cpus')} cpus under "
          f"{lab_info.get('accel')}")

    # smoke races punch-hole against faults, so its page-cache total cannot be
    # predicted exactly. Once more without that race: every workload then
    # accounts its pages and the probes' counts must match them exactly.
    report_path = lab.path("smoke-exact.json")
    p = lab.run(["--kernel", kernel["kernel"], "--profile", "smoke", "--timeout", "420s",
                 "--report", report_path, "--", "--probes", "on",
                 "--set", "workload.punch-hole.race=\"none\"", "--duration", "8s"], timeout=500)
    check(p.returncode == 0, f"smoke without the punch-hole race passed (exit {p.returncode})")
    report = load_json(report_path)
    touching = [w["name"] for w in report["workloads"]
                if w.get("outcome") != "skip" and w.get("counters", {}).get("gmem_files", 0) > 0]
    exact = [w["name"] for w in report["workloads"]
             if "expected_pages_added" in w.get("counters", {})]
    check(touching and set(touching) <= set(exact),
          f"every workload accounts its page-cache pages exactly ({exact} of {touching})")
    check_invariants(report)
    check_direct_map(report)
    check_kernel_log(report)
finally:
    lab.cleanup()
print("PASS")
