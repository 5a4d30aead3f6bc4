/*
 * Minimal C baseline for the host-fault benchmark: the same work as
 * gmemstress's host-fault workload (pattern = random, write_ratio = 0.5,
 * zap = true), without the tool around it: no latency histograms, no SIGBUS
 * guard, no progress, no report.
 *
 * Each thread owns a disjoint slice of one MMAP|INIT_SHARED guest_memfd. A
 * touch picks a random page of the slice; a write exchanges the first word
 * (the fault), checks the rest of the page against what it last held and
 * refills it with a new generation; a read loads one word (the fault) and
 * checks the whole page. After every pass over the slice the thread zaps
 * its PTEs (MADV_DONTNEED) so the next pass faults again.
 *
 * Usage: baseline_host_fault SIZE_MIB THREADS SECONDS
 * Prints: {"touches": N, "seconds": S, "mismatches": M}
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Upstream include/uapi/linux/kvm.h (the system header predates guest_memfd). */
struct gmem_create {
    uint64_t size, flags, reserved[6];
};
#define GMEM_CREATE _IOWR(KVMIO, 0xd4, struct gmem_create)
#define GMEM_FLAG_MMAP (1ull << 0)
#define GMEM_FLAG_INIT_SHARED (1ull << 1)

#define PAGE 4096u
#define WORDS (PAGE / 8)

static uint8_t* base;
static uint64_t pages_per_thread;
static double seconds;
static uint64_t seed = 1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t page_key(uint64_t off, uint32_t gen) {
    return mix(seed ^ mix(off) ^ ((uint64_t)gen * 0x9e3779b97f4a7c15ull));
}
static uint64_t word_of(uint64_t key, unsigned i) {
    uint64_t w = key + (uint64_t)i * 0xd1b54a32d192ed03ull;
    w ^= w >> 29;
    return w ? w : 1;
}
/* 0 if the page holds generation gen (0 = zeros) from word `first` on. */
static int check_page(const volatile uint64_t* w, uint64_t off, uint32_t gen, unsigned first) {
    if (!gen) {
        uint64_t acc = 0;
        for (unsigned i = first; i < WORDS; ++i)
            acc |= w[i];
        return acc != 0;
    }
    uint64_t key = page_key(off, gen);
    for (unsigned i = first; i < WORDS; ++i)
        if (w[i] != word_of(key, i))
            return 1;
    return 0;
}
static void fill_page(volatile uint64_t* w, uint64_t off, uint32_t gen, unsigned first) {
    uint64_t key = page_key(off, gen);
    for (unsigned i = first; i < WORDS; ++i)
        w[i] = word_of(key, i);
}

struct worker {
    unsigned id;
    uint64_t touches, mismatches;
};

static void* run(void* arg) {
    struct worker* wk = arg;
    uint64_t first = wk->id * pages_per_thread, n = pages_per_thread;
    uint32_t* gen = calloc(n, sizeof *gen); /* 0 = zeros, else data generation */
    uint64_t rng = mix(seed + wk->id + 1);
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    for (;;) {
        for (uint64_t k = 0; k < n; ++k) {
            if ((k & 15) == 0 && now_ns() >= deadline)
                goto out;
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            uint64_t pg = (uint64_t)(((unsigned __int128)rng * n) >> 64);
            int write = (mix(rng) >> 63) != 0;
            uint64_t off = (first + pg) * PAGE;
            volatile uint64_t* w = (volatile uint64_t*)(base + off);
            uint32_t g = gen[pg];
            if (write) {
                uint32_t ng = g < 2 ? 2 : g + 1;
                uint64_t old = __atomic_exchange_n((uint64_t*)w, word_of(page_key(off, ng), 0),
                                                   __ATOMIC_RELAXED);
                wk->mismatches += old != (g ? word_of(page_key(off, g), 0) : 0);
                wk->mismatches += check_page(w, off, g, 1);
                fill_page(w, off, ng, 1);
                gen[pg] = ng;
            } else {
                (void)w[0];
                wk->mismatches += check_page(w, off, g, 0);
            }
            ++wk->touches;
        }
        madvise(base + first * PAGE, n * PAGE, MADV_DONTNEED);
    }
out:
    free(gen);
    return NULL;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SIZE_MIB THREADS SECONDS\n", argv[0]);
        return 2;
    }
    uint64_t size = strtoull(argv[1], NULL, 10) << 20;
    unsigned threads = (unsigned)atoi(argv[2]);
    seconds = atof(argv[3]);
    if (!size || !threads || threads > 256 || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = kvm < 0 ? -1 : ioctl(kvm, KVM_CREATE_VM, 0);
    struct gmem_create gc = {.size = size, .flags = GMEM_FLAG_MMAP | GMEM_FLAG_INIT_SHARED};
    int gmem = vm < 0 ? -1 : ioctl(vm, GMEM_CREATE, &gc);
    if (gmem < 0) {
        perror("guest_memfd");
        return 3;
    }
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 3;
    }
    pages_per_thread = size / PAGE / threads;
    pthread_t tid[256];
    struct worker wk[256];
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < threads; ++i) {
        wk[i] = (struct worker){.id = i};
        pthread_create(&tid[i], NULL, run, &wk[i]);
    }
    uint64_t touches = 0, mismatches = 0;
    for (unsigned i = 0; i < threads; ++i) {
        pthread_join(tid[i], NULL);
        touches += wk[i].touches;
        mismatches += wk[i].mismatches;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("{\"touches\": %llu, \"seconds\": %.6f, \"mismatches\": %llu}\n", (unsigned long long)touches,
           secs, (unsigned long long)mismatches);
    munmap(base, size);
    close(gmem);
    close(vm);
    close(kvm);
    return mismatches ? 1 : 0;
}
