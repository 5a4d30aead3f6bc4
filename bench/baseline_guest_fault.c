/*
 * Minimal C baseline for the guest-fault benchmark: the same work as
 * gmemstress's guest-fault workload with one VM and one vCPU (batch_pages =
 * 64, prefill_percent = 25, write_percent = 90, guest_stride = 64, seed = 1),
 * without the tool around it: no vCPU thread and watchdog, no latency
 * histograms, no mismatch texts, no progress, no report.
 *
 * Layout (as workloads/guest_common.h): slot 0 at GPA 0 is anonymous memory
 * holding the guest program (workloads/guest_pages.S, assembled into this
 * binary), the descriptor table at 0x10000 and the stack below 0x14000; slot
 * 1 at GPA 0x10000000 is a MMAP|INIT_SHARED guest_memfd whose own mapping is
 * the memslot's userspace_addr. The vCPU runs in 32-bit flat protected mode.
 *
 * A round, for the next 64 pages of the guest_memfd (cyclically): the host
 * pre-fills 25% of them with a pattern through the mapping and writes one
 * descriptor per page (expect the host pattern, the guest's earlier pattern
 * or zero; write a new pattern on 90% of them; every 64th word); KVM_RUN
 * until HLT (OUT 0xe1 = a mismatch the guest saw: count it, re-enter); then
 * the host checks every word of every page of the batch through the mapping.
 * The random choices and pattern keys are gmemstress's (same RNG, same
 * derivation), so both sides do the very same page operations.
 *
 * "pages" counts the pages of completed guest batches, as gmemstress's
 * guest_round op does (its bytes / 4096). "seconds" spans setup to teardown,
 * as gmemstress's workload duration does.
 *
 * Usage: baseline_guest_fault SIZE_MIB SECONDS [MAX_PAGES]
 * Prints: {"pages": N, "seconds": S, "mismatches": M, "rounds": R, "prefilled": P}
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Upstream include/uapi/linux/kvm.h (older system headers lack guest_memfd). */
struct gmem_create {
    uint64_t size, flags, reserved[6];
};
struct gmem_region2 { /* struct kvm_userspace_memory_region2 */
    uint32_t slot, flags;
    uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
    uint32_t guest_memfd, pad1;
    uint64_t pad2[14];
};
#define GMEM_CREATE _IOWR(KVMIO, 0xd4, struct gmem_create)
#define SET_REGION2 _IOW(KVMIO, 0x49, struct gmem_region2)
#define MEM_GUEST_MEMFD (1u << 2)
#define GMEM_FLAG_MMAP (1ull << 0)
#define GMEM_FLAG_INIT_SHARED (1ull << 1)

/* workloads/guest_common.h */
#define PAGE 4096u
#define WORDS (PAGE / 4)
#define PROGRAM_AREA 0x10000u
#define VCPU_AREA 0x4000u
#define DATA_GPA 0x10000000u
#define PORT_MISMATCH 0xe1
#define EXPECT_PATTERN (1u << 0)
#define WRITE (1u << 1)
#define STRIDE_SHIFT_BIT 8
#define TAG_HOST 1
#define TAG_GUEST 2

/* workloads/guest_fault.cpp defaults */
#define BATCH 64
#define PREFILL_PCT 25
#define WRITE_PCT 90
#define STRIDE_SHIFT 6
#define SEED 1

extern const uint8_t gms_guest_pages_start[], gms_guest_pages_end[];

