// SPDX-License-Identifier: GPL-2.0
/* gmemstress: observation of guest_memfd page-cache, direct-map and
 * hand-out events. CO-RE; loaded through the skeleton generated at build time.
 *
 * Every attach point has up to three variants (fentry/fexit, kprobe/kretprobe,
 * tracepoint). All programs are opened with autoload off; the loader enables
 * the one variant it picked per attach point (see probes/attach_points.cpp).
 * Programs named tp_* use only their tracepoint context: they load under
 * lockdown=confidentiality, where bpf_probe_read_kernel is refused.
 */
#include "vmlinux_min.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "../events.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- maps ---------------------------------------------------------- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GMS_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* guest_memfd inodes of this run (or of the watched process). Released
 * files leave it a little later, so it must hold every file a burst of
 * lifecycle churn creates meanwhile (thousands a second). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct gms_inode_key);
	__type(value, __u32);
} watched SEC(".maps");

/* Per CPU, the last watched inode a hand-out found in `watched`: hand-outs
 * come in long runs from one file, and this array's load is inlined where a
 * hash lookup hashes the key and walks a bucket. Valid while its gen equals
 * cfg_watch_gen, which the loader bumps after every change of `watched`. */
struct watch_memo {
	__u64 ino;
	__u32 dev;
	__u32 what;
	__u64 gen;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct watch_memo);
} memo SEC(".maps");

/* Addresses of watched mappings' invalidate_lock (learned on fallocate). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} gmem_locks SEC(".maps");

struct lock_wait {
	__u64 ts;
	__u64 lock;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct lock_wait);
} lock_start SEC(".maps");

/* pfns that left a watched guest_memfd page cache and were not freed yet:
 * the leak detector (folio_release) matches kmem:mm_page_free against it,
 * so the free of every other page in the system costs one lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64); /* pfn */
	__type(value, struct gms_departed);
} departed SEC(".maps"); /* shared with refcount.bpf.c (same definition) */

/* Per thread: the punch or release of a watched guest_memfd in progress, so
 * that KVM MMU invalidations on that thread are attributed to it. */
struct gmem_op {
	__u64 ino;
	__u64 kvm; /* release: the file's kvm */
	__u64 start, end;
	__u32 dev;
	__u32 op;       /* enum gms_inval_op */
	__u32 notifier; /* depth of KVM MMU notifier calls on this thread */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tid */
	__type(value, struct gmem_op);
} gmem_ops SEC(".maps");

/* kprobe entry -> kretprobe: the arguments of the call in flight. */
struct stash_key {
	__u64 pid_tgid;
	__u32 point;
	__u32 pad;
};
struct stash_val {
	__u64 a[4];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct stash_key);
	__type(value, struct stash_val);
} stash SEC(".maps");

/* ---- configuration written by the loader through the skeleton ------ */
volatile __u32 cfg_all_gmem = 0;   /* observe every inode on cfg_gmem_dev */
volatile __u32 cfg_gmem_dev = 0;   /* kernel dev_t of the guest_memfd superblock */
volatile __u32 cfg_filter_tgid = 0; /* counters/lock contention: this tgid (0: all) */
volatile __u64 cfg_vmemmap_base = 0; /* 0: use the vmemmap_base symbol or the default */
/* Wake the consumer only once this many bytes wait in the ring buffer (it
 * also drains on its poll timeout); 0: on every record, libbpf's default. */
volatile __u64 cfg_wakeup_bytes = 0;
/* Set once a NO_DIRECT_MAP file is watched: kvm_gmem_free_folio() cannot
 * name its file (folio->mapping is gone), and only those files need frees. */
volatile __u32 cfg_ndm_watched = 0;
/* Generation of the `watched` map (never 0 once loaded): see watch_memo. */
volatile __u64 cfg_watch_gen = 0;

/* ---- how arguments are decoded, set by the loader before load from the
 * kernel's BTF prototypes (probes/planner.cpp, classify_signature): the
 * verifier drops the branches a kernel does not need. -------------------- */
/* GMS_DM_ADDR_* bits: that set_direct_map_*_noflush() takes a direct-map
 * address (NO_DIRECT_MAP v12), not a struct page *. */
const volatile __u32 cfg_dm_addr = 0;
/* kvm_gmem_get_pfn() has its struct page ** parameter (6 arguments, 6.13+);
 * 0: 5 arguments (6.12), the page is the pfn's. */
const volatile __u32 cfg_get_pfn_has_page = 1;

__u64 seq = 0;

/* The bases of the vmemmap and of the direct map, read once from the kernel
 * variables (their addresses come from kallsyms through libbpf's typeless
 * ksyms) and kept here. The pfns are made exact in BPF because userspace
 * cannot read kernel memory; the secretmem calibration would show a wrong
 * base (probes/calibration.h). */
extern const void vmemmap_base __ksym __weak;
extern const void page_offset_base __ksym __weak;
__u64 gms_vmemmap_base = 0;
__u64 gms_page_offset_base = 0;

/* ---- helpers ------------------------------------------------------- */
static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += n;
}

static __always_inline bool tgid_selected(void)
{
	__u32 want = cfg_filter_tgid;
	return !want || (bpf_get_current_pid_tgid() >> 32) == want;
}

/* *what: the watched map's value (GMS_WATCH_*), 0 when selected by dev only. */
static __always_inline bool inode_watch(__u32 dev, __u64 ino, __u16 *flags, __u32 *what)
{
	struct gms_inode_key k = {.dev = dev, .pad = 0, .ino = ino};
	__u32 *v = bpf_map_lookup_elem(&watched, &k);

	if (v) {
		*flags |= GMS_F_WATCHED;
		*what = *v;
		return true;
	}
	*what = 0;
	return cfg_all_gmem && cfg_gmem_dev && dev == cfg_gmem_dev;
}

/* inode_watch() through this CPU's watch_memo. */
static __always_inline bool memo_watch(__u32 dev, __u64 ino, __u32 *what)
{
	__u32 zero = 0;
	__u64 gen = cfg_watch_gen; /* before the lookup: a change after it voids the memo */
	struct watch_memo *w = bpf_map_lookup_elem(&memo, &zero);
	__u16 flags = 0;

	if (w && w->gen == gen && w->dev == dev && w->ino == ino) {
		*what = w->what;
		return true;
	}
	if (!inode_watch(dev, ino, &flags, what))
		return false;
	if (w && (flags & GMS_F_WATCHED)) {
		w->ino = ino;
		w->dev = dev;
		w->what = *what;
		w->gen = gen;
	}
	return true;
}

static __always_inline bool inode_selected(__u32 dev, __u64 ino, __u16 *flags)
{
	__u32 what;

	return inode_watch(dev, ino, flags, &what);
}

static __always_inline void *reserve(__u32 size, __u32 type, __u16 src, __u16 flags)
{
	struct gms_ev_hdr *h = bpf_ringbuf_reserve(&events, size, 0);

	if (!h) {
		count(GMS_CNT_RB_DROPS, 1);
		return 0;
	}
	h->type = type;
	h->src = src;
	h->flags = flags;
	h->ts_ns = bpf_ktime_get_ns();
	h->seq = __sync_fetch_and_add(&seq, 1);
	h->cpu = bpf_get_smp_processor_id();
	h->tgid = bpf_get_current_pid_tgid() >> 32;
	return h;
}

