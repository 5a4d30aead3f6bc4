"""The HTML report, rendered by headless Chromium (Debian's chromium package,
scripts/install-deps.sh): what the page shows, read from the DOM Chromium
built and from a screenshot, not only the file. Real lab reports
(tests/data/compare, see test_compare.py); no KVM needed.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from html.parser import HTMLParser

from gms_e2e import SOURCE_DIR, run, skip

DATA = os.path.join(SOURCE_DIR, "tests", "data", "compare")
BASE = [os.path.join(DATA, f"base-{i}.json") for i in (1, 2, 3)]
REGRESSED = [os.path.join(DATA, f"regressed-{i}.json") for i in (1, 2, 3)]


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        skip("chromium is not installed (scripts/install-deps.sh installs Debian's chromium)")
    return exe


def headless(path, *args, timeout=120):
    # No network: every host name resolves to nothing.
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--host-resolver-rules=MAP * ~NOTFOUND", *args, f"file://{path}"],
                          capture_output=True, text=not any("screenshot" in a for a in args),
                          timeout=timeout)


class Dom(HTMLParser):
    """Elements as (tag, attrs, text), with the open elements' classes kept."""

    def __init__(self):
        super().__init__()
        self.elems, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self.stack)}
        self.elems.append(e)
        if tag not in ("br", "meta", "input", "img", "hr", "link"):  # HTML void elements
            self.stack.append(e)

    def handle_startendtag(self, tag, attrs):
        self.elems.append({"tag": tag, "attrs": dict(attrs), "text": "",
                           "parents": list(self.stack)})

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for e in self.stack:
            e["text"] += data

    def find(self, tag, cls=None, within=None):
        out = []
        for e in self.elems:
            if e["tag"] != tag:
                continue
            if cls and cls not in e["attrs"].get("class", "").split():
                continue
            if within is not None and not any(p is within for p in e["parents"]):
                continue
            out.append(e)
        return out


def dom_of(path):
    p = headless(path, "--dump-dom")
    assert p.returncode == 0 and "<html" in p.stdout, f"chromium failed: {p.stderr[-2000:]}"
    d = Dom()
    d.feed(p.stdout)
    return d


def png_pixels(path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit PNG, unfiltered."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def colour_count(path, rgb, tol=40):
    w, h, bpp, rows = png_pixels(path)
    n = 0
    for row in rows:
        for x in range(0, w * bpp, bpp):
            if all(abs(row[x + k] - rgb[k]) <= tol for k in range(3)):
                n += 1
    return n


def screenshot(page, section_id, shot):
    """A screenshot of one operation's section. Headless Chromium does not
    scroll to a #fragment before its screenshot, so a copy of the page gets
    one rule that hides everything else; the section keeps its own style."""
    text = open(page).read()
    rule = (f"<style>body>*:not(#operations){{display:none}}"
            f"section.op:not(#{section_id}){{display:none}}</style></head>")
    focused = page + f".{section_id}.html"
    open(focused, "w").write(text.replace("</head>", rule, 1))
    p = headless(focused, f"--screenshot={shot}", "--window-size=1000,700")
    assert p.returncode == 0 and os.path.exists(shot), p.stderr[-2000:]


def self_contained(path):
    text = open(path).read()
    assert "<script" not in text
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", text), "external reference"
    return text


def ops_with_latencies(rep):
    return [(w["label"], name, op) for w in rep["workloads"] for name, op in w["ops"].items()
            if op["latency_ns"]["count"]]


def test_one_run():
    rep = json.load(open(BASE[0]))
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "run.html")
        p = run("report", "html", BASE[0], "-o", page, check_rc=0)
        assert page in p.stdout
        self_contained(page)
        dom = dom_of(page)
        h2 = [e["text"].strip() for e in dom.find("h2")]
        # Kernel-log findings come first.
        assert h2[0].startswith("Kernel log: "), h2
        n = len(rep["kernel_log"]["findings"])
        assert h2[0] == f"Kernel log: {n} finding{'' if n == 1 else 's'}", h2[0]
        assert dom.find("p", "banner")[0]["text"].strip() == f"verdict: {rep['verdict']}"
        sections = dom.find("section", "op")
        ops = ops_with_latencies(rep)
        assert [s["attrs"]["data-op"] for s in sections] == [f"{w}/{o}" for w, o, _ in ops]
        for sec, (w, name, op) in zip(sections, ops):
            bars = dom.find("rect", "bar", within=sec)
            assert len(bars) == len(op["latency_ns"]["buckets"]), (w, name)
            # Each bar's tooltip names its bucket count.
            counts = [int(re.search(r": (\d+) \(", b["text"]).group(1)) for b in bars]
            assert counts == [n for _, _, n in op["latency_ns"]["buckets"]], (w, name)
            tl = dom.find("polyline", "timeline", within=sec)
            assert len(tl) == 1, (w, name)
            assert len(tl[0]["attrs"]["points"].split()) == len(op["timeline"]["counts"])
            tail = dom.find("polyline", "tail", within=sec)
            assert len(tail) == 1 and len(tail[0]["attrs"]["points"].split()) == 9
            row = dom.find("tr", "run", within=sec)[0]
            assert row["text"].startswith("this run" + str(op["latency_ns"]["count"]))
        inv = dom.find("tr", "invariant")
        assert len(inv) == len(rep["invariants"]) > 0
        for tr, i in zip(inv, rep["invariants"]):
            assert tr["text"].startswith(i["name"] + i["verdict"]), tr["text"]
            for k, v in i["evidence"].items():
                assert f"{k}={v}" in tr["text"]
        shot = os.path.join(d, "run.png")
        screenshot(page, sections[0]["attrs"]["id"], shot)
        # The bars are drawn: the run's blue (#5b8def at 55% on the plot's white).
        assert colour_count(shot, (164, 191, 245)) > 200


