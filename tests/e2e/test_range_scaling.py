"""The range-scaling profile, shortened, on this host's /dev/kvm: the section
validates against the schema, every file operation is timed at every size
with both fits and a class, the projections lie past the sizes measured, the
text, HTML (run --html and `report html` of the JSON) show it, and with too
few sizes the fit says so instead of making up a slope, class or projection."""
# gmemstress-test: needs-kvm
import os

from gms_e2e import main, require_kvm, run, tmpdir, validate_report

MiB = 1 << 20


def scaling_of(rep):
    ws = [w for w in rep["workloads"] if w["name"] == "range-scaling"]
    assert len(ws) == 1, f"{len(ws)} range-scaling workloads"
    assert "range_scaling" in ws[0], "the workload has no range_scaling section"
    return ws[0], ws[0]["range_scaling"]


def run_scaling(d, name, max_size, *extra):
    report, html = os.path.join(d, f"{name}.json"), os.path.join(d, f"{name}.html")
    p = run("run", "--profile", "range-scaling", "--duration", "40s",
            "--set", f"workload.0.max_size={max_size}", "--report", report, "--html", html,
            *extra, timeout=180)
    print(p.stdout)
    print(p.stderr)
    rep = validate_report(report)
    return p, rep, report, html


def test():
    require_kvm()
    d = tmpdir()

    # 1..16 MiB: 5 sizes spanning 16x.
    p, rep, report, html = run_scaling(d, "five", "16MiB")
    w, rs = scaling_of(rep)
    ops = {o["name"]: o for o in rs["ops"]}
    for name in ("allocate", "punch_hole", "release"):
        o = ops.get(name)
        assert o and not o["skip_reason"], f"{name} was not timed"
        sizes = [s["range_bytes"] for s in o["samples"]]
        assert sizes == [MiB << i for i in range(5)], f"{name}: sizes {sizes}"
        assert all(len(s["ns"]) == rs["reps"] == 3 for s in o["samples"]), f"{name}: reps"
        assert o["linear"] and o["power"], f"{name}: fits missing"
        assert o["linear"]["points"] == 5
        assert o["growth"] in ("constant", "linear", "n log n", "superlinear"), o["growth"]
        # Every outlier is judged against a positive expectation: never 0 ns.
        for x in o["outliers"]:
            assert x["expected_ns"] > 0, f"{name}: outlier against 0 ns: {x}"
        proj = {x["threshold"]: x for x in o["projections"]}
        assert set(proj) == {"soft_lockup", "guest_stall"}, f"{name}: {proj}"
        if o["growth"] != "constant":
            assert proj["soft_lockup"]["bytes"] and proj["soft_lockup"]["bytes"] > 16 * MiB, \
                f"{name}: a 20 s operation within the sizes measured? {proj['soft_lockup']}"
    for name in ("convert_to_private", "convert_to_shared"):
        o = ops.get(name)
        assert o is not None, f"{name} neither ran nor skipped"
        if o["skip_reason"]:
            assert "PRIVATE" in o["skip_reason"] or "PROTECTED" in o["skip_reason"], o
    # The check follows the class: superlinear fails the workload, and the run.
    for c in w["checks"]:
        if "grows at most n log n" in c["name"]:
            op = ops[c["name"].split()[0]]
            if op["growth"] == "superlinear":
                assert c["outcome"] == "fail"
            elif op["growth"]:
                assert c["outcome"] == "pass", c
    assert p.returncode == {"pass": 0, "fail": 1}[rep["verdict"]], p.returncode
    assert "range scaling: soft lockup at" in p.stdout, "the text summary has no section"
    assert "punch_hole" in p.stdout and "ns/page" in p.stdout

    page = open(html).read()
    assert 'class="range-scaling"' in page and "punch_hole" in page, "no HTML section"
    # `report html` of the JSON: read back into the model, the same section.
    again = os.path.join(d, "again.html")
    q = run("report", "html", report, "-o", again, timeout=60)
    assert q.returncode == 0, q.stderr
    page2 = open(again).read()
    assert 'class="range-scaling"' in page2 and "soft lockup at" in page2

    # Two sizes: no fit, no class, no projection, and the reason says so.
    p, rep, _, _ = run_scaling(d, "two", "2MiB")
    w, rs = scaling_of(rep)
    for o in rs["ops"]:
        if o["skip_reason"]:
            continue
        assert len(o["samples"]) == 2, o["samples"]
        assert o["linear"] is None and o["power"] is None, f"{o['name']}: a fit of 2 sizes"
        assert o["growth"] is None and "at least 3 sizes" in o["growth_reason"], o
        assert o["projections"] == [], f"{o['name']}: projected from 2 sizes"
    for c in w["checks"]:
        assert c["outcome"] == "skip" and c["reason"], c
    assert "unclassified" in p.stdout


main(test)
