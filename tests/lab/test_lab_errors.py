#!/usr/bin/env python3
"""gmemstress lab fails clearly, never silently passes, and leaves no QEMU behind:
nonexistent kernel, garbage kernel, kernel that cannot boot (console tail
shown), missing QEMU, --timeout reached, SIGINT while booting."""
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fetch_kernel  # noqa: E402

lab = Lab()
try:
    # --- inputs checked before QEMU starts: no kernel download needed
    p = lab.run(["--kernel", "/nonexistent/bzImage", "--guest-command", "caps"])
    check(p.returncode == 2, f"nonexistent --kernel: usage error, exit 2 (got {p.returncode})")
    check("/nonexistent/bzImage" in p.stderr and "no such file" in p.stderr,
          "nonexistent --kernel: the message names the path")

    garbage = lab.path("garbage.bzImage")
    with open(garbage, "wb") as f:
        f.write(os.urandom(1 << 20))
    p = lab.run(["--kernel", garbage, "--guest-command", "caps"])
    check(p.returncode == 3, f"garbage kernel: exit 3 (got {p.returncode})")
    check("not an x86 bzImage" in p.stderr and garbage in p.stderr,
          "garbage kernel: the message says it is not a bzImage and names it")

    kernel = fetch_kernel()

    p = lab.run(["--kernel", kernel["kernel"], "--qemu", "/nonexistent/qemu-system-x86_64",
                 "--guest-command", "caps"])
    check(p.returncode == 3, f"missing QEMU: exit 3 (got {p.returncode})")
    check("apt-get install qemu-system-x86" in p.stderr, "missing QEMU: says what to install")

    # A bzImage with a valid boot header whose payload is cut off: QEMU starts,
    # the kernel never reaches init.
    truncated = lab.path("truncated.bzImage")
    with open(kernel["kernel"], "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) * 2 // 5])
    console = lab.path("truncated-console.log")
    p = lab.run(["--kernel", truncated, "--modules", kernel["modules"], "--guest-command", "caps",
                 "--accel", "tcg", "--timeout", "60s", "--keep-console", console])
    check(p.returncode == 3, f"unbootable kernel: exit 3 (got {p.returncode})")
    check("boot failure" in p.stderr and "did not boot" in p.stderr,
          "unbootable kernel: reported as a boot failure")
    check("last console lines:" in p.stderr, "unbootable kernel: the console tail is shown")
    check(os.path.exists(console), "unbootable kernel: --keep-console written on failure")

    # A kernel panic while booting (no init to run): detected, not waited out.
    p = lab.run(["--kernel", kernel["kernel"], "--guest-command", "caps", "--accel", "tcg",
                 "--append", "rdinit=/nonexistent", "--timeout", "120s"], timeout=200)
    check(p.returncode == 3, f"kernel panic: exit 3 (got {p.returncode})")
    check("Kernel panic - not syncing" in p.stderr and "panicked" in p.stderr,
          "kernel panic: reported with the panic message")
    check(p.elapsed < 60, f"kernel panic: QEMU ended right after it ({p.elapsed:.1f} s)")

    # Modules without KVM: the guest's setup fails and says what is missing.
    mods = lab.path("modules-without-kvm")
    os.makedirs(mods)
    for root, _, files in os.walk(kernel["modules"]):
        for f in files:
            if f.split(".ko")[0] in ("9p", "9pnet", "9pnet_virtio", "netfs"):
                shutil.copy(os.path.join(root, f), mods)
    p = lab.run(["--kernel", kernel["kernel"], "--modules", mods, "--guest-command", "caps",
                 "--accel", "tcg", "--timeout", "120s"], timeout=200)
    check(p.returncode == 3, f"no KVM modules: exit 3 (got {p.returncode})")
    check("setup failure" in p.stderr and "no /dev/kvm in the guest" in p.stderr
          and "--modules" in p.stderr, "no KVM modules: the guest's setup says /dev/kvm is missing")

    # --timeout while the kernel boots: killed, reported, console tail shown.
    # TCG from the start: with --accel auto a host KVM that cannot run the
    # kernel (a PVM host) spends part of the 6 s on its attempt.
    console = lab.path("timeout-console.log")
    p = lab.run(["--kernel", kernel["kernel"], "--guest-command", "caps", "--accel", "tcg",
                 "--timeout", "6s", "--keep-console", console], timeout=120)
    check(p.returncode == 3, f"--timeout reached: exit 3 (got {p.returncode})")
    check("timeout failure" in p.stderr and "QEMU killed" in p.stderr,
          "--timeout reached: says so and that QEMU was killed")
    check(p.elapsed < 30, f"--timeout 6s is honoured ({p.elapsed:.1f} s)")
    check("last console lines:" in p.stderr, "--timeout reached: console tail shown")
    with open(console) as f:
        check("Linux version" in f.read(), "--timeout reached: the console file has the boot log")

    # SIGINT while the guest boots: QEMU stopped, exit 130.
    proc = lab.start(["--kernel", kernel["kernel"], "--guest-command", "caps", "--timeout", "120s"])
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "booting" in line or not line:
            break
    time.sleep(1.5)  # QEMU is running now
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except Exception:
        proc.kill()
        raise
    print("--- stderr ---\n" + seen + err + "--- end ---")
    check(proc.returncode == 130, f"SIGINT: exit 130 (got {proc.returncode})")
    check("interrupted" in err, "SIGINT: reported as interrupted")
    lab.assert_no_stray_qemu()
finally:
    lab.cleanup()
print("PASS")