/* A wake-up per record costs an interrupt and a context switch each (in
 * bursts of page-cache changes, thousands a second): records are sent
 * without one until cfg_wakeup_bytes are pending, and the consumer drains
 * the rest on its poll timeout. */
static __always_inline void submit(void *rec)
{
	__u64 wake = cfg_wakeup_bytes, flags = 0;

	if (wake)
		flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wake ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
	count(GMS_CNT_EVENTS, 1);
}

static __always_inline __u64 vmemmap_start(void)
{
	__u64 base = cfg_vmemmap_base;

	if (!base)
		base = gms_vmemmap_base;
	if (base)
		return base;
	if (bpf_ksym_exists(&vmemmap_base))
		bpf_probe_read_kernel(&base, sizeof(base), &vmemmap_base);
	if (!base)
		base = 0xffffea0000000000ULL; /* __VMEMMAP_BASE_L4 without KASLR */
	gms_vmemmap_base = base;
	return base;
}

static __always_inline __u64 direct_map_start(void)
{
	__u64 base = gms_page_offset_base;

	if (base)
		return base;
	if (bpf_ksym_exists(&page_offset_base))
		bpf_probe_read_kernel(&base, sizeof(base), &page_offset_base);
	if (!base)
		base = 0xffff888000000000ULL; /* __PAGE_OFFSET_BASE_L4 without KASLR */
	gms_page_offset_base = base;
	return base;
}

/* struct page pointer -> pfn (SPARSEMEM_VMEMMAP, x86-64). */
static __always_inline __u64 page_to_pfn(const void *page)
{
	return ((__u64)page - vmemmap_start()) / bpf_core_type_size(struct page);
}

/* pfn -> struct page pointer, as a number. */
static __always_inline __u64 pfn_to_page_addr(__u64 pfn)
{
	return vmemmap_start() + pfn * bpf_core_type_size(struct page);
}

/* Direct-map address -> pfn (x86-64: addr = page_offset_base + (pfn << 12)). */
static __always_inline __u64 addr_to_pfn(__u64 addr)
{
	return (addr - direct_map_start()) >> 12;
}

static __always_inline unsigned long page_flags(const void *page)
{
	unsigned long f = 0;

	bpf_probe_read_kernel(&f, sizeof(f), page); /* flags: first word */
	return f;
}

static __always_inline const void *compound_head_of(struct page *page)
{
	unsigned long p = (unsigned long)page, info;

	if (bpf_core_field_exists(page->compound_head)) {
		info = BPF_CORE_READ(page, compound_head);
		return (info & 1) ? (const void *)(info - 1) : (const void *)page;
	}
	if (!bpf_core_field_exists(((struct page___ci *)page)->compound_info))
		return page; /* unknown layout: treat as a head (order-0 folios) */
	info = BPF_CORE_READ((struct page___ci *)page, compound_info);
	if (!(info & 1))
		return page;
	/* A head pointer lies just below the page; a mask (all high bits set)
	 * minus one is above every struct page address. */
	if (info - 1 <= p && p - (info - 1) < (64UL << 18))
		return (const void *)(info - 1);
	return (const void *)(p & info);
}