struct desc {
    uint32_t gpa, flags, expect_key, write_key;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* core/util.cpp: splitmix64, xoshiro256**, Rng::derive. */
static uint64_t splitmix64(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}
static uint64_t derive(uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    return splitmix64(&x);
}
static uint64_t rs[4];
static void rng_init(uint64_t seed) {
    for (int i = 0; i < 4; ++i)
        rs[i] = splitmix64(&seed);
}
static uint64_t rng_below(uint64_t n) {
    uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
    rs[2] ^= rs[0], rs[3] ^= rs[1], rs[1] ^= rs[2], rs[0] ^= rs[3], rs[2] ^= t;
    rs[3] = rotl(rs[3], 45);
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/* workloads/guest_common.{h,cpp}: keys and the pattern guest_pages.S computes. */
static uint64_t wseed; /* the workload's seed: derive(profile seed, workload index 0) */
static uint32_t page_key(uint32_t tag, uint64_t c) {
    uint64_t x = derive(derive(derive(derive(wseed, tag), 0), 0), c); /* VM 0, vCPU 0 */
    uint32_t k = (uint32_t)(x ^ (x >> 32));
    return k ? k : 0x5a5a5a5au;
}
static uint32_t mixed_word(uint32_t base, uint32_t guest, uint32_t i) {
    uint32_t k = (guest && (i & ((1u << STRIDE_SHIFT) - 1)) == 0) ? guest : base;
    return k ? k ^ (i * 0x9e3779b1u) : 0u;
}
static void fill_page(uint8_t* page, uint32_t key) {
    uint32_t* w = (uint32_t*)page;
    for (uint32_t i = 0; i < WORDS; ++i)
        w[i] = key ^ (i * 0x9e3779b1u);
}
static int page_bad(const uint8_t* page, uint32_t base, uint32_t guest) {
    const volatile uint32_t* w = (const volatile uint32_t*)page;
    for (uint32_t i = 0; i < WORDS; ++i)
        if (w[i] != mixed_word(base, guest, i))
            return 1;
    return 0;
}

static void die(const char* what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(3);
}

int main(int argc, char** argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s SIZE_MIB SECONDS [MAX_PAGES]\n", argv[0]);
        return 2;
    }
    uint64_t size = strtoull(argv[1], NULL, 10) << 20;
    double seconds = atof(argv[2]);
    uint64_t max_pages = argc == 4 ? strtoull(argv[3], NULL, 10) : 0;
    if (!size || size > 0xe0000000ull || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    uint64_t npages = size / PAGE;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(seconds * 1e9);

    /* Setup: VM, code slot, guest_memfd slot, vCPU in flat protected mode. */
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    size_t code_size = PROGRAM_AREA + VCPU_AREA;
    uint8_t* code =
        mmap(NULL, code_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED)
        die("mmap code");
    struct gmem_region2 slot0 = {
        .slot = 0, .memory_size = code_size, .userspace_addr = (uintptr_t)code};
    if (ioctl(vm, SET_REGION2, &slot0))
        die("KVM_SET_USER_MEMORY_REGION2 slot 0");
    memcpy(code, gms_guest_pages_start, (size_t)(gms_guest_pages_end - gms_guest_pages_start));
    struct desc* descs = (struct desc*)(code + PROGRAM_AREA);

    struct gmem_create gc = {.size = size, .flags = GMEM_FLAG_MMAP | GMEM_FLAG_INIT_SHARED};
    int gmem = ioctl(vm, GMEM_CREATE, &gc);
    if (gmem < 0)
        die("KVM_CREATE_GUEST_MEMFD");
    uint8_t* data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
    if (data == MAP_FAILED)
        die("mmap guest_memfd");
    struct gmem_region2 slot1 = {.slot = 1,
                                 .flags = MEM_GUEST_MEMFD,
                                 .guest_phys_addr = DATA_GPA,
                                 .memory_size = size,
                                 .userspace_addr = (uintptr_t)data,
                                 .guest_memfd = (uint32_t)gmem};
    void* fallback = MAP_FAILED;
    if (ioctl(vm, SET_REGION2, &slot1)) { /* as gmemstress: older kernels want anonymous memory */
        fallback = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fallback == MAP_FAILED)
            die("mmap fallback");
        slot1.userspace_addr = (uintptr_t)fallback;
        if (ioctl(vm, SET_REGION2, &slot1))
            die("KVM_SET_USER_MEMORY_REGION2 slot 1");
    }

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vcpu < 0 || run_size <= 0)
        die("KVM_CREATE_VCPU");
    struct kvm_run* run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    struct kvm_sregs sr;
    if (ioctl(vcpu, KVM_GET_SREGS, &sr))
        die("KVM_GET_SREGS");
    struct kvm_segment seg = {.limit = 0xffffffff, .present = 1, .db = 1, .s = 1, .g = 1};
    seg.type = 0xb, seg.selector = 0x8;
    sr.cs = seg;
    seg.type = 0x3, seg.selector = 0x10;
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss = seg;
    sr.cr0 |= 1, sr.cr4 = 0, sr.efer = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sr))
        die("KVM_SET_SREGS");

    /* What each page holds: last host pre-fill key (0 = zero), guest key since (0 = none). */
    uint32_t* base = calloc(npages, sizeof *base);
    uint32_t* guest = calloc(npages, sizeof *guest);
    uint64_t pg_of[BATCH];
    uint64_t pages = 0, rounds = 0, prefilled = 0, mismatches = 0, cursor = 0;
    wseed = derive(SEED, 0);
    rng_init(derive(wseed, 0)); /* stream (VM 0 << 32 | vCPU 0) */

    while (now_ns() < deadline && (!max_pages || pages < max_pages)) {
        uint64_t n = BATCH < npages ? BATCH : npages;
        if (max_pages && n > max_pages - pages)
            n = max_pages - pages;
        for (uint64_t k = 0; k < n; ++k) {
            uint64_t pg = (cursor + k) % npages;
            pg_of[k] = pg;
            struct desc d = {.gpa = (uint32_t)(DATA_GPA + pg * PAGE)};
            if (rng_below(100) < PREFILL_PCT) {
                uint32_t key = page_key(TAG_HOST, rounds << 32 | pg);
                fill_page(data + pg * PAGE, key);
                base[pg] = key, guest[pg] = 0;
                ++prefilled;
            }
            d.flags = STRIDE_SHIFT << STRIDE_SHIFT_BIT;
            if ((d.expect_key = guest[pg] ? guest[pg] : base[pg]))
                d.flags |= EXPECT_PATTERN;
            if (rng_below(100) < WRITE_PCT) {
                d.flags |= WRITE;
                d.write_key = page_key(TAG_GUEST, rounds << 32 | pg);
            }
            descs[k] = d;
        }

        struct kvm_regs r = {
            .rflags = 2, .rsp = PROGRAM_AREA + VCPU_AREA, .rcx = n, .rsi = PROGRAM_AREA};
        if (ioctl(vcpu, KVM_SET_REGS, &r))
            die("KVM_SET_REGS");
        for (;;) {
            if (ioctl(vcpu, KVM_RUN, 0)) {
                if (errno == EINTR)
                    continue;
                die("KVM_RUN");
            }
            if (run->exit_reason == KVM_EXIT_HLT)
                break;
            if (run->exit_reason == KVM_EXIT_INTR)
                continue;
            if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT_MISMATCH) {
                ++mismatches;
                continue;
            }
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 3;
        }
        pages += n;

        for (uint64_t k = 0; k < n; ++k) {
            uint64_t pg = pg_of[k];
            if (descs[k].flags & WRITE)
                guest[pg] = descs[k].write_key;
            mismatches += page_bad(data + pg * PAGE, base[pg], guest[pg]);
        }
        cursor = (cursor + n) % npages;
        ++rounds;
    }

    /* Teardown, inside the timed span as in gmemstress. */
    munmap(run, (size_t)run_size);
    close(vcpu);
    close(vm);
    munmap(code, code_size);
    munmap(data, size);
    if (fallback != MAP_FAILED)
        munmap(fallback, size);
    close(gmem);
    close(kvm);
    double secs = (double)(now_ns() - t0) / 1e9;
    free(base);
    free(guest);
    printf("{\"pages\": %llu, \"seconds\": %.6f, \"mismatches\": %llu, \"rounds\": %llu, "
           "\"prefilled\": %llu}\n",
           (unsigned long long)pages, secs, (unsigned long long)mismatches,
           (unsigned long long)rounds, (unsigned long long)prefilled);
    return mismatches ? 1 : 0;
}
