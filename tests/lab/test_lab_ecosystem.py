#!/usr/bin/env python3
"""Kernel-log waivers with a real kernel message, and the lab's KCIDB and
LAVA output, in the QEMU lab (the guest's /dev/kmsg is its own: writing to
it there cannot leak a WARNING into other tests' runs on the host).

1. One boot, two runs of the same profile while a loop writes
   "WARNING: gmemstress waiver test" to the guest's /dev/kmsg (a record the
   kernel log scanner classifies as WARNING): without waivers the finding
   fails the run (exit 1, verdict fail, KTAP not ok); with the profile's
   [kernel_log] waive the same messages are waived (exit 0, verdict pass),
   each naming the regex and its profile line, counted per waiver, in JSON,
   text, JUnit, KTAP (# XFAIL), KCIDB (DONE, schema-valid) and LAVA.
2. `lab --kcidb --lava --waivers FILE` (a file under /tmp, which the guest's
   tmpfs hides: the lab hands it a copy): the guest's KCIDB comes back
   schema-valid, and the LAVA calls are made on the host, through the fake
   lava-test-case/lava-test-set on the host's PATH.
3. A kernel that does not boot: the host writes one KCIDB test and one LAVA
   case saying why (SKIP / skip), never a pass."""
import os
import shlex
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, check_schema, env, fetch_kernel, load_json  # noqa: E402
from kcidb_check import by_path, check_against_report, validate  # noqa: E402

TOKEN = "gmemstress waiver test"
PROFILE = """name = "waiver-test"
duration = "3s"
[guest_memfd]
size = "2MiB"
flags = ["mmap", "init_shared"]
[probes]
mode = "off"
{waive}
[[workload]]
kind = "host-fault"
"""
WAIVE = '[kernel_log]\nwaive = [\n  { regex = "waiver test$", reason = "written by the test" },\n]'
WAIVE_LINE = 10  # the waiver's line in the profile above


def writer_loop():
    return (f"(while :; do echo 'WARNING: {TOKEN}' > /dev/kmsg; sleep 0.2; done) &")


def fake_helpers(d):
    bindir = os.path.join(d, "lava-bin")
    os.makedirs(bindir)
    log = os.path.join(d, "lava-calls.txt")
    for prog in ("lava-test-case", "lava-test-set"):
        path = os.path.join(bindir, prog)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nprintf '%s\\n' \"{prog} $*\" >> {shlex.quote(log)}\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return bindir, log


