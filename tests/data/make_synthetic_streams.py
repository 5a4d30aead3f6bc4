#!/usr/bin/env python3
"""Writes the hand-made event streams of tests/data/synthetic-*.jsonl.

The host (lockdown, tracepoints only) cannot record direct-map or hand-out
events, and no released kernel has GUEST_MEMFD_FLAG_NO_DIRECT_MAP, so these
streams are built by hand in the exact format the session records (see
probes/checkers.cpp: to_json(Event)). Each broken stream differs from
synthetic-ndm-good.jsonl by one deliberate fault. Run from anywhere:
    python3 tests/data/make_synthetic_streams.py
"""
import copy
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
UPTODATE, VALID, RETURN, NO_INODE, PTR_PFN, COUNTED = 1, 2, 4, 16, 64, 128
DEV, INO = 15, 1001  # kernel dev_t 0:15, inode 1001

FN = ["dm_invalid", "dm_default", "dm_valid", "folio_zap", "folio_restore",
      "get_pfn", "user_fault", "kvm_gmem_free_folio", "filemap_free_folio", "release"]
COVERAGE = {
    "attached": {"pc_add": "tracepoint", "pc_del": "tracepoint", **{p: "fentry" for p in FN}},
    "missing": {}, "lost_events": 0, "parse_errors": 0, "stash_lost": 0,
    "calibration_ran": True, "calibration_ok": True,
    "calibration_reason": "observed 4 zap/restore pairs on secretmem pages",
    "lockdown": "none", "pfn_correction": 0,
}


class Stream:
    def __init__(self, bpf_judged=False):
        self.ev = []
        # Hand-outs judged in BPF (GMS_CNT_*_JUDGED): only not-uptodate ones and
        # those of NO_DIRECT_MAP files become records (flagged COUNTED).
        self.bpf_judged = bpf_judged
        self.ndm = False
        self.judged = {"get_pfn": 0, "user_fault": 0}

    def add(self, type_, **kw):
        e = {"type": type_, "seq": len(self.ev) + 1, "ts": 1000 * (len(self.ev) + 1)}
        e.update(kw)
        self.ev.append(e)
        return self

    def created(self, ndm=True):
        self.ndm = ndm
        return self.add("gmem_created", dev=DEV, ino=INO, gmem_flags=(1 | 2 | (4 if ndm else 0)),
                        flags_known=True, no_direct_map=ndm, preexisting=False)

    def pc(self, kind, pfn, index, order=0):
        return self.add(kind, src="tp_" + kind, pfn=pfn, dev=DEV, ino=INO, index=index, order=order)

    def zap(self, pfn, nr=1):  # folio_zap_direct_map -> set_direct_map_valid_noflush(page, nr, false)
        self.add("direct_map", src="set_direct_map_valid_noflush", flags=RETURN | PTR_PFN, pfn=pfn, nr=nr)
        return self.add("direct_map", src="folio_zap_direct_map", flags=RETURN | PTR_PFN, pfn=pfn, nr=nr)

    def restore(self, pfn, nr=1):
        self.add("direct_map", src="set_direct_map_valid_noflush", flags=RETURN | VALID | PTR_PFN, pfn=pfn, nr=nr)
        return self.add("direct_map", src="folio_restore_direct_map", flags=RETURN | VALID | PTR_PFN, pfn=pfn, nr=nr)

    def free(self, pfn):
        # Frees are recorded once a NO_DIRECT_MAP file is watched, and never
        # before (kvm_gmem_free_folio in probes/bpf/gmem.bpf.c).
        if not self.ndm:
            return self
        return self.add("free_folio", src="kvm_gmem_free_folio", flags=RETURN | NO_INODE | PTR_PFN, pfn=pfn)

    def handout(self, kind, pfn, index, uptodate=True):
        src = "kvm_gmem_get_pfn" if kind == "get_pfn" else "kvm_gmem_fault_user_mapping"
        flags = RETURN | (UPTODATE if uptodate else 0)
        if self.bpf_judged:
            self.judged[kind] += 1
            flags |= COUNTED
            if uptodate and not self.ndm:
                return self  # judged in BPF, nothing recorded
        return self.add(kind, src=src, flags=flags, pfn=pfn, dev=DEV, ino=INO, index=index)

    def coverage(self):
        c = copy.deepcopy(COVERAGE)
        c["handouts_judged_in_bpf"] = {"enabled": True, **self.judged}
        return c

    def released(self):
        return self.add("gmem_released", dev=DEV, ino=INO)


def write(name, s, note, coverage=COVERAGE, expect=None):
    meta = {"meta": {"synthetic": True, "note": note, "coverage": coverage,
                     "expect": expect or {"gmem_files": 1, "expected_pages_added": 2,
                                          "expected_pages_removed": 2}}}
    with open(os.path.join(HERE, f"synthetic-{name}.jsonl"), "w") as f:
        f.write(json.dumps(meta) + "\n")
        for e in s.ev:
            f.write(json.dumps(e) + "\n")


