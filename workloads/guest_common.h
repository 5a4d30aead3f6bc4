// Shared pieces of the workloads that run guest code (guest-fault, convert):
// the guest programs (guest_*.S), the guest-physical layout, the data pattern
// the guest and the host both compute, and running vCPU threads with a
// watchdog that kicks a vCPU out of KVM_RUN (SIGUSR1 + immediate_exit) on a
// stop request or when one KVM_RUN takes too long.
//
// Guest model (as in the KVM selftests, minus paging): 32-bit flat protected
// mode (kvm::setup_flat_protected_mode), code copied into an ordinary memslot
// at GPA 0, parameters passed in registers, results reported through OUT to
// I/O ports (KVM_EXIT_IO) and HLT at the end.
#pragma once

#include "workloads/workload.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <pthread.h>
#include <string>
#include <thread>
#include <vector>

namespace gms::workloads::guest {

inline constexpr uint64_t kPage = kvm::kPageSize;
inline constexpr uint32_t kWordsPerPage = kPage / 4;

// ---- guest programs ----------------------------------------------------------

struct Program {
    const uint8_t* begin = nullptr;
    const uint8_t* end = nullptr;
    size_t size() const { return static_cast<size_t>(end - begin); }
};

// guest_pages.S: checks and fills a batch of pages described by PageDesc.
//   In: ESI = GPA of the descriptor table, ECX = number of descriptors.
//   Mismatch: OUT kPortMismatch, EAX = GPA of the first bad word of the page,
//   EBX = expected word, ECX = word read (one report per page). End: HLT.
Program pages_program();

// guest_hypercall.S: one KVM_HC_MAP_GPA_RANGE hypercall.
//   In: EBX = GPA, ECX = pages, EDX = attributes.
//   Out: OUT kPortResult with EAX = the hypercall's return value, then HLT.
enum class CpuVendor { intel, amd, other };
CpuVendor cpu_vendor();
std::string to_string(CpuVendor v);
// VMCALL on Intel, VMMCALL on AMD/Hygon (what each CPU executes natively).
Program hypercall_program(CpuVendor v);

inline constexpr uint16_t kPortMismatch = 0xe1;
inline constexpr uint16_t kPortResult = 0xe2;

struct PageDesc {
    uint32_t gpa;
    uint32_t flags;
    uint32_t expect_key; // with kExpectPattern
    uint32_t write_key;  // with kWrite
};
static_assert(sizeof(PageDesc) == 16, "layout shared with guest_pages.S");
inline constexpr uint32_t kExpectPattern = 1u << 0; // else the page must read zero
inline constexpr uint32_t kWrite = 1u << 1;         // then fill with pattern(write_key)
inline constexpr uint32_t kNoCheck = 1u << 2;       // skip the check (write only)
// Bits 8..11: log2 of the word stride; the guest checks and writes only words
// i with i % (1 << shift) == 0 (instructions are costly where KVM emulates them).
inline constexpr unsigned kStrideShiftBit = 8;
inline constexpr unsigned kMaxStrideShift = 10;
inline uint32_t stride_flags(unsigned shift) {
    return shift << kStrideShiftBit;
}

// ---- data pattern (same formula as guest_pages.S) ---------------------------------

// Word i of pattern(key) = key ^ (i * 0x9e3779b1).
inline uint32_t pattern_word(uint32_t key, uint32_t i) {
    return key ^ (i * 0x9e3779b1u);
}
void fill_page(uint8_t* page, uint32_t key);
// Index of the first word that is not pattern(key) (or zero when !pattern); -1 if none.
long first_bad_word(const uint8_t* page, bool pattern, uint32_t key);
// A page the guest wrote with a word stride: words i % (1 << shift) == 0 hold
// pattern(guest_key) (if guest_key != 0), the others pattern(base_key) (0 = zero).
inline uint32_t mixed_word(uint32_t base_key, uint32_t guest_key, unsigned shift, uint32_t i) {
    uint32_t k = (guest_key && (i & ((1u << shift) - 1)) == 0) ? guest_key : base_key;
    return k ? pattern_word(k, i) : 0u;
}
long first_bad_word_mixed(const uint8_t* page, uint32_t base_key, uint32_t guest_key,
                          unsigned shift);
// A key that depends on every argument and is never 0 (0 would read as "zero page").
uint32_t page_key(uint64_t seed, uint32_t tag, uint64_t a, uint64_t b, uint64_t c);

// ---- guest-physical layout ------------------------------------------------------

// Slot 0 at GPA 0: programs in the first 64 KiB, then per vCPU a descriptor
// table and a stack. Data memslots start at kDataGpa and must end below
// kDataGpaEnd (no paging: the guest addresses 4 GiB at most).
inline constexpr uint32_t kCodeSlot = 0;
inline constexpr uint64_t kProgramArea = 0x10000;
inline constexpr uint64_t kVcpuArea = 0x4000; // 3 pages of descriptors + 1 page of stack
inline constexpr uint32_t kMaxDescs = 3 * kPage / sizeof(PageDesc);
inline constexpr uint64_t kDataGpa = 0x10000000;
inline constexpr uint64_t kDataGpaEnd = 0xf0000000;
inline constexpr uint64_t kMaxDataSize = kDataGpaEnd - kDataGpa;

// A VM whose slot 0 (anonymous memory) holds guest programs and per-vCPU
// areas. Teardown: the Vm (vCPUs, memslots, fd), then the code memory.
class GuestVm {
  public:
    // Throws SysError when KVM refuses (the caller decides whether that is a skip).
    GuestVm(const kvm::Kvm& kvm, unsigned long type, unsigned nvcpus);
    GuestVm(const GuestVm&) = delete;
    GuestVm& operator=(const GuestVm&) = delete;

