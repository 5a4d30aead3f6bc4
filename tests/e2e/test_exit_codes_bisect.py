"""`--exit-codes bisect` drives `git bisect run` for real: a throw-away git
history whose commits each say how gmemstress should be run (good: the
conformance profile passes here; bad: it fails, told a wrong WRITE flag bit
so io.write_validation really fails; untestable: a profile whose only
workload needs a kernel feature this host lacks, so nothing runs). git bisect
must skip the untestable commits (125) and name the first bad one; a usage
error (129, > 127) must abort the bisection instead of marking a commit."""
# gmemstress-test: needs-kvm
import os
import shutil
import subprocess

from gms_e2e import (GMS_BIN, NEEDS_ATTRIBUTES_PROFILE, NOTHING_RUNS_PROFILE, main, require_kvm,
                     run, skip, tmpdir)

# The conformance profile with the probes off: under a second here.
GOOD = ["--profile", "conformance", "--probes", "off"]
# Bit 0 is MMAP, which this kernel accepts: told it is WRITE, the
# io.write_validation check pwrite()s a guest_memfd, which refuses.
BAD = GOOD + ["--flag-bit", "write=0"]


# The commits, oldest first: c0 good (the known-good end), then good, the
# middle ones untestable (git bisect run tests the middle first), good again,
# and the first bad one, c7.
STATES = ["good", "good", "good", "untestable", "untestable", "good", "good", "bad", "bad", "bad"]
FIRST_BAD = 7

# What `git bisect run` runs at each commit: the state file decides how.
STEP = """#!/bin/sh
state=$(head -n 1 state)
case "$state" in
  good) exec "$GMS" run {good} --report "$OUT/r.json" --quiet --exit-codes=bisect ;;
  bad) exec "$GMS" run {bad} --report "$OUT/r.json" --quiet --exit-codes=bisect ;;
  untestable) exec "$GMS" run --profile "$OUT/untestable.toml" --report "$OUT/r.json" --quiet --exit-codes=bisect ;;
  broken) exec "$GMS" run --no-such-flag --exit-codes=bisect ;;
esac
echo "unknown state $state" >&2
exit 255
"""


def git(repo, *args, check=True):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org",
               GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    p = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, env=env,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def make_history(repo, states):
    os.makedirs(repo)
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for i, st in enumerate(states):
        with open(os.path.join(repo, "state"), "w") as f:
            f.write(f"{st}\ncommit {i}\n")
        git(repo, "add", "state")
        git(repo, "commit", "-q", "-m", f"c{i} {st}")
        shas.append(git(repo, "rev-parse", "HEAD").stdout.strip())
    return shas


def test():
    require_kvm()
    if not shutil.which("git"):
        skip("git not installed")
    d = tmpdir()
    os.environ["GMS"] = os.path.abspath(GMS_BIN) if os.sep in GMS_BIN else shutil.which(GMS_BIN)
    os.environ["OUT"] = d

    # The three kinds of commit, for real on this host, in both styles.
    untestable = os.path.join(d, "untestable.toml")
    with open(untestable, "w") as f:
        f.write(NEEDS_ATTRIBUTES_PROFILE)
    p = run("run", "--profile", untestable, "--report", os.path.join(d, "r.json"), "--quiet")
    if p.returncode != 3:
        print(f"this host can convert (exit {p.returncode}); untestable = a workload that does nothing")
        with open(untestable, "w") as f:
            f.write(NOTHING_RUNS_PROFILE)
    report = os.path.join(d, "r.json")
    for args, standard, bisect in [(GOOD, 0, 0), (BAD, 1, 1),
                                   (["--profile", untestable], 3, 125)]:
        run("run", *args, "--report", report, "--quiet", check_rc=standard)
        run("run", *args, "--report", report, "--quiet", "--exit-codes=bisect", check_rc=bisect)
        run("run", *args, "--report", report, "--quiet", "--exit-codes", "kselftest",
            check_rc={0: 0, 1: 1, 3: 4}[standard])
    # Usage errors: > 127 (git bisect run aborts), whether found by the flag
    # parser or by the profile loader.
    run("run", "--no-such-flag", "--exit-codes=bisect", check_rc=129)
    run("run", "--exit-codes", "bisect", "--set", "no.such.key=1", check_rc=129)
    run("run", "--set", "no.such.key=1", check_rc=2)

    step = os.path.join(d, "step.sh")
    with open(step, "w") as f:
        f.write(STEP.format(good=" ".join(GOOD), bad=" ".join(BAD)))
    os.chmod(step, 0o755)

    # The bisection: finds c7, skipping untestable commits on the way.
    repo = os.path.join(d, "repo")
    shas = make_history(repo, STATES)
    git(repo, "bisect", "start", shas[-1], shas[0])
    p = git(repo, "bisect", "run", step, check=False)
    print(p.stdout)
    log = git(repo, "bisect", "log").stdout
    print(log)
    assert p.returncode == 0, f"git bisect run: exit {p.returncode}\n{p.stderr}"
    assert f"{shas[FIRST_BAD]} is the first bad commit" in p.stdout, \
        f"expected c{FIRST_BAD} ({shas[FIRST_BAD]}) as the first bad commit"
    skipped = [i for i, s in enumerate(shas) if f"git bisect skip {s}" in log]
    assert skipped, "no commit was skipped: the untestable ones must be (exit 125)"
    assert all(STATES[i] == "untestable" for i in skipped), \
        f"skipped commits {skipped} are not all untestable"
    git(repo, "bisect", "reset")

    # A broken invocation at the first commit tested aborts the bisection.
    repo2 = os.path.join(d, "repo2")
    shas = make_history(repo2, ["good", "broken", "broken", "broken", "bad"])
    git(repo2, "bisect", "start", shas[-1], shas[0])
    p = git(repo2, "bisect", "run", step, check=False)
    print(p.stdout, p.stderr)
    assert p.returncode != 0, "git bisect run went on past a usage error"
    assert "is the first bad commit" not in p.stdout, "a usage error marked a commit bad"
    assert "129" in p.stdout + p.stderr, "git bisect run should name exit code 129"
    git(repo2, "bisect", "reset")


main(test)
