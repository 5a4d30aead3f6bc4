#!/usr/bin/env python3
"""Error-path sweeps with fail-nth (profile fault-inject, docs/FAULT_INJECTION.md).

On the project's test kernel (CONFIG_FAULT_INJECTION, FAILSLAB,
FAIL_PAGE_ALLOC, KVM_SW_PROTECTED_VM): every guest_memfd call is swept, real
faults are injected into each call that allocates, each sweep runs until an
N injects nothing, and the clean kernel shows no leak, no failure and no
kernel-log finding (exit 0). The debugfs settings the sweep changed are back
to the kernel's defaults afterwards.

With the plant error-leak (a reference kept on fallocate's error path, reached
only by a failed allocation) smoke passes and the allocate sweep fails,
finding the leak (exit 1).

On Debian's kernel (no CONFIG_FAULT_INJECTION) the workload skips, naming
fail-nth, and nothing having run, gmemstress exits 3.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import (Lab, check, check_schema, fail, fetch_kernel, load_json,  # noqa: E402
                        require_host_tools)

# Calls that allocate (kernel memory or pages): each must have faults injected.
ALLOCATING = ("create", "allocate", "bind", "unbind", "set_attributes", "pre_fault",
              "first_touch")
ALL_CALLS = ALLOCATING + ("punch",)


def sweep_run(lab, name, args, timeout):
    """One fault-inject run on the test kernel: (exit status, report, the
    workload's result, its sweeps by call)."""
    report = lab.path(name)
    p = lab.run(["--test-kernel", "--offline"] + args + ["-r", report], timeout=timeout)
    if not os.path.exists(report):
        fail(f"{name}: no report from the test kernel (exit {p.returncode})")
    r = load_json(report)
    check_schema(r)
    (w,) = [w for w in r["workloads"] if w["name"] == "fault-inject"]
    return p, r, w, {s["call"]: s for s in w.get("fault_sweeps", [])}


def sweep_on_test_kernel(lab):
    p, r, w, sweeps = sweep_run(lab, "fault-inject.json", ["-p", "fault-inject"], 1500)
    check(sorted(sweeps) == sorted(ALL_CALLS),
          f"every call was swept ({sorted(sweeps)})")
    for call in ALL_CALLS:
        s = sweeps[call]
        print(f"{call:15} {s['outcome']:5} injected {s['faults_injected']:4} "
              f"N {s['n_range'][0]}..{s['n_range'][1]} exhausted={s['exhausted']} "
              f"errnos={s['errnos']} ok-despite={s['succeeded_despite_fault']} "
              f"leaks={s['leaks']} failures={s['failures']} "
              f"unevictable_delta_kb={s['unevictable_delta_kb']}")
    for call in ALL_CALLS:
        s = sweeps[call]
        check(s["outcome"] == "pass",
              f"{call}: passes on the clean test kernel ({s['outcome']}: {s['reason']}; "
              f"{s['first_failures'][:2]} {s['first_leaks'][:2]})")
        check(s["leaks"] == 0 and not s["first_leaks"], f"{call}: no leak")
        check(s["failures"] == 0, f"{call}: no failure")
        check(s["exhausted"], f"{call}: swept until an N injected nothing "
                              f"(bounded by {s['bounded_by']!r})")
        check(s["unevictable_delta_kb"] is not None and s["unevictable_delta_kb"] <= 0,
              f"{call}: Unevictable came back ({s['unevictable_delta_kb']} kB)")
        # Every injected fault is accounted for: an errno or a success.
        check(sum(s["errnos"].values()) + s["succeeded_despite_fault"] == s["faults_injected"],
              f"{call}: each injected fault ended in an errno or a success")
        check(s["attempts"] == s["faults_injected"] + 1,
              f"{call}: N ran 1..{s['n_range'][1]} with a fault at each N but the last "
              f"({s['attempts']} attempts, {s['faults_injected']} faults)")
    for call in ALLOCATING:
        check(sweeps[call]["faults_injected"] > 0,
              f"{call}: real faults were injected ({sweeps[call]['faults_injected']})")
    check(sweeps["allocate"]["errnos"].get("ENOMEM", 0) > 0,
          f"allocate: fallocate failed with ENOMEM under injection ({sweeps['allocate']['errnos']})")
    check(not r["kernel_log"]["findings"],
          f"no kernel-log finding ({r['kernel_log']['findings'][:2]})")
    check(w["outcome"] == "pass", f"the workload passes ({w['outcome']}: {w['reason']})")
    check(p.returncode == 0, f"gmemstress lab exited 0 (got {p.returncode})")
    return r


def settings_restored(lab):
    """After a sweep in the same boot, debugfs holds the kernel's defaults again."""
    gms = os.environ["GMS_BIN"]
    script = ("\"$0\" run -p fault-inject --set workload.0.calls='[\"allocate\"]' "
              "--set duration=60s --probes off -r /tmp/r.json >/dev/null 2>&1; echo rc=$?; "
              "cd /sys/kernel/debug && for f in failslab/ignore-gfp-wait failslab/probability "
              "failslab/times failslab/verbose fail_page_alloc/ignore-gfp-wait "
              "fail_page_alloc/ignore-gfp-highmem fail_page_alloc/min-order "
              "fail_page_alloc/times; do echo \"$f=$(cat $f)\"; done")
    p = lab.run(["--test-kernel", "--offline", "--exec", "--",
                 "/bin/sh", "-c", script, gms],
                timeout=900)
    values = dict(line.split("=", 1) for line in p.stdout.split() if "=" in line)
    print(values)
    check(values.get("rc") == "0", f"the allocate sweep passed in that boot (rc={values.get('rc')})")
    want = {"failslab/ignore-gfp-wait": "Y", "failslab/probability": "0", "failslab/times": "1",
            "failslab/verbose": "2", "fail_page_alloc/ignore-gfp-wait": "Y",
            "fail_page_alloc/ignore-gfp-highmem": "Y", "fail_page_alloc/min-order": "1",
            "fail_page_alloc/times": "1"}
    for k, v in want.items():
        check(values.get(k) == v, f"{k} is back to the kernel's default {v} ({values.get(k)})")


def planted_error_leak(lab):
    """The plant error-leak (lab/patches): fallocate's error path keeps a folio
    reference. Only a failed allocation reaches it: smoke passes on that
    kernel, and the allocate sweep finds the leak (Unevictable does not come
    back), naming the call and the N."""
    prof = lab.path("allocate-only.toml")
    with open(prof, "w") as f:
        f.write('name = "allocate-only"\nduration = "30s"\n\n[probes]\nmode = "off"\n\n'
                '[[workload]]\nkind = "fault-inject"\ncalls = ["allocate"]\n')
    p, r, w, sweeps = sweep_run(lab, "planted.json", ["--plant", "error-leak", "-p", prof], 900)
    s = sweeps["allocate"]
    print(f"planted: allocate {s['outcome']} leaks={s['leaks']} "
          f"unevictable_delta_kb={s['unevictable_delta_kb']} first_leaks={s['first_leaks'][:2]}")
    check(s["faults_injected"] > 0, f"faults were injected ({s['faults_injected']})")
    check(s["leaks"] > 0 and s["first_leaks"], f"the planted leak was found ({s['leaks']})")
    check(s["outcome"] == "fail" and w["outcome"] == "fail",
          f"the sweep and the workload fail ({s['outcome']}, {w['outcome']}: {w['reason']})")
    check(p.returncode == 1, f"exit 1: found in the kernel under test (got {p.returncode})")

    report = lab.path("planted-smoke.json")
    p = lab.run(["--test-kernel", "--offline", "--plant", "error-leak", "-p", "smoke",
                 "-r", report], timeout=900)
    r = load_json(report) if os.path.exists(report) else {}
    check(p.returncode == 0 and r.get("verdict") == "pass",
          f"smoke on the same kernel passes: no normal path reaches the plant "
          f"(exit {p.returncode}, {r.get('verdict')})")


def skips_on_debian(lab):
    k = fetch_kernel()
    report = lab.path("debian.json")
    p = lab.run(["--kernel", k["kernel"], "-p", "fault-inject", "-r", report], timeout=900)
    check(p.returncode == 3, f"Debian's kernel: exit 3, nothing could run (got {p.returncode})")
    r = load_json(report)
    check_schema(r)
    (w,) = [w for w in r["workloads"] if w["name"] == "fault-inject"]
    check(w["outcome"] == "skip", f"the workload skips ({w['outcome']})")
    check("fail-nth" in w["reason"] and "CONFIG_FAULT_INJECTION" in w["reason"],
          f"the reason names fail-nth and CONFIG_FAULT_INJECTION ({w['reason']})")
    check(r["verdict"] == "skip", f"verdict skip ({r['verdict']})")


def main():
    require_host_tools()
    lab = Lab()
    try:
        sweep_on_test_kernel(lab)
        settings_restored(lab)
        planted_error_leak(lab)
        skips_on_debian(lab)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
