/* Minimal hand-written kernel types for the gmemstress BPF programs.
 *
 * Deliberately NOT generated from the build machine's /sys/kernel/btf/vmlinux:
 * the build must not depend on the kernel it runs on. Every struct below is
 * marked preserve_access_index, so each field access is a CO-RE relocation
 * that libbpf resolves at load time against the RUNNING kernel's BTF (field
 * names are matched through anonymous unions/structs; offsets come from the
 * target). Only the fields the programs touch are declared.
 */
#ifndef GMS_VMLINUX_MIN_H
#define GMS_VMLINUX_MIN_H
/* Tells bpf_tracing.h to use the kernel's pt_regs field names (di, si, ...). */
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0
typedef __u32 dev_t;
typedef unsigned long pgoff_t;
typedef unsigned int vm_fault_t;
typedef unsigned long long kvm_pfn_t;
typedef unsigned long long gfn_t;

/* UAPI constants used by the BTF-defined maps (stable ABI values). */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};
/* bpf_ringbuf_submit() flags and bpf_ringbuf_query() selectors (UAPI). */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* x86-64 kprobe context: the kernel's struct pt_regs (an ABI for kprobes). */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
};

/* ---- CO-RE relocated kernel types ------------------------------------ */
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct rw_semaphore {
	long count; /* only its address is used */
};

/* CONFIG_DEBUG_LOCK_ALLOC only (checked with bpf_core_field_exists). */
struct lock_class {
	int name_version;
};

struct lockdep_map {
	struct lock_class *class_cache[2];
};

struct rw_semaphore___dbg {
	struct lockdep_map dep_map;
};

struct super_block {
	dev_t s_dev;
	unsigned long s_magic;
};

struct address_space;

struct inode {
	struct super_block *i_sb;
	struct address_space *i_mapping;
	unsigned long i_ino;
};

struct address_space {
	struct inode *host;
	struct rw_semaphore invalidate_lock;
};

/* flags is the first word of struct page in every kernel (a plain unsigned
 * long before 6.18, memdesc_flags_t after): read it raw, at offset 0. */
struct gms_atomic {
	int counter;
};

struct page {
	struct address_space *mapping;
	unsigned long compound_head; /* bit 0 set: tail page, head = value - 1 */
	struct gms_atomic _refcount;
};

/* 7.x: compound_head became compound_info (a head pointer + 1, or a mask
 * that turns a tail page's address into its head's, when bit 0 is set). */
struct page___ci {
	unsigned long compound_info;
};

/* Views used by bpf_core_cast() to load a word with the type the program
 * needs (see compound_word() and fe_get_pfn() in gmem.bpf.c). Both exist in
 * every kernel's BTF. */
struct timespec64 {
	long long tv_sec;
	long tv_nsec;
};

struct list_head {
	struct list_head *next;
	struct list_head *prev;
};

struct folio {
	struct address_space *mapping;
	unsigned long index;
	unsigned long _flags_1; /* low byte: order of a large folio (5.18+) */
};

/* Kernels before 6.6 kept the order in its own byte. */
struct folio___old {
	unsigned char _folio_order;
};

struct file {
	struct inode *f_inode;
	void *private_data; /* guest_memfd: struct gmem_file (kvm first) */
	struct address_space *f_mapping;
};

/* KVM (include/linux/kvm_host.h); gmem since 6.8. */
struct kvm_memory_slot {
	gfn_t base_gfn;
	unsigned long npages;
	struct {
		struct file *file;
		pgoff_t pgoff;
	} gmem;
};

struct kvm_gfn_range {
	struct kvm_memory_slot *slot;
	gfn_t start;
	gfn_t end;
};

struct vm_area_struct {
	struct file *vm_file;
};

struct vm_fault {
	struct vm_area_struct *vma;
	unsigned long pgoff;
	struct page *page;
};

enum pageflags {
	PG_locked = 0,
	PG_uptodate = 3,
	PG_head = 6,
};

/* Tracepoint records (the kernel's trace_event_raw_<class>). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_mm_filemap_op_page_cache {
	struct trace_entry ent;
	unsigned long pfn;
	unsigned long i_ino;
	unsigned long index;
	dev_t s_dev;
	unsigned char order; /* 6.7+; older kernels: order 0 */
};

struct trace_event_raw_mm_page_free {
	struct trace_entry ent;
	unsigned long pfn;
	unsigned int order;
};

struct trace_event_raw_contention_begin {
	struct trace_entry ent;
	void *lock_addr;
	unsigned int flags;
};

struct trace_event_raw_contention_end {
	struct trace_entry ent;
	void *lock_addr;
	int ret;
};

#pragma clang attribute pop

#endif /* GMS_VMLINUX_MIN_H */
