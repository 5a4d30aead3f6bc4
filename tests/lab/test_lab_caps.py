#!/usr/bin/env python3
"""The lab's boot and transport: Debian's newest kernel boots under QEMU with
its KVM modules, nested /dev/kvm and full eBPF inside; `gmemstress caps --json`
runs in the guest from the shared host root; its output, the guest's kernel
log and the console come back to the host."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_common import Lab, check, fetch_kernel  # noqa: E402

kernel = fetch_kernel()
lab = Lab()
try:
    console, dmesg = lab.path("console.log"), lab.path("dmesg.txt")
    p = lab.run(["--kernel", kernel["kernel"], "--guest-command", "caps", "--timeout", "300s",
                 "--keep-console", console, "--keep-dmesg", dmesg, "--", "--json"], timeout=400)
    check(p.returncode == 0, f"gmemstress caps in the guest exited 0 (got {p.returncode})")
    caps = json.loads(p.stdout)
    check(caps.get("kernel_release") == kernel["release"],
          f"the guest runs the fetched kernel ({caps.get('kernel_release')})")
    check(caps.get("kvm", {}).get("accessible") is True,
          f"nested /dev/kvm is usable in the guest ({caps.get('kvm')})")
    check(caps.get("guest_memfd") is True, "guest_memfd is supported by the guest kernel")
    check(caps.get("lockdown") == "none", f"no lockdown in the guest ({caps.get('lockdown')})")
    bpf = caps.get("bpf", {})
    check(bpf.get("fentry", {}).get("usable") is True or bpf.get("kprobe", {}).get("usable") is True,
          f"fentry or kprobe BPF usable in the guest ({bpf})")
    with open(dmesg) as f:
        log = f.read()
    check(f"Linux version {kernel['release']}" in log, "the guest's dmesg came back")
    check("kvm_amd" in log or "kvm_intel" in log, "the guest's dmesg shows the KVM module loading")
    with open(console) as f:
        con = f.read()
    check(":init:" + kernel["release"] in con and ":done:0" in con,
          "the console came back with the init and done markers")
    print(p.stderr.strip().splitlines()[-1])
finally:
    lab.cleanup()
print("PASS")