kernel = fetch_kernel()
gms, src, _ = env()
lab = Lab()
try:
    out = lab.path("out")
    os.mkdir(out)
    plain_prof, waived_prof = os.path.join(out, "plain.toml"), os.path.join(out, "waived.toml")
    with open(plain_prof, "w") as f:
        f.write(PROFILE.format(waive=""))
    with open(waived_prof, "w") as f:
        f.write(PROFILE.format(waive=WAIVE))
    check(open(waived_prof).read().splitlines()[WAIVE_LINE - 1].lstrip().startswith("{ regex"),
          "the waiver's line number is known")

    # 1. waived vs not waived, one boot.
    q = shlex.quote
    script = (f"{writer_loop()} loop=$!; "
              f"{q(gms)} run --profile {q(plain_prof)} --report {q(out)}/plain.json "
              f"--ktap {q(out)}/plain.ktap --quiet; echo $? > {q(out)}/plain.rc; "
              f"{q(gms)} run --profile {q(waived_prof)} --report {q(out)}/waived.json "
              f"--ktap {q(out)}/waived.ktap --junit {q(out)}/waived.xml "
              f"--kcidb {q(out)}/waived.kcidb.json --kcidb-origin gms_lab "
              f"--waive 'never matches' --lava > {q(out)}/waived.stdout; "
              f"echo $? > {q(out)}/waived.rc; kill $loop")
    p = lab.run(["--offline", "--writable", out, "--exec", "--", "sh", "-c", script], timeout=600)
    check(p.returncode == 0, f"the guest script ran ({p.returncode})")

    plain = load_json(os.path.join(out, "plain.json"))
    check_schema(plain)
    rc = int(open(os.path.join(out, "plain.rc")).read())
    mine = [f for f in plain["kernel_log"]["findings"] if TOKEN in f["line"]]
    check(mine and all(f["kind"] == "WARNING" for f in mine),
          f"not waived: the written messages are WARNING findings ({len(mine)})")
    check(all(w["outcome"] == "pass" for w in plain["workloads"]),
          "not waived: the workload itself passed")
    check(plain["verdict"] == "fail" and rc == 1,
          f"not waived: the finding fails the run (verdict {plain['verdict']}, exit {rc})")
    check("not ok" in open(os.path.join(out, "plain.ktap")).read(), "not waived: KTAP not ok")

    waived = load_json(os.path.join(out, "waived.json"))
    check_schema(waived)
    rc = int(open(os.path.join(out, "waived.rc")).read())
    kl = waived["kernel_log"]
    check(not kl["findings"], f"waived: no finding left ({kl['findings'][:3]})")
    check(kl["waived"] and all(TOKEN in w["line"] and w["waived_by"] == "waiver test$" and
                               w["waiver_origin"].endswith(f"waived.toml:{WAIVE_LINE}")
                               for w in kl["waived"]),
          f"waived: each written message waived, naming the regex and its line ({len(kl['waived'])})")
    counts = {w["regex"]: w["waived"] for w in kl["waivers"]}
    check(counts == {"waiver test$": len(kl["waived"]), "never matches": 0},
          f"waived: counted per waiver ({counts})")
    check(waived["verdict"] == "pass" and rc == 0,
          f"waived: the same run passes (verdict {waived['verdict']}, exit {rc})")
    stdout = open(os.path.join(out, "waived.stdout")).read()
    check("kernel log waived WARNING" in stdout and "findings waived" in stdout,
          "waived: the text summary lists them")
    ktap = open(os.path.join(out, "waived.ktap")).read()
    check("# XFAIL waived by /waiver test$/" in ktap and "not ok" not in ktap,
          "waived: KTAP ok # XFAIL, nothing not ok")
    check(f"xfail:{len(kl['waived'])} " in ktap.splitlines()[-1], "waived: KTAP Totals count them")
    check("gmemstress.kernel.waived" in open(os.path.join(out, "waived.xml")).read(),
          "waived: JUnit skipped cases")
    data = load_json(os.path.join(out, "waived.kcidb.json"))
    t = check_against_report(data, waived, "gms_lab", f"gms_lab:{waived['host']['kernel_release']}",
                             "waived")
    check(t["gmemstress"]["status"] == "PASS" and
          t["gmemstress.kernel_log.waived.WARNING"]["status"] == "DONE",
          "waived: KCIDB valid, PASS, the waived finding DONE")
    check("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=kernel_log.waived.WARNING RESULT=pass>" in stdout
          and "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=gmemstress RESULT=pass>" in stdout,
          "waived: LAVA signal lines (no helpers in the guest)")

    # 2. The lab's own --kcidb, --lava (helpers on the host) and --waivers.
    waivers = lab.path("waivers.txt")
    with open(waivers, "w") as f:
        f.write("# known\nwaiver test$\n")
    bindir, calls = fake_helpers(lab.path("helpers"))
    os.environ["PATH"] = bindir + ":" + os.environ.get("PATH", "")
    report, kcidb = lab.path("lab.json"), lab.path("lab.kcidb.json")
    p = lab.run(["--offline", "--profile", plain_prof, "--report", report, "--kcidb", kcidb,
                 "--kcidb-origin", "gms_lab", "--kcidb-build-id", "b7", "--lava",
                 "--waivers", waivers, "--before", writer_loop()], timeout=600)
    os.environ["PATH"] = os.environ["PATH"].split(":", 1)[1]
    rep = load_json(report)
    check_schema(rep)
    check(p.returncode == 0 and rep["verdict"] == "pass" and rep["kernel_log"]["waived"],
          f"lab --waivers: waived there too (exit {p.returncode}, {len(rep['kernel_log']['waived'])})")
    check(rep["kernel_log"]["waivers"][0]["origin"].endswith("waivers.txt:2"),
          f"lab --waivers: the file's line ({rep['kernel_log']['waivers'][0]['origin']})")
    t = check_against_report(load_json(kcidb), rep, "gms_lab", "gms_lab:b7", "lab --kcidb")
    check(t["gmemstress"]["status"] == "PASS", "lab --kcidb: the guest's tests came back, valid")
    lines = open(calls).read().splitlines()
    check("lava-test-case gmemstress --result pass" in lines and
          any(l.startswith("lava-test-case kernel_log.waived.WARNING --result pass") for l in lines)
          and lines.count("lava-test-set start kernel_log") == 1,
          f"lab --lava: the host ran LAVA's helpers ({len(lines)} calls)")
    check("<LAVA_SIGNAL_TESTCASE" not in p.stdout, "lab --lava: no signal line with helpers")

    # 3. No boot: one test, one case, saying why.
    kcidb = lab.path("noboot.kcidb.json")
    p = lab.run(["--offline", "--accel", "tcg", "--append", "rdinit=/nonexistent", "--timeout",
                 "120s", "--kcidb", kcidb, "--kcidb-origin", "gms_lab", "--lava"], timeout=200)
    check(p.returncode == 3, f"no boot: exit 3 ({p.returncode})")
    data = load_json(kcidb)
    validate(data, "no boot")
    check(len(data["tests"]) == 1 and data["tests"][0]["status"] == "SKIP" and
          "failure" in data["tests"][0]["log_excerpt"],
          f"no boot: one KCIDB test, SKIP, saying why ({by_path(data)})")
    check("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=gmemstress RESULT=skip>" in p.stdout,
          "no boot: one LAVA case, skip")
finally:
    lab.cleanup()
print("PASS")
