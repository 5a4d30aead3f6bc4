"""The examples in docs/ci-examples/ stay usable: the LAVA test definition
is a "Lava-Test Test Definition 1.0" with a name LAVA accepts, and
vmtest.toml a vmtest config with [[target]] name, kernel and command; every
gmemstress command in them uses options `gmemstress run` has (checked
against its --help), with --lava in the LAVA one."""
import os
import re
import shlex
import tomllib

from gms_e2e import SOURCE_DIR, main, run

EXAMPLES = os.path.join(SOURCE_DIR, "docs", "ci-examples")


def run_options():
    p = run("run", "--help", check_rc=0)
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", p.stdout))


def check_command(words, known, what):
    assert words[0] in ("gmemstress", "${GMEMSTRESS}") and words[1] == "run", f"{what}: {words}"
    for w in words[2:]:
        if w.startswith("--"):
            assert w.split("=")[0] in known, f"{what}: gmemstress run has no {w}"


def lava_definition(known):
    path = os.path.join(EXAMPLES, "lava-gmemstress.yaml")
    text = open(path).read()
    try:
        import yaml
    except ImportError:  # python3-yaml: not a dependency of the project
        print("note: python3-yaml missing: the definition checked as text only")
        assert "format: Lava-Test Test Definition 1.0" in text
        steps = [l.strip()[2:] for l in text.splitlines() if l.strip().startswith("- ")]
    else:
        d = yaml.safe_load(text)
        meta = d["metadata"]
        assert meta["format"] == "Lava-Test Test Definition 1.0", meta
        assert meta["description"], meta
        # LAVA: no white space nor any of $& "'`()<>/\|; in the name.
        assert not re.search(r"[\s$&\"'`()<>/\\|;]", meta["name"]), meta["name"]
        assert set(d["params"]) >= {"GMEMSTRESS", "PROFILE", "DURATION", "WAIVERS"}
        steps = d["run"]["steps"]
    commands = [s for s in steps if "${GMEMSTRESS}" in s]
    assert commands, f"{path}: no step runs gmemstress"
    for c in commands:
        words = shlex.split(c.split("||")[0])
        check_command(words, known, path)
        assert "--lava" in words, f"{path}: the LAVA step lacks --lava"


def vmtest_config(known):
    path = os.path.join(EXAMPLES, "vmtest.toml")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    assert cfg["target"], path
    for t in cfg["target"]:
        assert t["name"] and t["kernel"] and t["command"], t
        assert set(t) <= {"name", "kernel", "kernel_args", "command", "vm", "rootfs", "arch"}, t
        check_command(shlex.split(t["command"]), known, f"{path} {t['name']}")


def test():
    known = run_options()
    assert {"--lava", "--kcidb", "--waive", "--ktap"} <= known, sorted(known)
    lava_definition(known)
    vmtest_config(known)


main(test)