def test_comparison():
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "cmp.html")
        run("report", "html", *[a for b in BASE for a in ("--base", b)],
            *[a for n in REGRESSED for a in ("--new", n)], "-o", page, check_rc=0)
        self_contained(page)
        # compare --html writes the same page.
        page2 = os.path.join(d, "cmp2.html")
        run("compare", "--html", page2, *BASE, "--", *REGRESSED, check_rc=1)
        assert open(page2).read() == open(page).read()
        cmp = json.loads(run("compare", "--json", *BASE, "--", *REGRESSED, check_rc=1).stdout)
        dom = dom_of(page)
        h2 = [e["text"].strip() for e in dom.find("h2")]
        assert h2[0] == "Kernel log: 1 new finding", h2
        findings = dom.find("li", "finding")
        assert len(findings) == 1 and "kvm_gmem_punch_hole" in findings[0]["text"]
        assert dom.find("p", "banner")[0]["text"].startswith("verdict: regression")
        worse = {f"{m['workload']}/{m['op']}" for m in cmp["metrics"] if m["change"] == "worse"}
        sig = {s["attrs"]["data-op"] for s in dom.find("section", "sig-worse")}
        assert sig == worse and sig, (sig, worse)
        rows = dom.find("tr", "metric")
        assert len(rows) == len(cmp["metrics"])
        assert sum("worse" in r["attrs"]["class"].split() for r in rows) == \
            sum(m["change"] == "worse" for m in cmp["metrics"])
        regress = dom.find("tr", "regression")
        assert any("invariant" in r["text"] for r in regress)
        reports = {"base": [json.load(open(p)) for p in BASE],
                   "new": [json.load(open(p)) for p in REGRESSED]}
        for sec in dom.find("section", "op"):
            # Both sides overlaid: bars of each side that ran the operation,
            # a timeline per report that has it.
            w, op = sec["attrs"]["data-op"].split("/", 1)
            has = {side: [r for r in reps for x in r["workloads"] if x["label"] == w
                          and op in x["ops"] and x["ops"][op]["timeline"]["counts"]]
                   for side, reps in reports.items()}
            for side in ("base", "new"):
                assert bool(dom.find("rect", side, within=sec)) == bool(has[side]), (sec, side)
            assert len(dom.find("polyline", "timeline", within=sec)) == \
                len(has["base"]) + len(has["new"]), sec["attrs"]
            assert len(dom.find("polyline", "tail", within=sec)) == \
                bool(has["base"]) + bool(has["new"])
        shot = os.path.join(d, "cmp.png")
        screenshot(page, dom.find("section", "sig-worse")[0]["attrs"]["id"], shot)
        # The significant slowdown is drawn in red (#d93025 at 55% on white).
        assert colour_count(shot, (233, 140, 134)) > 100


def test_errors():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "x.html")
        p = run("report", "html", BASE[0], BASE[1], "-o", out)
        assert p.returncode == 2 and "give one report" in p.stderr, p.stderr
        p = run("report", "html", "/nonexistent.json", "-o", out)
        assert p.returncode == 2 and "/nonexistent.json" in p.stderr, p.stderr
        assert not os.path.exists(out)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print(f"ok {name}")
