#!/usr/bin/env python3
"""`gmemstress probe-cost` in the lab (fentry): the pairs of runs happen in one
boot and the report comes back with its "lab" section; the hand-out programs
load as fentry (a verifier rejection would silently fall back to kprobes and
change what is measured); no event is lost; with the probes on, uptodate and
page-cache balance are verified in every run; the verdict follows from the
figures. The cost figure itself is printed, not asserted (docs/PROBES.md)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fetch_kernel, load_json  # noqa: E402

kernel = fetch_kernel()
lab = Lab()
try:
    report_path = lab.path("cost.json")
    p = lab.run(["--kernel", kernel["kernel"], "--guest-command", "probe-cost", "--timeout", "420s",
                 "--report", report_path, "--", "--reps", "2",
                 "--set", "workload.host-fault.duration=\"1s\"",
                 "--set", "workload.guest-fault.duration=\"1s\""], timeout=500)
    print("--- guest stdout ---\n" + p.stdout + "--- end ---")
    check(p.returncode in (0, 1), f"probe-cost measured in the guest (exit {p.returncode})")
    check(os.path.exists(report_path), "the report came back to the host")
    rep = load_json(report_path)
    check(rep.get("command") == "probe-cost", "it is a probe-cost report")
    lab_info = rep.get("lab", {})
    check(lab_info.get("kernel_release") == kernel["release"] and
          lab_info.get("guest_exit_status") == p.returncode,
          f"the report has the lab section ({lab_info.get('kernel_release')}, "
          f"exit {lab_info.get('guest_exit_status')})")

    points = {a["name"]: a for a in rep.get("probes", {}).get("attach_points", [])}
    for name in ("user_fault", "get_pfn"):
        a = points.get(name, {})
        check(a.get("attached") and a.get("backend") == "fentry" and not a.get("rejected"),
              f"{name} attached as fentry, no variant rejected ({a.get('backend')}, "
              f"{a.get('rejected')})")

    pairs = rep.get("pairs", [])
    check(len(pairs) == 2, f"both pairs of runs completed ({len(pairs)})")
    for pr in pairs:
        on = pr["on"]
        check("fentry" in on["backends"], f"rep {pr['rep']}: fentry in use ({on['backends']})")
        check(on["losses"] == 0, f"rep {pr['rep']}: no event lost ({on['losses']})")
        verdicts = {i["name"]: i for i in on["invariants"]}
        for name in ("uptodate", "page_cache_balance"):
            check(verdicts.get(name, {}).get("verdict") == "verified",
                  f"rep {pr['rep']}: {name} verified with the probes on "
                  f"({verdicts.get(name, {}).get('reason')})")
        judged = verdicts["uptodate"]["evidence"].get("judged_in_bpf_user", 0)
        check(judged > 0, f"rep {pr['rep']}: host-fault hand-outs judged in BPF ({judged})")

    measured = {w["label"]: w for w in rep.get("workloads", []) if w.get("measured")}
    check({"host-fault", "guest-fault"} <= set(measured),
          f"both workloads measured ({sorted(measured)})")
    over = [w for w in measured.values() if w["cost"] > rep["max_cost"]]
    want = 1 if over else 0
    check(p.returncode == want and rep["verdict"] == ("fail" if over else "pass"),
          f"the verdict follows from the figures ({rep['verdict']}: {rep['verdict_reason']})")
    for w in measured.values():
        print(f"{w['label']}: on/off {w['median_ratio']:.3f} over {len(w['ratios'])} pairs "
              f"(under {lab_info.get('accel')})")
finally:
    lab.cleanup()
print("PASS")
