// SPDX-License-Identifier: GPL-2.0
/* Trivial programs that `gmemstress caps` loads and attaches, one at a time,
 * to learn which attach methods this kernel allows (lockdown refuses fentry
 * at load and kprobes at attach, for instance). They only count hits. */
#include "vmlinux_min.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

__u64 hits = 0;

SEC("fentry/vfs_read")
int BPF_PROG(detect_fentry)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fexit/vfs_read")
int BPF_PROG(detect_fexit)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("kprobe/vfs_read")
int BPF_KPROBE(detect_kprobe)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("kretprobe/vfs_read")
int BPF_KRETPROBE(detect_kretprobe)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("tp/filemap/mm_filemap_add_to_page_cache")
int detect_tracepoint(void *ctx)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}