static __always_inline __u32 folio_order_of(struct folio *folio, __u16 *flags)
{
	if (!bpf_core_enum_value_exists(enum pageflags, PG_head)) {
		*flags |= GMS_F_NO_ORDER;
		return 0;
	}
	if (!(page_flags(folio) & (1UL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 0;
	if (bpf_core_field_exists(folio->_flags_1))
		return BPF_CORE_READ(folio, _flags_1) & 0xff;
	if (bpf_core_field_exists(((struct folio___old *)folio)->_folio_order))
		return BPF_CORE_READ((struct folio___old *)folio, _folio_order);
	*flags |= GMS_F_NO_ORDER;
	return 0;
}

static __always_inline bool folio_uptodate(const void *head)
{
	if (!bpf_core_enum_value_exists(enum pageflags, PG_uptodate))
		return false;
	return page_flags(head) & (1UL << bpf_core_enum_value(enum pageflags, PG_uptodate));
}

/* dev/ino of the file a page-cache folio belongs to. false: no file mapping. */
static __always_inline bool mapping_ident(struct address_space *m, __u32 *dev, __u64 *ino)
{
	struct inode *host;

	if (!m || ((unsigned long)m & 3)) /* NULL, anon or movable_ops */
		return false;
	host = BPF_CORE_READ(m, host);
	if (!host)
		return false;
	*ino = BPF_CORE_READ(host, i_ino);
	*dev = BPF_CORE_READ(host, i_sb, s_dev);
	return true;
}

static __always_inline bool inode_ident(struct inode *inode, __u32 *dev, __u64 *ino)
{
	if (!inode)
		return false;
	*ino = BPF_CORE_READ(inode, i_ino);
	*dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return true;
}

static __always_inline void stash_put(__u32 point, __u64 a0, __u64 a1, __u64 a2, __u64 a3)
{
	struct stash_key k = {.pid_tgid = bpf_get_current_pid_tgid(), .point = point, .pad = 0};
	struct stash_val v = {.a = {a0, a1, a2, a3}};

	if (bpf_map_update_elem(&stash, &k, &v, BPF_ANY))
		count(GMS_CNT_ARG_STASH_FULL, 1);
}

static __always_inline bool stash_take(__u32 point, struct stash_val *out)
{
	struct stash_key k = {.pid_tgid = bpf_get_current_pid_tgid(), .point = point, .pad = 0};
	struct stash_val *v = bpf_map_lookup_elem(&stash, &k);

	if (!v)
		return false;
	*out = *v;
	bpf_map_delete_elem(&stash, &k);
	return true;
}

/* fentry/fexit arguments are typed pointers (PTR_TO_BTF_ID) on which the
 * verifier forbids arithmetic: fetch them as plain numbers instead. */
static __always_inline __u64 arg(void *ctx, __u32 n)
{
	__u64 v = 0;

	bpf_get_func_arg(ctx, n, &v);
	return v;
}

static __always_inline __s64 ret_of(void *ctx)
{
	__u64 v = 0;

	bpf_get_func_ret(ctx, &v);
	return (__s64)v;
}

/* ---- emitters shared by the fentry and kprobe variants -------------- */
/* need: GMS_WATCH_* bits the file's watched value must have (0: any file
 * selected by the filter). */
static __always_inline void emit_folio(__u32 type, __u16 src, __u16 flags, struct folio *folio,
				       struct address_space *m, __s64 ret, __u32 need)
{
	struct gms_ev_folio *e;
	__u32 dev = 0, what = 0;
	__u64 ino = 0;

	if (!m)
		m = BPF_CORE_READ(folio, mapping);
	if (!mapping_ident(m, &dev, &ino) || !inode_watch(dev, ino, &flags, &what) ||
	    (what & need) != need)
		return;
	e = reserve(sizeof(*e), type, src, flags | GMS_F_PTR_PFN);
	if (!e)
		return;
	e->pfn = page_to_pfn(folio);
	e->ino = ino;
	e->dev = dev;
	e->index = BPF_CORE_READ(folio, index);
	e->order = folio_order_of(folio, &e->hdr.flags);
	e->ret = ret;
	submit(e);
}

/* Direct-map changes are emitted for every page: they are rare, and the
 * checker correlates them with watched folios by pfn in userspace. `target`:
 * a struct page (or folio) pointer, or with `is_addr` a direct-map address. */
static __always_inline void emit_direct_map(__u16 src, __u16 flags, __u64 target, bool is_addr,
					    __u64 nr, __s64 ret)
{
	struct gms_ev_direct_map *e = reserve(sizeof(*e), GMS_EV_DIRECT_MAP, src,
					      flags | (is_addr ? GMS_F_ADDR_PFN : GMS_F_PTR_PFN));

	count(GMS_CNT_DM_FOREIGN, 1);
	if (!e)
		return;
	e->pfn = is_addr ? addr_to_pfn(target) : page_to_pfn((const void *)target);
	e->nr = nr;
	e->ret = ret;
	submit(e);
}

static __always_inline __u64 folio_nr_pages_of(struct folio *folio)
{
	__u16 f = 0;

	return 1ULL << folio_order_of(folio, &f);
}

/* Hand-outs happen on every fault (host faults: millions a second), so the
 * uptodate check is made here: a judged hand-out is counted in `cnt` and
 * recorded only when the folio was not uptodate, or when its file is
 * NO_DIRECT_MAP (the direct-map checker correlates those hand-outs by pfn).
 * A hand-out that cannot be judged here (page without a mapping, kernel
 * without PG_uptodate) is recorded uncounted, as before, for userspace. */
static __always_inline void emit_handout(__u32 type, __u16 src, __u32 cnt, struct page *page,
					 __u64 pfn, __s64 ret, bool have_pfn)
{
	struct gms_ev_handout *e;
	const void *head;
	__u16 flags = GMS_F_RETURN;
	__u32 dev = 0, what = 0;
	__u64 ino = 0;
	bool judged = bpf_core_enum_value_exists(enum pageflags, PG_uptodate);

	if (!page)
		return;
	head = compound_head_of(page);
	if (!mapping_ident(BPF_CORE_READ((struct folio *)head, mapping), &dev, &ino)) {
		flags |= GMS_F_NO_INODE;
		judged = false;
	} else if (!inode_watch(dev, ino, &flags, &what)) {
		return;
	}
	if (folio_uptodate(head))
		flags |= GMS_F_UPTODATE;
	if (judged) {
		count(cnt, 1);
		flags |= GMS_F_COUNTED;
		if ((flags & GMS_F_UPTODATE) && !(what & GMS_WATCH_NO_DIRECT_MAP))
			return; /* judged and fine: nothing to record */
	}
	if (!have_pfn)
		flags |= GMS_F_PTR_PFN;
	e = reserve(sizeof(*e), type, src, flags);
	if (!e)
		return;
	e->pfn = have_pfn ? pfn : page_to_pfn(page);
	e->ino = ino;
	e->dev = dev;
	e->index = BPF_CORE_READ((struct folio *)head, index) +
		   (((__u64)page - (__u64)head) / bpf_core_type_size(struct page));
	e->order = folio_order_of((struct folio *)head, &e->hdr.flags);
	e->ret = ret;
	submit(e);
}

/* The first word of a struct page (its flags), loaded without a CO-RE
 * relocation: offset 0 whatever type the kernel gives the flags. */
struct gms_first_word {
	unsigned long w;
};

/* compound_head / compound_info of a BTF-typed page as a number, by a direct
 * load; *ok false when the kernel has neither field. BTF types that word of
 * struct page's union as list_head lru's `next` pointer, whose bit 0 the
 * verifier will not let a program test, so it is loaded through a view
 * whose second word is a plain long (struct timespec64's tv_nsec): still a
 * load the verifier checks and makes fault-safe (BPF_PROBE_MEM), the same
 * 8 bytes a bpf_probe_read_kernel() would copy, without the helper call. */
static __always_inline unsigned long compound_word(struct page *page, bool *ok)
{
	__u64 off;

	if (bpf_core_field_exists(page->compound_head))
		off = bpf_core_field_offset(page->compound_head);
	else if (bpf_core_field_exists(((struct page___ci *)page)->compound_info))
		off = bpf_core_field_offset(((struct page___ci *)page)->compound_info);
	else {
		*ok = false;
		return 0;
	}
	*ok = true;
	return bpf_core_cast((void *)page + off - 8, struct timespec64)->tv_nsec;
}

/* fentry/fexit only. Hand-outs fire on every fault; their common cases (an
 * uptodate order-0 folio of a watched file without NO_DIRECT_MAP, or a file
 * not watched) are decided here with direct loads through BTF-typed pointers
 * (bpf_core_cast: checked by the verifier, fault-safe), no helper call, and
 * the file looked up in this CPU's watch_memo before the `watched` hash.
 * false: emit_handout() decides (a record is due, or this path cannot
 * judge), and it repeats the judgment from the start. */
static __always_inline bool handout_fast(struct page *page, __u32 cnt)
{
	struct address_space *m;
	struct inode *host;
	unsigned long info;
	__u32 what = 0;
	bool known;

	if (!page || !bpf_core_enum_value_exists(enum pageflags, PG_uptodate))
		return false;
	info = compound_word(page, &known);
	if (!known)
		return false;
	if (info & 1)
		return false; /* a tail page of a large folio */
	m = page->mapping; /* a head page's mapping is its folio's */
	if (!m)
		return false;
	host = m->host;
	if (!host)
		return false;
	if (!memo_watch(host->i_sb->s_dev, host->i_ino, &what))
		return true; /* not a watched file: nothing to judge */
	if (what & GMS_WATCH_NO_DIRECT_MAP)
		return false; /* the direct-map checker needs the record */
	if (!(((struct gms_first_word *)page)->w &
	      (1UL << bpf_core_enum_value(enum pageflags, PG_uptodate))))
		return false; /* a violation: recorded by emit_handout() */
	count(cnt, 1);
	return true;
}

static __always_inline void emit_file_op(__u32 type, __u16 src, struct inode *inode, __u32 mode,
					 __u64 offset, __u64 len, __s64 ret, bool need_inode)
{
	struct gms_ev_file_op *e;
	__u16 flags = GMS_F_RETURN;
	__u32 dev = 0;
	__u64 ino = 0;

	if (inode_ident(inode, &dev, &ino)) {
		if (!inode_selected(dev, ino, &flags))
			return;
	} else if (need_inode) {
		return;
	} else {
		flags |= GMS_F_NO_INODE;
	}
	e = reserve(sizeof(*e), type, src, flags);
	if (!e)
		return;
	e->ino = ino;
	e->dev = dev;
	e->mode = mode;
	e->offset = offset;
	e->len = len;
	e->ret = ret;
	submit(e);
}

/* Remember the watched file's invalidate_lock so contention on it is told
 * apart from other locks. */
static __always_inline void learn_gmem_lock(struct inode *inode)
{
	struct address_space *m = BPF_CORE_READ(inode, i_mapping);
	__u64 addr = (__u64)&m->invalidate_lock; /* CO-RE relocated offset */
	__u32 one = 1;

	if (m)
		bpf_map_update_elem(&gmem_locks, &addr, &one, BPF_ANY);
}

/* Stash slots for the kprobe variants. */
enum {
	ST_FILEMAP_FREE = 1,
	ST_GMEM_FREE,
	ST_GET_PFN,
	ST_USER_FAULT,
	ST_FALLOCATE,
	ST_SPLIT,
	ST_FOLIO_ZAP,
	ST_FOLIO_RESTORE,
	ST_INVAL_BIND,
};

/* ==== tracepoints (ctx only: load under every lockdown level) ========== */
static __always_inline int pc_tp(struct trace_event_raw_mm_filemap_op_page_cache *ctx, __u32 type,
				 __u16 src)
{
	struct gms_ev_folio *e;
	__u16 flags = 0;
	__u32 dev = ctx->s_dev;
	__u64 ino = ctx->i_ino;

	if (!inode_selected(dev, ino, &flags)) {
		count(GMS_CNT_PC_FILTERED_OUT, 1);
		return 0;
	}
	e = reserve(sizeof(*e), type, src, flags);
	if (!e)
		return 0;
	e->pfn = ctx->pfn;
	e->ino = ino;
	e->dev = dev;
	e->index = ctx->index;
	if (bpf_core_field_exists(ctx->order)) {
		e->order = ctx->order;
	} else {
		e->order = 0;
		e->hdr.flags |= GMS_F_NO_ORDER;
	}
	e->ret = 0;
	submit(e);
	return 0;
}

/* A folio left a watched guest_memfd: its pfn waits for its free. */
static __always_inline void note_departed(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct gms_departed v = {};
	__u64 pfn = ctx->pfn;
	__u16 flags = 0;
	__u32 what = 0;

	if (!inode_watch(ctx->s_dev, ctx->i_ino, &flags, &what) || (what & GMS_WATCH_CALIBRATION))
		return;
	v.ino = ctx->i_ino;
	v.dev = ctx->s_dev;
	v.index = ctx->index;
	v.order = bpf_core_field_exists(ctx->order) ? ctx->order : 0;
	if (bpf_map_update_elem(&departed, &pfn, &v, BPF_ANY))
		count(GMS_CNT_DEPARTED_FULL, 1);
}

SEC("tp/filemap/mm_filemap_add_to_page_cache")
int tp_pc_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	return pc_tp(ctx, GMS_EV_PC_ADD, GMS_SRC_TP_PC_ADD);
}

SEC("tp/filemap/mm_filemap_delete_from_page_cache")
int tp_pc_del(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	pc_tp(ctx, GMS_EV_PC_DEL, GMS_SRC_TP_PC_DEL);
	note_departed(ctx);
	return 0;
}

/* kmem:mm_page_free: every page freed in the system; recorded only for pfns
 * in `departed` (the final free of a folio that left a watched file). */
SEC("tp/kmem/mm_page_free")
int tp_page_free(struct trace_event_raw_mm_page_free *ctx)
{
	__u64 pfn = ctx->pfn;
	struct gms_departed *v = bpf_map_lookup_elem(&departed, &pfn);
	struct gms_ev_folio *e;

	if (!v)
		return 0;
	e = reserve(sizeof(*e), GMS_EV_PAGE_FREE, GMS_SRC_TP_PAGE_FREE, 0);
	if (e) {
		e->pfn = pfn;
		e->ino = v->ino;
		e->dev = v->dev;
		e->index = v->index;
		e->order = ctx->order;
		e->ret = 0;
		submit(e);
	}
	bpf_map_delete_elem(&departed, &pfn);
	return 0;
}

SEC("tp/kvm/kvm_page_fault")
int tp_kvm_page_fault(void *ctx)
{
	if (tgid_selected())
		count(GMS_CNT_KVM_PAGE_FAULT, 1);
	return 0;
}

SEC("tp/kvmmmu/kvm_mmu_set_spte")
int tp_spte_set(void *ctx)
{
	if (tgid_selected())
		count(GMS_CNT_SPTE_SET, 1);
	return 0;
}

SEC("tp/kvmmmu/kvm_tdp_mmu_spte_changed")
int tp_spte_changed(void *ctx)
{
	if (tgid_selected())
		count(GMS_CNT_SPTE_CHANGED, 1);
	return 0;
}

SEC("tp/lock/contention_begin")
int tp_lock_begin(struct trace_event_raw_contention_begin *ctx)
{
	struct lock_wait w;
	__u64 id = bpf_get_current_pid_tgid();

	if (!tgid_selected())
		return 0;
	w.ts = bpf_ktime_get_ns();
	w.lock = (__u64)ctx->lock_addr;
	bpf_map_update_elem(&lock_start, &id, &w, BPF_ANY);
	count(GMS_CNT_LOCK_CONTENDED, 1);
	if (bpf_map_lookup_elem(&gmem_locks, &w.lock))
		count(GMS_CNT_GMEM_LOCK_CONTENDED, 1);
	return 0;
}

SEC("tp/lock/contention_end")
int tp_lock_end(struct trace_event_raw_contention_end *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct lock_wait *w = bpf_map_lookup_elem(&lock_start, &id);
	__u64 d;

	if (!w)
		return 0;
	d = bpf_ktime_get_ns() - w->ts;
	count(GMS_CNT_LOCK_WAIT_NS, d);
	if (bpf_map_lookup_elem(&gmem_locks, &w->lock))
		count(GMS_CNT_GMEM_LOCK_WAIT_NS, d);
	bpf_map_delete_elem(&lock_start, &id);
	return 0;
}

/* ==== page cache: folios freed (function probes) ==========================
 * Insertions and deletions are the filemap tracepoints above, one program
 * each: the checkers need nothing else (exact pfn, file, index, order), and
 * a zap of the direct map inside filemap_add_folio() (NO_DIRECT_MAP) is seen
 * by the direct-map points whether it comes before or after the insertion
 * (docs/PROBES.md, "One program per page-cache change").
 *
 * Frees matter only to the direct-map rule "restored before freed", which
 * applies to NO_DIRECT_MAP files: records are sent only for those.
 *
 * filemap_free_folio(mapping, folio): the folio left the page cache and its
 * a_ops->free_folio ran (where the NO_DIRECT_MAP series restores the direct
 * map). On return every page must be back in the direct map. */
SEC("fexit/filemap_free_folio")
int fe_filemap_free(void *ctx)
{
	emit_folio(GMS_EV_FREE_FOLIO, GMS_SRC_FILEMAP_FREE_FOLIO, GMS_F_RETURN, (struct folio *)arg(ctx, 1),
		   (struct address_space *)arg(ctx, 0), 0, GMS_WATCH_NO_DIRECT_MAP);
	return 0;
}

SEC("kprobe/filemap_free_folio")
int BPF_KPROBE(kp_filemap_free, struct address_space *mapping, struct folio *folio)
{
	stash_put(ST_FILEMAP_FREE, (__u64)mapping, (__u64)folio, 0, 0);
	return 0;
}

SEC("kretprobe/filemap_free_folio")
int BPF_KRETPROBE(kr_filemap_free)
{
	struct stash_val v;

	if (stash_take(ST_FILEMAP_FREE, &v))
		emit_folio(GMS_EV_FREE_FOLIO, GMS_SRC_FILEMAP_FREE_FOLIO, GMS_F_RETURN,
			   (struct folio *)v.a[1], (struct address_space *)v.a[0], 0,
			   GMS_WATCH_NO_DIRECT_MAP);
	return 0;
}

/* kvm_gmem_free_folio(folio): folio->mapping is already NULL here, so the
 * inode is unknown; the checker matches the pfn. Emitted for every call
 * once a NO_DIRECT_MAP file is watched, else never (nothing needs it). */
static __always_inline void emit_gmem_free(struct folio *folio)
{
	struct gms_ev_folio *e;

	if (!cfg_ndm_watched)
		return;
	e = reserve(sizeof(*e), GMS_EV_FREE_FOLIO, GMS_SRC_KVM_GMEM_FREE_FOLIO,
		    GMS_F_RETURN | GMS_F_NO_INODE | GMS_F_PTR_PFN);
	if (!e)
		return;
	e->pfn = page_to_pfn(folio);
	e->ino = 0;
	e->dev = 0;
	e->index = 0;
	e->order = folio_order_of(folio, &e->hdr.flags);
	e->ret = 0;
	submit(e);
}

SEC("fexit/kvm_gmem_free_folio")
int fe_gmem_free(void *ctx)
{
	emit_gmem_free((struct folio *)arg(ctx, 0));
	return 0;
}

SEC("kprobe/kvm_gmem_free_folio")
int BPF_KPROBE(kp_gmem_free, struct folio *folio)
{
	stash_put(ST_GMEM_FREE, (__u64)folio, 0, 0, 0);
	return 0;
}

SEC("kretprobe/kvm_gmem_free_folio")
int BPF_KRETPROBE(kr_gmem_free)
{
	struct stash_val v;

	if (stash_take(ST_GMEM_FREE, &v))
		emit_gmem_free((struct folio *)v.a[0]);
	return 0;
}

/* ==== direct map =======================================================
 * set_direct_map_{invalid,default}_noflush(target) and
 * set_direct_map_valid_noflush(target, nr, valid): `target` is a struct page *
 * up to Linux 7.3 and a direct-map address with NO_DIRECT_MAP v12
 * (cfg_dm_addr), where nr also became an unsigned long. */
static __always_inline bool dm_addr(__u32 bit)
{
	return cfg_dm_addr & bit;
}

SEC("fexit/set_direct_map_invalid_noflush")
int fe_dm_invalid(void *ctx)
{
	emit_direct_map(GMS_SRC_SET_DM_INVALID, GMS_F_RETURN, arg(ctx, 0), dm_addr(GMS_DM_ADDR_INVALID), 1,
			(int)ret_of(ctx));
	return 0;
}

SEC("kprobe/set_direct_map_invalid_noflush")
int BPF_KPROBE(kp_dm_invalid, void *target)
{
	emit_direct_map(GMS_SRC_SET_DM_INVALID, 0, (__u64)target, dm_addr(GMS_DM_ADDR_INVALID), 1, 0);
	return 0;
}

SEC("fexit/set_direct_map_default_noflush")
int fe_dm_default(void *ctx)
{
	emit_direct_map(GMS_SRC_SET_DM_DEFAULT, GMS_F_RETURN | GMS_F_VALID, arg(ctx, 0),
			dm_addr(GMS_DM_ADDR_DEFAULT), 1, (int)ret_of(ctx));
	return 0;
}

SEC("kprobe/set_direct_map_default_noflush")
int BPF_KPROBE(kp_dm_default, void *target)
{
	emit_direct_map(GMS_SRC_SET_DM_DEFAULT, GMS_F_VALID, (__u64)target, dm_addr(GMS_DM_ADDR_DEFAULT),
			1, 0);
	return 0;
}

static __always_inline __u64 dm_valid_nr(__u64 raw)
{
	return dm_addr(GMS_DM_ADDR_VALID) ? raw : (__u32)raw; /* unsigned long vs unsigned int */
}

SEC("fexit/set_direct_map_valid_noflush")
int fe_dm_valid(void *ctx)
{
	bool valid = (__u8)arg(ctx, 2);

	emit_direct_map(GMS_SRC_SET_DM_VALID, GMS_F_RETURN | (valid ? GMS_F_VALID : 0), arg(ctx, 0),
			dm_addr(GMS_DM_ADDR_VALID), dm_valid_nr(arg(ctx, 1)), (int)ret_of(ctx));
	return 0;
}

SEC("kprobe/set_direct_map_valid_noflush")
int BPF_KPROBE(kp_dm_valid, void *target, unsigned long nr, bool valid)
{
	emit_direct_map(GMS_SRC_SET_DM_VALID, valid ? GMS_F_VALID : 0, (__u64)target,
			dm_addr(GMS_DM_ADDR_VALID), dm_valid_nr(nr), 0);
	return 0;
}

/* folio_zap_direct_map(folio) -> int and folio_restore_direct_map(folio) ->
 * void (NO_DIRECT_MAP v12; secretmem and guest_memfd use them): folio-granular
 * markers; the page-level change is seen above as well. */
SEC("fexit/folio_zap_direct_map")
int fe_folio_zap(void *ctx)
{
	struct folio *folio = (struct folio *)arg(ctx, 0);

	emit_direct_map(GMS_SRC_FOLIO_ZAP, GMS_F_RETURN, (__u64)folio, false, folio_nr_pages_of(folio),
			(int)ret_of(ctx));
	return 0;
}

SEC("kprobe/folio_zap_direct_map")
int BPF_KPROBE(kp_folio_zap, struct folio *folio)
{
	emit_direct_map(GMS_SRC_FOLIO_ZAP, 0, (__u64)folio, false, folio_nr_pages_of(folio), 0);
	return 0;
}

SEC("fexit/folio_restore_direct_map")
int fe_folio_restore(void *ctx)
{
	struct folio *folio = (struct folio *)arg(ctx, 0);

	emit_direct_map(GMS_SRC_FOLIO_RESTORE, GMS_F_RETURN | GMS_F_VALID, (__u64)folio, false,
			folio_nr_pages_of(folio), 0);
	return 0;
}

SEC("kprobe/folio_restore_direct_map")
int BPF_KPROBE(kp_folio_restore, struct folio *folio)
{
	emit_direct_map(GMS_SRC_FOLIO_RESTORE, GMS_F_VALID, (__u64)folio, false,
			folio_nr_pages_of(folio), 0);
	return 0;
}

/* ==== hand-outs ========================================================= */
/* kvm_gmem_get_pfn(kvm, slot, gfn, kvm_pfn_t *pfn, struct page **page, int *max_order)
 * since 6.13; kvm_gmem_get_pfn(kvm, slot, gfn, kvm_pfn_t *pfn, int *max_order)
 * before (cfg_get_pfn_has_page = 0): the page is then the pfn's. */
static __always_inline void get_pfn_done(__u64 pfnp, __u64 pagep, __s64 ret)
{
	kvm_pfn_t pfn = 0;
	struct page *page = 0;

	if (ret)
		return; /* failed lookups hand nothing out */
	bpf_probe_read_kernel(&pfn, sizeof(pfn), (void *)pfnp);
	if (cfg_get_pfn_has_page)
		bpf_probe_read_kernel(&page, sizeof(page), (void *)pagep);
	else
		page = (struct page *)pfn_to_page_addr(pfn);
	emit_handout(GMS_EV_GET_PFN, GMS_SRC_KVM_GMEM_GET_PFN, GMS_CNT_GET_PFN_JUDGED, page, pfn, ret,
		     true);
}

SEC("fexit/kvm_gmem_get_pfn")
int fe_get_pfn(void *ctx)
{
	int ret = (int)ret_of(ctx);

	if (!ret) {
		struct page *pg;

		if (cfg_get_pfn_has_page) {
			/* *page (struct page **) by a direct load: the pointer at
			 * offset 0 of a list_head view, then typed as the page it is. */
			struct list_head *p = bpf_core_cast((void *)arg(ctx, 4), struct list_head)->next;

			pg = bpf_core_cast(p, struct page);
		} else {
			/* *pfn by a direct load (time64_t tv_sec: the u64 at offset 0
			 * of a timespec64 view), then its struct page. */
			__u64 pfn = bpf_core_cast((void *)arg(ctx, 3), struct timespec64)->tv_sec;

			pg = bpf_core_cast((void *)pfn_to_page_addr(pfn), struct page);
		}
		if (handout_fast(pg, GMS_CNT_GET_PFN_JUDGED))
			return 0;
	}
	get_pfn_done(arg(ctx, 3), cfg_get_pfn_has_page ? arg(ctx, 4) : 0, ret);
	return 0;
}

SEC("kprobe/kvm_gmem_get_pfn")
int BPF_KPROBE(kp_get_pfn, void *kvm, void *slot, gfn_t gfn, kvm_pfn_t *pfn, struct page **page)
{
	stash_put(ST_GET_PFN, (__u64)pfn, cfg_get_pfn_has_page ? (__u64)page : 0, 0, 0);
	return 0;
}

SEC("kretprobe/kvm_gmem_get_pfn")
int BPF_KRETPROBE(kr_get_pfn, int ret)
{
	struct stash_val v;

	if (stash_take(ST_GET_PFN, &v))
		get_pfn_done(v.a[0], v.a[1], ret);
	return 0;
}

/* kvm_gmem_fault_user_mapping(vmf): VM_FAULT_LOCKED (0x200) with vmf->page set. */
static __always_inline void user_fault_done(struct vm_fault *vmf, __s64 ret)
{
	if (ret & ~0x200LL) /* any error bit: nothing handed out */
		return;
	emit_handout(GMS_EV_USER_FAULT, GMS_SRC_KVM_GMEM_FAULT_USER, GMS_CNT_USER_FAULT_JUDGED,
		     BPF_CORE_READ(vmf, page), 0, ret, false);
}

SEC("fexit/kvm_gmem_fault_user_mapping")
int fe_user_fault(void *ctx)
{
	__u32 ret = (__u32)ret_of(ctx);
	struct vm_fault *vmf = bpf_core_cast((void *)arg(ctx, 0), struct vm_fault);

	if (!(ret & ~0x200U) && handout_fast(vmf->page, GMS_CNT_USER_FAULT_JUDGED))
		return 0;
	user_fault_done((struct vm_fault *)arg(ctx, 0), ret);
	return 0;
}

SEC("kprobe/kvm_gmem_fault_user_mapping")
int BPF_KPROBE(kp_user_fault, struct vm_fault *vmf)
{
	stash_put(ST_USER_FAULT, (__u64)vmf, 0, 0, 0);
	return 0;
}

SEC("kretprobe/kvm_gmem_fault_user_mapping")
int BPF_KRETPROBE(kr_user_fault, unsigned int ret)
{
	struct stash_val v;

	if (stash_take(ST_USER_FAULT, &v))
		user_fault_done((struct vm_fault *)v.a[0], ret);
	return 0;
}

/* ==== file operations =================================================== */
static __always_inline void fallocate_done(struct file *file, int mode, __u64 offset, __u64 len,
					   __s64 ret)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	__u16 f = 0;
	__u32 dev = 0;
	__u64 ino = 0;

	if (inode_ident(inode, &dev, &ino) && inode_selected(dev, ino, &f))
		learn_gmem_lock(inode);
	emit_file_op(GMS_EV_FALLOCATE, GMS_SRC_KVM_GMEM_FALLOCATE, inode, mode, offset, len, ret, true);
}

SEC("fexit/kvm_gmem_fallocate")
int fe_fallocate(void *ctx)
{
	fallocate_done((struct file *)arg(ctx, 0), (int)arg(ctx, 1), arg(ctx, 2), arg(ctx, 3), ret_of(ctx));
	return 0;
}

SEC("kprobe/kvm_gmem_fallocate")
int BPF_KPROBE(kp_fallocate, struct file *file, int mode, long long offset, long long len)
{
	stash_put(ST_FALLOCATE, (__u64)file, mode, offset, len);
	return 0;
}

SEC("kretprobe/kvm_gmem_fallocate")
int BPF_KRETPROBE(kr_fallocate, long ret)
{
	struct stash_val v;

	if (stash_take(ST_FALLOCATE, &v))
		fallocate_done((struct file *)v.a[0], v.a[1], v.a[2], v.a[3], ret);
	return 0;
}

/* kvm_gmem_populate(...): returns pages populated or -errno. Its arguments
 * changed across versions (6 in 6.x, 7 in 7.x) and name no file: only the
 * result is recorded. */
SEC("fexit/kvm_gmem_populate")
int fe_populate(void *ctx)
{
	if (tgid_selected())
		emit_file_op(GMS_EV_POPULATE, GMS_SRC_KVM_GMEM_POPULATE, 0, 0, 0, 0, ret_of(ctx), false);
	return 0;
}

SEC("kretprobe/kvm_gmem_populate")
int BPF_KRETPROBE(kr_populate, long ret)
{
	if (tgid_selected())
		emit_file_op(GMS_EV_POPULATE, GMS_SRC_KVM_GMEM_POPULATE, 0, 0, 0, 0, ret, false);
	return 0;
}

/* kvm_gmem_release(inode, file): the guest_memfd file's last reference. */
SEC("fentry/kvm_gmem_release")
int fe_release(void *ctx)
{
	emit_file_op(GMS_EV_RELEASE, GMS_SRC_KVM_GMEM_RELEASE, (struct inode *)arg(ctx, 0), 0, 0, 0, 0, true);
	return 0;
}

SEC("kprobe/kvm_gmem_release")
int BPF_KPROBE(kp_release, struct inode *inode)
{
	emit_file_op(GMS_EV_RELEASE, GMS_SRC_KVM_GMEM_RELEASE, inode, 0, 0, 0, 0, true);
	return 0;
}

/* ==== folio split (target picked at load: __folio_split or
 * split_huge_page_to_list_to_order; first argument is the folio/head page) == */
static __always_inline void split_event(struct folio *folio, __u16 flags, __s64 ret)
{
	emit_folio(GMS_EV_SPLIT, GMS_SRC_FOLIO_SPLIT, flags, folio, 0, ret, 0);
}

SEC("fentry/__folio_split")
int fe_split_enter(void *ctx)
{
	count(GMS_CNT_SPLIT_CALLS, 1);
	split_event((struct folio *)arg(ctx, 0), 0, 0);
	return 0;
}

SEC("fexit/__folio_split")
int fe_split_return(void *ctx)
{
	split_event((struct folio *)arg(ctx, 0), GMS_F_RETURN, (int)ret_of(ctx));
	return 0;
}

SEC("kprobe/__folio_split")
int BPF_KPROBE(kp_split_enter, struct folio *folio)
{
	count(GMS_CNT_SPLIT_CALLS, 1);
	stash_put(ST_SPLIT, (__u64)folio, 0, 0, 0);
	split_event(folio, 0, 0);
	return 0;
}

SEC("kretprobe/__folio_split")
int BPF_KRETPROBE(kr_split_return, int ret)
{
	struct stash_val v;

	if (stash_take(ST_SPLIT, &v))
		split_event((struct folio *)v.a[0], GMS_F_RETURN, ret);
	return 0;
}

/* ==== invalidation balance ==============================================
 * A punch (kvm_gmem_fallocate with PUNCH_HOLE) or release (kvm_gmem_release)
 * of a watched file marks its thread in `gmem_ops` from entry to return; the
 * KVM MMU invalidations that thread makes meanwhile (kvm_mmu_invalidate_start,
 * kvm_mmu_unmap_gfn_range, kvm_mmu_invalidate_end) are recorded with the
 * operation's file, those made inside KVM's MMU notifier (invalidation by
 * host address, of pages host userspace maps) flagged GMS_F_NOTIFIER. Memslot
 * bindings (commit/bind, unbind) say which ranges of which file a kvm maps. */
#define FALLOC_PUNCH_HOLE 0x02

static __always_inline __u32 cur_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

static __always_inline void emit_inval(__u32 kind, __u16 src, __u16 flags, __u64 kvm, __u32 dev,
				       __u64 ino, __u64 start, __u64 end, __u32 op, __s64 ret)
{
	struct gms_ev_inval *e = reserve(sizeof(*e), GMS_EV_INVAL, src, flags);

	if (!e)
		return;
	e->kvm = kvm;
	e->ino = ino;
	e->dev = dev;
	e->tid = cur_tid();
	e->start = start;
	e->end = end;
	e->kind = kind;
	e->op = op;
	e->ret = ret;
	submit(e);
}

static __always_inline void op_enter(__u32 op, __u16 src, struct inode *inode, __u64 kvm,
				     __u64 start, __u64 end)
{
	struct gmem_op o = {};
	__u16 f = 0;
	__u32 tid = cur_tid();

	if (!inode_ident(inode, &o.dev, &o.ino) || !inode_selected(o.dev, o.ino, &f))
		return;
	o.op = op;
	o.kvm = kvm;
	o.start = start;
	o.end = end;
	bpf_map_update_elem(&gmem_ops, &tid, &o, BPF_ANY);
	emit_inval(GMS_INV_OP_BEGIN, src, 0, kvm, o.dev, o.ino, start, end, op, 0);
}

static __always_inline void op_exit(__u16 src, __s64 ret)
{
	__u32 tid = cur_tid();
	struct gmem_op *o = bpf_map_lookup_elem(&gmem_ops, &tid);

	if (!o)
		return;
	emit_inval(GMS_INV_OP_END, src, GMS_F_RETURN, o->kvm, o->dev, o->ino, o->start, o->end,
		   o->op, ret);
	bpf_map_delete_elem(&gmem_ops, &tid);
}

static __always_inline void punch_enter(struct file *file, int mode, __u64 offset, __u64 len)
{
	if (!(mode & FALLOC_PUNCH_HOLE))
		return;
	op_enter(GMS_OP_PUNCH, GMS_SRC_INVAL_PUNCH, BPF_CORE_READ(file, f_inode), 0, offset >> 12,
		 (offset + len) >> 12);
}

/* The gmem_file's kvm: its first member (struct gmem_file, struct kvm_gmem before 6.18). */
static __always_inline __u64 file_kvm(struct file *file)
{
	void *priv = BPF_CORE_READ(file, private_data);
	__u64 kvm = 0;

	if (priv)
		bpf_probe_read_kernel(&kvm, sizeof(kvm), priv);
	return kvm;
}

SEC("fentry/kvm_gmem_fallocate")
int fe_inval_punch_in(void *ctx)
{
	punch_enter((struct file *)arg(ctx, 0), (int)arg(ctx, 1), arg(ctx, 2), arg(ctx, 3));
	return 0;
}

SEC("fexit/kvm_gmem_fallocate")
int fe_inval_punch_out(void *ctx)
{
	op_exit(GMS_SRC_INVAL_PUNCH, ret_of(ctx));
	return 0;
}

SEC("kprobe/kvm_gmem_fallocate")
int BPF_KPROBE(kp_inval_punch, struct file *file, int mode, long long offset, long long len)
{
	punch_enter(file, mode, offset, len);
	return 0;
}

SEC("kretprobe/kvm_gmem_fallocate")
int BPF_KRETPROBE(kr_inval_punch, long ret)
{
	op_exit(GMS_SRC_INVAL_PUNCH, ret);
	return 0;
}

SEC("fentry/kvm_gmem_release")
int fe_inval_release_in(void *ctx)
{
	struct file *file = (struct file *)arg(ctx, 1);

	op_enter(GMS_OP_RELEASE, GMS_SRC_INVAL_RELEASE, (struct inode *)arg(ctx, 0), file_kvm(file), 0,
		 ~0ULL);
	return 0;
}

SEC("fexit/kvm_gmem_release")
int fe_inval_release_out(void *ctx)
{
	op_exit(GMS_SRC_INVAL_RELEASE, ret_of(ctx));
	return 0;
}

SEC("kprobe/kvm_gmem_release")
int BPF_KPROBE(kp_inval_release, struct inode *inode, struct file *file)
{
	op_enter(GMS_OP_RELEASE, GMS_SRC_INVAL_RELEASE, inode, file_kvm(file), 0, ~0ULL);
	return 0;
}

SEC("kretprobe/kvm_gmem_release")
int BPF_KRETPROBE(kr_inval_release, int ret)
{
	op_exit(GMS_SRC_INVAL_RELEASE, ret);
	return 0;
}

/* A memslot's binding: slot->gmem.file's range [pgoff, pgoff + npages). */
static __always_inline void emit_binding(__u32 kind, __u16 src, __u64 kvm,
					 struct kvm_memory_slot *slot, __s64 ret)
{
	struct file *file;
	struct inode *inode;
	__u16 f = 0;
	__u32 dev = 0;
	__u64 ino = 0, pgoff, npages;

	if (!slot || ret)
		return;
	file = BPF_CORE_READ(slot, gmem.file);
	inode = file ? BPF_CORE_READ(file, f_inode) : 0;
	if (!inode_ident(inode, &dev, &ino) || !inode_selected(dev, ino, &f))
		return;
	if (!kvm)
		kvm = file_kvm(file);
	pgoff = BPF_CORE_READ(slot, gmem.pgoff);
	npages = BPF_CORE_READ(slot, npages);
	emit_inval(kind, src, 0, kvm, dev, ino, pgoff, pgoff + npages, GMS_OP_NONE, 0);
}

/* kvm_gmem_commit_memory_region(kvm, slot) (7.x) or kvm_gmem_bind(kvm, slot,
 * fd, offset) (6.8+): the slot is the second argument of both. */
SEC("fexit/kvm_gmem_commit_memory_region")
int fe_inval_bind(void *ctx)
{
	emit_binding(GMS_INV_BIND, GMS_SRC_INVAL_BIND, arg(ctx, 0),
		     (struct kvm_memory_slot *)arg(ctx, 1), (int)ret_of(ctx));
	return 0;
}

SEC("kprobe/kvm_gmem_commit_memory_region")
int BPF_KPROBE(kp_inval_bind, void *kvm, struct kvm_memory_slot *slot)
{
	stash_put(ST_INVAL_BIND, (__u64)kvm, (__u64)slot, 0, 0);
	return 0;
}

SEC("kretprobe/kvm_gmem_commit_memory_region")
int BPF_KRETPROBE(kr_inval_bind, int ret)
{
	struct stash_val v;

	if (stash_take(ST_INVAL_BIND, &v))
		emit_binding(GMS_INV_BIND, GMS_SRC_INVAL_BIND, v.a[0], (struct kvm_memory_slot *)v.a[1],
			     ret);
	return 0;
}

/* kvm_gmem_unbind(slot): slot->gmem.file is NULL when release came first. */
SEC("fentry/kvm_gmem_unbind")
int fe_inval_unbind(void *ctx)
{
	emit_binding(GMS_INV_UNBIND, GMS_SRC_INVAL_UNBIND, 0, (struct kvm_memory_slot *)arg(ctx, 0), 0);
	return 0;
}

SEC("kprobe/kvm_gmem_unbind")
int BPF_KPROBE(kp_inval_unbind, struct kvm_memory_slot *slot)
{
	emit_binding(GMS_INV_UNBIND, GMS_SRC_INVAL_UNBIND, 0, slot, 0);
	return 0;
}

/* The KVM MMU calls, recorded only inside a watched operation. */
static __always_inline void mmu_call(__u32 kind, __u16 src, __u64 kvm, struct kvm_gfn_range *r)
{
	__u32 tid = cur_tid();
	struct gmem_op *o = bpf_map_lookup_elem(&gmem_ops, &tid);
	__u64 start = 0, end = 0;

	if (!o)
		return;
	if (r) {
		struct kvm_memory_slot *slot = BPF_CORE_READ(r, slot);
		__u64 base = BPF_CORE_READ(slot, base_gfn), pgoff = BPF_CORE_READ(slot, gmem.pgoff);

		/* gfns -> file indices of the slot's binding */
		start = BPF_CORE_READ(r, start) - base + pgoff;
		end = BPF_CORE_READ(r, end) - base + pgoff;
	}
	emit_inval(kind, src, o->notifier ? GMS_F_NOTIFIER : 0, kvm, o->dev, o->ino, start, end, o->op,
		   0);
}

SEC("fentry/kvm_mmu_invalidate_start")
int fe_mmu_inval_start(void *ctx)
{
	mmu_call(GMS_INV_MMU_START, GMS_SRC_MMU_INVAL_START, arg(ctx, 0), 0);
	return 0;
}

SEC("kprobe/kvm_mmu_invalidate_start")
int BPF_KPROBE(kp_mmu_inval_start, void *kvm)
{
	mmu_call(GMS_INV_MMU_START, GMS_SRC_MMU_INVAL_START, (__u64)kvm, 0);
	return 0;
}

SEC("fentry/kvm_mmu_invalidate_end")
int fe_mmu_inval_end(void *ctx)
{
	mmu_call(GMS_INV_MMU_END, GMS_SRC_MMU_INVAL_END, arg(ctx, 0), 0);
	return 0;
}

SEC("kprobe/kvm_mmu_invalidate_end")
int BPF_KPROBE(kp_mmu_inval_end, void *kvm)
{
	mmu_call(GMS_INV_MMU_END, GMS_SRC_MMU_INVAL_END, (__u64)kvm, 0);
	return 0;
}

SEC("fentry/kvm_mmu_unmap_gfn_range")
int fe_mmu_unmap(void *ctx)
{
	mmu_call(GMS_INV_UNMAP, GMS_SRC_MMU_UNMAP, arg(ctx, 0), (struct kvm_gfn_range *)arg(ctx, 1));
	return 0;
}

SEC("kprobe/kvm_mmu_unmap_gfn_range")
int BPF_KPROBE(kp_mmu_unmap, void *kvm, struct kvm_gfn_range *range)
{
	mmu_call(GMS_INV_UNMAP, GMS_SRC_MMU_UNMAP, (__u64)kvm, range);
	return 0;
}

/* KVM's MMU notifier (range_start and range_end): its invalidations are by
 * host address; the depth tells them from guest_memfd's own. */
static __always_inline void notifier_depth(int d)
{
	__u32 tid = cur_tid();
	struct gmem_op *o = bpf_map_lookup_elem(&gmem_ops, &tid);

	if (o)
		o->notifier += d;
}

SEC("fentry/kvm_mmu_notifier_invalidate_range_start")
int fe_notifier_start_in(void *ctx)
{
	notifier_depth(1);
	return 0;
}

SEC("fexit/kvm_mmu_notifier_invalidate_range_start")
int fe_notifier_start_out(void *ctx)
{
	notifier_depth(-1);
	return 0;
}

SEC("kprobe/kvm_mmu_notifier_invalidate_range_start")
int BPF_KPROBE(kp_notifier_start_in)
{
	notifier_depth(1);
	return 0;
}

SEC("kretprobe/kvm_mmu_notifier_invalidate_range_start")
int BPF_KRETPROBE(kr_notifier_start_out)
{
	notifier_depth(-1);
	return 0;
}

SEC("fentry/kvm_mmu_notifier_invalidate_range_end")
int fe_notifier_end_in(void *ctx)
{
	notifier_depth(1);
	return 0;
}

SEC("fexit/kvm_mmu_notifier_invalidate_range_end")
int fe_notifier_end_out(void *ctx)
{
	notifier_depth(-1);
	return 0;
}

SEC("kprobe/kvm_mmu_notifier_invalidate_range_end")
int BPF_KPROBE(kp_notifier_end_in)
{
	notifier_depth(1);
	return 0;
}

SEC("kretprobe/kvm_mmu_notifier_invalidate_range_end")
int BPF_KRETPROBE(kr_notifier_end_out)
{
	notifier_depth(-1);
	return 0;
}
