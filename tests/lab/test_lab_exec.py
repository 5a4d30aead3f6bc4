#!/usr/bin/env python3
"""`gmemstress lab` as a first-class place to run things: without --kernel it
boots Debian's newest kernel from the tool's own cache (also --offline);
--exec runs any command with its output and exit status passed through;
--writable lets it leave files on the host; --env reaches it; and
`gmemstress run` on a machine without a usable /dev/kvm names the lab command
that runs the same, which then works as printed."""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, env, fetch_kernel, load_json  # noqa: E402

kernel = fetch_kernel()  # the same cache gmemstress lab uses: the boots below need no download
gms, src, _ = env()
lab = Lab()
try:
    # Offline with nothing cached: a clear error saying what to do, exit 3, no boot.
    empty = lab.path("empty-cache")
    os.mkdir(empty)
    p = lab.run(["--offline", "--kernel-cache", empty, "--exec", "--", "true"], timeout=60)
    check(p.returncode == 3 and "none is cached there" in p.stderr and "--kernel" in p.stderr,
          f"offline without a cached kernel: exit 3 naming what to do ({p.returncode})")

    out_dir = lab.path("out")
    os.mkdir(out_dir)
    script = ("echo to-stdout; echo to-stderr >&2; uname -r; test -c /dev/kvm && echo has-kvm; "
              f"echo \"$GREETING\" > {shlex.quote(out_dir)}/from-guest; exit 7")
    p = lab.run(["--offline", "--writable", out_dir, "--env", "GREETING=hello from the guest",
                 "--exec", "--", "sh", "-c", script], timeout=300)
    check(p.returncode == 7, f"the command's exit status passes through (exit {p.returncode})")
    check("to-stdout" in p.stdout and kernel["release"] in p.stdout,
          f"its stdout passes through, from Debian's newest kernel ({p.stdout!r})")
    check("has-kvm" in p.stdout, "the guest has its own /dev/kvm")
    check("to-stderr" in p.stderr, "its stderr passes through")
    check("using Debian's newest kernel" in p.stderr, "without --kernel the lab says which kernel")
    with open(os.path.join(out_dir, "from-guest")) as f:
        check(f.read().strip() == "hello from the guest",
              "--writable: the guest wrote a host file; --env reached the command")

    # run without a usable /dev/kvm: exit 3, one line naming the lab command.
    report = lab.path("run.json")
    p = lab.run_gms(["run", "--profile", "smoke", "--report", report, "--duration", "6s",
                     "--probes", "off"], extra_env={"GMS_KVM_DEVICE": "/nonexistent"})
    check(p.returncode == 3, f"run without a usable KVM device exits 3 ({p.returncode})")
    lines = [l for l in p.stderr.splitlines() if "gmemstress lab" in l or " lab " in l]
    check(len(lines) == 1 and "run the same in a VM: " in lines[0],
          f"one line names the lab command ({lines})")
    command = lines[0].split("run the same in a VM: ", 1)[1]
    argv = shlex.split(command)
    check(argv[1] == "lab" and "--profile" in argv and "smoke" in argv and "--report" in argv
          and "--duration" in argv and "--probes" in argv, f"with the same arguments ({argv})")
    check(not os.path.exists(report), "nothing was written by the refused run")
    p = lab.run(argv[2:], timeout=400)
    check(p.returncode == 0, f"the printed lab command runs the same profile and passes "
                             f"({p.returncode})")
    check("ran in: the QEMU lab" in p.stdout and kernel["release"] in p.stdout,
          "the summary says it ran in the lab and under which kernel")
    check(load_json(report).get("verdict") == "pass", "the report came back to the same path")

    # The README's main command on a machine without a usable /dev/kvm:
    # `run --where auto` goes to the lab by itself and says so.
    report = lab.path("auto.json")
    p = lab.run_gms(["run", "--where", "auto", "--report", report, "--duration", "6s"],
                    extra_env={"GMS_KVM_DEVICE": "/nonexistent"}, timeout=400)
    check(p.returncode == 0, f"run --where auto without a usable KVM passes in the lab "
                             f"({p.returncode})")
    check("running it in the lab" in p.stderr, "it says why it goes to the lab")
    check("ran in: the QEMU lab" in p.stdout and kernel["release"] in p.stdout,
          "the summary says where it ran and under which kernel")
    rep = load_json(report)
    check(rep.get("verdict") == "pass" and rep.get("lab", {}).get("kernel_release") ==
          kernel["release"], "the report (with its lab object) is at the path run was given")
finally:
    lab.cleanup()
print("PASS")
