"""What ctest knows about the registered tests, without disturbing a ctest run.

`ctest --show-only` rewrites <build>/Testing/Temporary/LastTest.log, even while
another ctest (the one running us, or the one whose log we read) uses it. So
ctest is asked about a shadow copy of the build's CTestTestfile.cmake tree
(their paths are absolute), and the shadow's paths are mapped back.
"""
import json
import os
import shutil
import subprocess
import tempfile


def show_only(build, ctest="ctest"):
    """ctest's json-v1 test list for BUILD: [{name, command, props{...}}].
    Raises RuntimeError when ctest fails."""
    build = os.path.abspath(build)
    with tempfile.TemporaryDirectory(prefix="gms-ctest-shadow-") as shadow:
        for root, dirs, files in os.walk(build):
            dirs[:] = [d for d in dirs if d not in ("CMakeFiles", "Testing", "kvm-batch")]
            if "CTestTestfile.cmake" in files:
                into = os.path.join(shadow, os.path.relpath(root, build))
                os.makedirs(into, exist_ok=True)
                shutil.copy(os.path.join(root, "CTestTestfile.cmake"), into)
        p = subprocess.run([ctest, "--test-dir", shadow, "--show-only=json-v1"],
                           capture_output=True, text=True, timeout=120)
        # A test without a WORKING_DIRECTORY of its own runs where its
        # CTestTestfile is: in the build tree, not in the shadow.
        out = p.stdout.replace(json.dumps(shadow)[1:-1], json.dumps(build)[1:-1])
    if p.returncode != 0:
        raise RuntimeError(f"ctest --show-only failed: {p.stderr.strip()}")
    tests = []
    for t in json.loads(out).get("tests", []):
        props = {pr["name"]: pr["value"] for pr in t.get("properties", [])}
        tests.append({"name": t["name"], "command": t.get("command") or [], "props": props})
    return tests
