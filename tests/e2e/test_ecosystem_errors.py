"""Bad KCIDB, LAVA and waiver input on run and lab: a clear error naming the
flag (or FILE:LINE for profiles and waiver files), exit 2, nothing written,
before anything runs or boots (no KVM, no QEMU needed)."""
import os

from gms_e2e import expect_usage_error, main, tmpdir


def test():
    d = tmpdir()
    report, kcidb = os.path.join(d, "r.json"), os.path.join(d, "k.json")
    out = ["--report", report, "--kcidb", kcidb]
    for cmd in (["run"], ["lab", "--offline"]):
        for origin in ("MyLab", "my-lab", "my lab", "lab:1"):
            expect_usage_error(cmd + out + ["--kcidb-origin", origin], f"--kcidb-origin '{origin}'",
                               "^[a-z0-9_]+$")
        expect_usage_error(cmd + out, "--kcidb", "needs --kcidb-origin")
        expect_usage_error(cmd + ["--report", report, "--kcidb-origin", "lab"],
                           "--kcidb-origin: only with --kcidb")
        expect_usage_error(cmd + out + ["--kcidb-origin", "lab", "--kcidb-build-id", "Other CI:7"],
                           "--kcidb-build-id 'Other CI:7'")
        expect_usage_error(cmd + ["--report", report, "--lava", "--ktap", "-"], "--lava with --ktap -")

    expect_usage_error(["run", "--report", report, "--waive", "WARNING: ("],
                       "--waive: bad regular expression 'WARNING: ('")
    expect_usage_error(["run", "--report", report, "--waive", ""], "--waive: empty")
    waivers = os.path.join(d, "waivers.txt")
    with open(waivers, "w") as f:
        f.write("# known messages\n\nWARNING: .* at fs/x.c\n  BUG: [unclosed\n")
    for cmd in (["run"], ["lab", "--offline"]):
        expect_usage_error(cmd + ["--report", report, "--waivers", waivers],
                           f"{waivers}:4: bad regular expression 'BUG: [unclosed'")
    expect_usage_error(["run", "--report", report, "--waivers", os.path.join(d, "none.txt")],
                       "none.txt: cannot read")
    prof = os.path.join(d, "p.toml")
    with open(prof, "w") as f:
        f.write('name = "w"\n[kernel_log]\nwaive = [\n  "ok",\n  { regex = "x(", reason = "r" },\n]\n'
                '[[workload]]\nkind = "host-fault"\n')
    expect_usage_error(["run", "--profile", prof, "--report", report],
                       f"{prof}:5: bad regular expression 'x('")
    with open(prof, "w") as f:
        f.write('name = "w"\n[kernel_log]\nwaive = "one"\n[[workload]]\nkind = "host-fault"\n')
    expect_usage_error(["run", "--profile", prof, "--report", report], f"{prof}:3", "array")
    expect_usage_error(["run", "--report", report, "--set", "kernel_log.waive=[\"(\"]"],
                       "--set kernel_log.waive=[\"(\"]: bad regular expression")

    left = [n for n in os.listdir(d) if n.startswith(("r.json", "k.json"))]
    assert not left, f"files written for bad input: {left}"


main(test)