    kvm::Vm& vm() { return vm_; }
    // Copies a program into the program area; returns its GPA.
    uint64_t load(const Program& p);
    // Creates vCPU `id` (< nvcpus) in flat protected mode.
    kvm::Vcpu& add_vcpu(unsigned id, const kvm::Kvm& kvm);
    PageDesc* descs(unsigned vcpu);
    uint64_t descs_gpa(unsigned vcpu) const { return kProgramArea + vcpu * kVcpuArea; }
    uint64_t stack_top(unsigned vcpu) const { return kProgramArea + (vcpu + 1) * kVcpuArea; }
    static uint64_t code_slot_size(unsigned nvcpus) { return kProgramArea + nvcpus * kVcpuArea; }

    void destroy() {
        vm_.destroy();
        code_.reset();
    }

  private:
    kvm::Mapping code_; // declared first: outlives vm_ on destruction
    kvm::Vm vm_;
    unsigned nvcpus_ = 0;
    uint64_t next_ = 0;
};

// Sets EIP/ESP and the given general registers, clearing the others.
struct GuestCall {
    uint64_t rip = 0, rsp = 0, rax = 0, rbx = 0, rcx = 0, rdx = 0, rsi = 0, rdi = 0;
};
void enter(kvm::Vcpu& v, const GuestCall& c);

// "exit IO port 0x80 ... rip=0x1234 rax=... " with whatever the exit carries
// (suberror, hardware reason, memory fault GPA) and the registers.
std::string describe_exit(kvm::Vcpu& v);

// ---- running vCPUs under a watchdog ---------------------------------------------

// What the supervisor and one vCPU thread share.
struct RunSlot {
    enum Kick : int { none = 0, stop = 1, timeout = 2 };
    std::atomic<bool> active{false};
    std::atomic<uint64_t> run_since_ns{0}; // 0 when not inside KVM_RUN
    std::atomic<int> kick{none};
    std::atomic<kvm_run*> run{nullptr};
    pthread_t thread{};
};

// Runs the vCPU until HLT, a failure or a kick. `on_exit` handles exits other
// than HLT: it returns "" to re-enter, or a failure text. Exits it does not
// know it leaves to the caller by returning describe_exit(). Each KVM_RUN is
// recorded in `kvm_run_stats`.
struct RunResult {
    enum Kind { halted, stopped, failed } kind = halted;
    std::string failure;
};
RunResult run_vcpu(kvm::Vcpu& v, RunSlot& slot, report::OpStats& kvm_run_stats,
                   const std::function<std::string(kvm::Vcpu&, kvm_run&)>& on_exit,
                   double run_timeout_s);

// A group of vCPU threads and their supervisor. supervise() runs on the
// calling thread until every thread ended: once `should_stop` has held for
// `stop_grace_s` (time for the current guest batch to end cleanly), or a
// KVM_RUN has lasted `run_timeout_s`, it kicks that thread, repeatedly until
// the thread leaves KVM_RUN. The destructor kicks and joins whatever is left,
// so an exception cannot leave a thread inside KVM_RUN.
class VcpuThreads {
  public:
    VcpuThreads(double run_timeout_s, double stop_grace_s);
    ~VcpuThreads();
    VcpuThreads(const VcpuThreads&) = delete;
    VcpuThreads& operator=(const VcpuThreads&) = delete;

    // body must set slot.run (via run_vcpu) and must not throw.
    void spawn(std::function<void(RunSlot&)> body);
    void supervise(const std::function<bool()>& should_stop);
    double run_timeout_s() const { return run_timeout_s_; }

  private:
    void kick(RunSlot& s, int why);
    void stop_all();
    double run_timeout_s_, stop_grace_s_;
    std::vector<std::unique_ptr<RunSlot>> slots_;
    std::vector<std::thread> threads_;
};

// SIGUSR1 must interrupt KVM_RUN, not kill the process: installs a no-op
// handler (no SA_RESTART) if SIGUSR1 still has its default disposition.
void ensure_kick_handler();

// ---- test hooks -------------------------------------------------------------------

// Tests only: lets a test corrupt memory at a precise moment to prove the
// checks catch it. `region` is the vCPU's part of the guest_memfd mapping.
struct GuestFaultHooks {
    // After the host pre-filled a batch, before the guest checks it.
    std::function<void(unsigned vm, unsigned vcpu, uint64_t round, uint8_t* region,
                       const std::vector<uint64_t>& batch_pages)>
        before_guest_run;
    // After the guest HLTed, before the host verifies what it wrote.
    std::function<void(unsigned vm, unsigned vcpu, uint64_t round, uint8_t* region,
                       const std::vector<uint64_t>& batch_pages)>
        before_host_verify;
    // After fallocate(PUNCH_HOLE) of `punched` returned, before the guest reads them.
    std::function<void(unsigned vm, unsigned vcpu, uint64_t round, uint8_t* region,
                       const std::vector<uint64_t>& punched)>
        after_punch;
};
void set_guest_fault_hooks(GuestFaultHooks h);
const GuestFaultHooks& guest_fault_hooks();

} // namespace gms::workloads::guest
