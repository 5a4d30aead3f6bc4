"""`profiles`, `profiles show` round trip, `caps` and `caps --json`."""
# gmemstress-test: needs-kvm
import json
import os

from gms_e2e import kvm_usable, main, run, tmpdir


def test():
    p = run("profiles", check_rc=0)
    for name in ("smoke", "conformance", "fault-storm", "punch-race", "convert-storm", "soak",
                 "fault-inject"):
        assert name in p.stdout, f"profiles lacks {name}"
    for kind in ("host-fault", "guest-fault", "punch-hole", "populate", "convert", "lifecycle",
                 "conformance", "fault-inject"):
        assert kind in p.stdout, f"profiles lacks workload kind {kind}"

    # `profiles show` prints a file a user can copy, edit and run.
    shown = run("profiles", "show", "smoke", check_rc=0).stdout
    d = tmpdir()
    path = os.path.join(d, "mine.toml")
    with open(path, "w") as f:
        f.write(shown.replace('seed = 1', 'seed = 99'))
    r = run("run", "--profile", path, "--duration", "0.001s", "--ops", "1", "--probes", "off",
            "--report", os.path.join(d, "r.json"), "--quiet")
    assert r.returncode != 2, f"edited profile rejected: {r.stderr}"
    assert run("profiles", "show", "nope").returncode == 2

    ok, why = kvm_usable()
    c = run("caps", "--json")
    caps = json.loads(c.stdout)
    assert caps["kvm"]["accessible"] == ok, (caps["kvm"], why)
    assert caps["kernel_release"] == os.uname().release
    if ok:
        assert c.returncode == 0, c.returncode
        assert caps["kvm"]["api_version"] == 12
    else:
        assert c.returncode == 3 and caps["kvm"]["error"], (c.returncode, caps["kvm"])
    # Fault injection (the fault-inject workload) as found on this kernel.
    fi = caps["fault_injection"]
    assert fi["fail_nth"] == os.path.exists("/proc/thread-self/fail-nth"), fi
    # The series fingerprint, in both outputs: what was read, what was found,
    # the ABI taken from it (KVM_SET_MEMORY_ATTRIBUTES2 is _IOWR(KVMIO, 0xd2,
    # its struct) whatever the kernel; the default struct is 128 bytes).
    series = caps["series"]
    assert series["source"] and series["combination"], series
    for name in ("no_direct_map", "write", "in_place_conversion", "hugetlb"):
        assert isinstance(series[name]["present"], bool), (name, series[name])
    attrs2 = series["abi"]["set_memory_attributes2"]
    assert attrs2["nr"] == 0xd2, attrs2
    assert attrs2["request"] == (3 << 30) | (attrs2["size"] << 16) | (0xAE << 8) | 0xd2, attrs2
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        assert series["source"].startswith("BTF"), series["source"]
    t = run("caps")
    text = t.stdout
    assert "/dev/kvm" in text and "guest_memfd" in text and "lockdown" in text
    assert "series (fingerprint)" in text and series["combination"] in text, text
    # One rule for both outputs: a script reading the JSON gets the same answer.
    assert t.returncode == c.returncode, f"caps exits {t.returncode}, caps --json {c.returncode}"

    # With the KVM device missing (GMS_KVM_DEVICE, where the build honours it),
    # both outputs say so and both exit 3.
    missing = dict(os.environ, GMS_KVM_DEVICE="/nonexistent")
    cm = run("caps", "--json", env=missing)
    kvm_missing = json.loads(cm.stdout)["kvm"]
    if kvm_missing == caps["kvm"]:
        print("note: GMS_KVM_DEVICE is not honoured by this build; "
              "the missing-device comparison did not run")
    else:
        tm = run("caps", env=missing)
        assert not kvm_missing["accessible"] and kvm_missing["error"], kvm_missing
        assert cm.returncode == 3, f"caps --json without the device: exit {cm.returncode}"
        assert tm.returncode == 3, f"caps without the device: exit {tm.returncode}"


main(test)
