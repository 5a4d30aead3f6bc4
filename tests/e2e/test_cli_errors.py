"""Bad input: clear error naming what and where, exit 2, nothing half-written."""
import os

from gms_e2e import expect_usage_error, main, tmpdir


def test():
    d = tmpdir()
    report = os.path.join(d, "r.json")
    expect_usage_error(["run", "--vms", "zero", "--report", report], "--vms")
    expect_usage_error(["run", "--vms", "0", "--report", report], "--vms 0", "out of range")
    expect_usage_error(["run", "--profile", "no-such-profile", "--report", report], "no-such-profile")
    expect_usage_error(["run", "--set", "vm.count", "--report", report], "--set vm.count", "key=value")
    expect_usage_error(["run", "--set", "vm.colour=3", "--report", report], "vm.colour", "unknown key")
    expect_usage_error(["run", "--gmem-flags", "mmap,sparkly", "--report", report], "sparkly")
    expect_usage_error(["run", "--duration", "soon", "--report", report], "--duration soon")
    expect_usage_error(["run", "--report", "/nonexistent-dir/r.json"], "/nonexistent-dir")
    expect_usage_error(["frobnicate"], "frobnicate")
    # Workload constraints beyond the range are checked when the profile loads,
    # not when the workload runs (that was exit 4 after the run began).
    expect_usage_error(["run", "--set", "workload.guest-fault.guest_stride=3", "--report", report],
                       "--set workload.guest-fault.guest_stride=3", "guest_stride", "power of two")
    expect_usage_error(["run", "--set", "probes.ringbuf_size=3MiB", "--report", report],
                       "probes.ringbuf_size", "power of two")

    bad = os.path.join(d, "bad.toml")
    with open(bad, "w") as f:
        f.write('name = "bad"\n[vm]\ncount = 1\n\n[[workload]]\nkind = "host-fault"\nthreadz = 2\n')
    expect_usage_error(["run", "--profile", bad, "--report", report], f"{bad}:7", "threadz")
    with open(bad, "w") as f:
        f.write('name = "bad"\n[[workload]]\nkind = "host-fault"\nthreads = "many"\n')
    expect_usage_error(["run", "--profile", bad, "--report", report], f"{bad}:4", "threads", "integer")
    with open(bad, "w") as f:
        f.write('name = "bad"\n[[workload]]\nkind = "lifecycle"\nkinds = ["bind_unbind", "explode"]\n')
    expect_usage_error(["run", "--profile", bad, "--report", report], f"{bad}:4", "kinds", "explode")
    with open(bad, "w") as f:
        f.write('name = "bad"\n[[workload]]\nkind = "punch-hole"\nmax_pages = 8\nalign_pages = 16\n')
    expect_usage_error(["run", "--profile", bad, "--report", report], f"{bad}:5", "align_pages",
                       "max_pages")
    with open(bad, "w") as f:
        f.write('name = "bad"\n[[workload]\n')
    expect_usage_error(["run", "--profile", bad, "--report", report], f"{bad}:2")

    assert not os.path.exists(report), "a report was written for bad input"
    assert not [n for n in os.listdir(d) if n.startswith("r.json")], "half-written report left behind"


main(test)
