// SPDX-License-Identifier: GPL-2.0
/* gmemstress: the reference counts of folios that left a watched guest_memfd
 * and were not freed (the folio_release leak detector's evidence), for
 * kernels without /proc/kpagecount (CONFIG_PROC_PAGE_MONITOR). Run on demand
 * (BPF_PROG_TEST_RUN of a raw tracepoint program, never attached) over the
 * `departed` map of gmem.bpf.c, whose fd this object reuses. */
#include "vmlinux_min.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "../events.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64); /* pfn */
	__type(value, struct gms_departed);
} departed SEC(".maps");

extern const void vmemmap_base __ksym __weak;
/* The vmemmap base gmem.bpf.c used (0: read it here). */
volatile __u64 cfg_vmemmap_base = 0;
__u64 counted = 0;

static long read_one(void *map, const __u64 *pfn, struct gms_departed *v, void *ctx)
{
	__u64 base = *(__u64 *)ctx;
	int count = 0;
	const void *page = (const void *)(base + *pfn * bpf_core_type_size(struct page));

	if (bpf_probe_read_kernel(&count, sizeof(count),
				  page + bpf_core_field_offset(struct page, _refcount)))
		v->refcount = -14; /* -EFAULT */
	else
		v->refcount = count;
	counted++;
	return 0;
}

SEC("raw_tp")
int read_refcounts(void *ctx)
{
	__u64 base = cfg_vmemmap_base;

	if (!base && bpf_ksym_exists(&vmemmap_base))
		bpf_probe_read_kernel(&base, sizeof(base), &vmemmap_base);
	if (!base)
		base = 0xffffea0000000000ULL; /* __VMEMMAP_BASE_L4 without KASLR */
	bpf_for_each_map_elem(&departed, read_one, &base, 0);
	return 0;
}