def good(ndm=True, zap_a=True, restore_b=True, extra_zap=False, early_handout=False,
         early_restore=False, uptodate=True, bpf_judged=False, zap_a_before_add=False):
    s = Stream(bpf_judged).created(ndm)
    # A foreign page (secretmem, vmalloc) leaving and re-entering the direct map.
    s.add("direct_map", src="set_direct_map_invalid_noflush", flags=RETURN | PTR_PFN, pfn=0x9000, nr=1)
    s.add("direct_map", src="set_direct_map_default_noflush", flags=RETURN | VALID | PTR_PFN, pfn=0x9000, nr=1)
    if zap_a_before_add:
        # filemap_add_folio() zapping the folio before it inserts it (a
        # NO_DIRECT_MAP series that moves the zap into the page cache): the
        # zap is recorded before the add tracepoint fires.
        s.zap(0x1000)
    s.pc("pc_add", 0x1000, 0)
    if early_handout:
        s.handout("get_pfn", 0x1000, 0)
    if zap_a and ndm and not zap_a_before_add:
        s.zap(0x1000)
    if extra_zap:
        s.zap(0x1000)
    if early_restore:
        s.restore(0x1000)
        s.restore(0x1000)
    if not early_handout:
        s.handout("get_pfn", 0x1000, 0, uptodate)
    s.pc("pc_add", 0x2000, 1)
    if ndm:
        s.zap(0x2000)
    s.handout("user_fault", 0x2000, 1)
    s.pc("pc_del", 0x1000, 0)
    s.pc("pc_del", 0x2000, 1)
    if ndm and not early_restore:
        s.restore(0x1000)
    s.free(0x1000)
    if ndm and restore_b:
        s.restore(0x2000)
    s.free(0x2000)
    return s.released()


write("ndm-good", good(), "NO_DIRECT_MAP file: every folio zapped after add, restored before free")
write("ndm-missing-restore", good(restore_b=False), "pfn 0x2000 is freed without being restored")
write("ndm-double-zap", good(extra_zap=True), "pfn 0x1000 is zapped twice")
write("ndm-restore-without-zap", good(early_restore=True),
      "pfn 0x1000 is restored while in the page cache, then restored again without a zap")
write("ndm-never-zapped", good(zap_a=False), "pfn 0x1000 never leaves the direct map")
write("ndm-handout-before-zap", good(early_handout=True),
      "pfn 0x1000 is handed to the guest before it leaves the direct map")
write("not-uptodate", good(uptodate=False), "kvm_gmem_get_pfn hands out pfn 0x1000 while not uptodate")
write("ndm-zap-before-add", good(zap_a_before_add=True),
      "NO_DIRECT_MAP file: pfn 0x1000 leaves the direct map before its insertion is recorded "
      "(a zap inside filemap_add_folio, before __filemap_add_folio)")
write("plain-zap-before-add", good(ndm=False, zap_a_before_add=True),
      "plain file: pfn 0x1000 is out of the direct map when it is inserted")

lost = copy.deepcopy(COVERAGE)
lost["lost_events"] = 3
write("ndm-lost-events", good(), "the good stream, but 3 ring buffer reservations failed", coverage=lost)

# Plain file (no NO_DIRECT_MAP): a zap of one of its pages is a violation.
s = good(ndm=False)
plain_zap = Stream()
plain_zap.ev = [e for e in s.ev]
for i, e in enumerate(plain_zap.ev):
    if e["type"] == "pc_add" and e["pfn"] == 0x2000:
        plain_zap.ev.insert(i + 1, {"type": "direct_map", "seq": 900, "ts": e["ts"] + 1,
                                    "src": "set_direct_map_invalid_noflush",
                                    "flags": RETURN | PTR_PFN, "pfn": 0x2000, "nr": 1})
        break
write("plain-good", good(ndm=False), "plain file: no direct-map change touches its folios")
write("plain-zapped", plain_zap, "plain file: pfn 0x2000 leaves the direct map")

# Granularity: an order-1 folio zapped as 2 pages at once, restored page by page.
g = Stream().created(True)
g.pc("pc_add", 0x4000, 0, order=1)
g.zap(0x4000, nr=2)
g.pc("pc_del", 0x4000, 0, order=1)
g.add("direct_map", src="set_direct_map_default_noflush", flags=RETURN | VALID | PTR_PFN, pfn=0x4000, nr=1)
g.add("direct_map", src="set_direct_map_default_noflush", flags=RETURN | VALID | PTR_PFN, pfn=0x4001, nr=1)
g.free(0x4000)
g.released()
write("ndm-granularity", g, "zapped as one 2-page range, restored one page at a time",
      expect={"gmem_files": 1, "expected_pages_added": 2, "expected_pages_removed": 2})

# Hand-outs judged in BPF: counters in the coverage, records only where needed.
s = good(ndm=False, bpf_judged=True)
write("bpf-judged-good", s, "plain file: both hand-outs judged uptodate in BPF, no hand-out record",
      coverage=s.coverage())
s = good(ndm=False, uptodate=False, bpf_judged=True)
write("bpf-judged-not-uptodate", s,
      "plain file, judged in BPF: only the non-uptodate get_pfn of pfn 0x1000 is recorded",
      coverage=s.coverage())
s = good(ndm=True, bpf_judged=True)
write("bpf-judged-ndm-good", s,
      "NO_DIRECT_MAP file, judged in BPF: every hand-out recorded (counted) for the direct-map checker",
      coverage=s.coverage())
