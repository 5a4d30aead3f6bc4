#include "kvm/kvm.h"

#include "core/call_scope.h"
#include "core/error.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

namespace gms::kvm {

namespace {

int errno_of(int rc) {
    return rc < 0 ? errno : 0;
}

// The ioctl argument for a memslot; size 0 deletes it.
uapi::kvm_userspace_memory_region2 region_of(const Memslot& m) {
    uapi::kvm_userspace_memory_region2 r{};
    r.slot = m.slot;
    r.flags = m.flags;
    r.guest_phys_addr = m.gpa;
    r.memory_size = m.size;
    r.userspace_addr = m.userspace_addr;
    r.guest_memfd = static_cast<uint32_t>(m.gmem_fd);
    r.guest_memfd_offset = m.gmem_offset;
    return r;
}

// What deletes the memslot `m`: the same slot with memory_size 0.
Memslot deleted(Memslot m) {
    m.size = 0;
    return m;
}

// What the watchdog shows of each blocking call (core/call_scope.h).
const CallOp kOpFallocate{"fallocate", "guest_memfd fd={fd} mode={2:x} offset={0:x} len={1:x}"};
const CallOp kOpAllocate{"fallocate(KEEP_SIZE)", "guest_memfd fd={fd} offset={0:x} len={1:x}"};
const CallOp kOpPunch{"fallocate(PUNCH_HOLE)", "guest_memfd fd={fd} offset={0:x} len={1:x}"};
const CallOp kOpPwrite{"pwrite", "guest_memfd fd={fd} offset={1:x} len={0:x}"};
const CallOp kOpClose{"close(guest_memfd)", "fd={fd} size={0:x}"};
const CallOp kOpMunmap{"munmap", "addr={0:x} len={1:x}"};
// args[0] is the vCPU's kvm_run, which the watchdog reads while pinned.
const CallOp kOpRun{"KVM_RUN", "vcpu{1} fd={fd}", true};
const CallOp kOpPreFault{"KVM_PRE_FAULT_MEMORY", "vcpu{2} gpa={0:x} size={1:x}"};
const CallOp kOpCreateVm{"KVM_CREATE_VM", "type={0}"};
const CallOp kOpCreateGmem{"KVM_CREATE_GUEST_MEMFD", "vm fd={fd} size={0:x} flags={1:x}"};
const CallOp kOpSetRegion{"KVM_SET_USER_MEMORY_REGION2",
                          "vm fd={fd} slot={0} size={1:x} guest_memfd={2}"};
const CallOp kOpSetAttrs{"KVM_SET_MEMORY_ATTRIBUTES", "vm fd={fd} gpa={0:x} size={1:x} "
                                                      "attributes={2:x}"};
const CallOp kOpDestroyVm{"close(VM)", "vm fd={fd}"};

} // namespace

// ---- Mapping -------------------------------------------------------------

int Mapping::try_map(Mapping& out, int fd, size_t size, int prot, int flags, off_t offset) {
    void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (p == MAP_FAILED)
        return errno;
    out.reset();
    out.addr_ = p;
    out.size_ = size;
    return 0;
}

Mapping Mapping::map(int fd, size_t size, int prot, int flags, off_t offset) {
    Mapping m;
    if (int e = try_map(m, fd, size, prot, flags, offset))
        throw SysError("mmap",
                       fmt::format("fd={}, size={:#x}, prot={:#x}, flags={:#x}, offset={:#x}", fd,
                                   size, prot, flags, offset),
                       e);
    return m;
}

Mapping Mapping::anonymous(size_t size) {
    return map(-1, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
}

Mapping::Mapping(Mapping&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
    if (this != &o) {
        reset();
        addr_ = std::exchange(o.addr_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

Mapping::~Mapping() {
    reset();
}

void Mapping::reset() {
    if (addr_) {
        CallScope scope(kOpMunmap, -1, reinterpret_cast<uint64_t>(addr_), size_);
        ::munmap(addr_, size_);
    }
    addr_ = nullptr;
    size_ = 0;
}

// ---- GuestMemfd ----------------------------------------------------------

GuestMemfd::GuestMemfd(UniqueFd fd, uint64_t size, uint64_t flags)
    : fd_(std::move(fd)), size_(size), flags_(flags) {
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0)
        inode_ = InodeId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

GuestMemfd::~GuestMemfd() {
    close();
}

void GuestMemfd::close() {
    if (!fd_.valid())
        return;
    // The last close releases the file: kvm_gmem_release() takes invalidate_lock.
    CallScope scope(kOpClose, fd_.get(), size_);
    fd_.reset();
}

int GuestMemfd::try_fallocate(int mode, uint64_t offset, uint64_t len) {
    const CallOp& op = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ? kOpPunch
                       : mode == FALLOC_FL_KEEP_SIZE                        ? kOpAllocate
                                                                            : kOpFallocate;
    CallScope scope(op, fd_.get(), offset, len, uint64_t(mode));
    return errno_of(
        ::fallocate(fd_.get(), mode, static_cast<off_t>(offset), static_cast<off_t>(len)));
}

// guest_memfd's size is fixed at creation: allocation must say KEEP_SIZE
// (mode 0 is EOPNOTSUPP upstream).
int GuestMemfd::try_allocate(uint64_t offset, uint64_t len) {
    return try_fallocate(FALLOC_FL_KEEP_SIZE, offset, len);
}

int GuestMemfd::try_punch_hole(uint64_t offset, uint64_t len) {
    return try_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
}

void GuestMemfd::punch_hole(uint64_t offset, uint64_t len) {
    if (int e = try_punch_hole(offset, len))
        throw SysError(
            "fallocate",
            fmt::format("guest_memfd={}, mode=PUNCH_HOLE|KEEP_SIZE, offset={:#x}, len={:#x}",
                        fd_.get(), offset, len),
            e);
}

ssize_t GuestMemfd::try_pwrite(const void* buf, size_t len, uint64_t offset) {
    CallScope scope(kOpPwrite, fd_.get(), len, offset);
    ssize_t n = ::pwrite(fd_.get(), buf, len, static_cast<off_t>(offset));
    return n < 0 ? -errno : n;
}

Mapping GuestMemfd::map_shared(int prot) const {
    return Mapping::map(fd_.get(), size_, prot, MAP_SHARED);
}

// ---- Kvm -----------------------------------------------------------------

std::string device_path() {
    const char* env = std::getenv("GMS_KVM_DEVICE");
    return env && *env ? env : "/dev/kvm";
}

int Kvm::try_open(Kvm& out, const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno;
    out.fd_.reset(fd);
    return 0;
}

Kvm Kvm::open(const std::string& path) {
    Kvm k;
    if (int e = try_open(k, path))
        throw SysError("open", path, e);
    return k;
}

int Kvm::api_version() const {
    return ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
}

long Kvm::check_extension(unsigned cap) const {
    int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? -errno : r;
}

int Kvm::vcpu_mmap_size() const {
    int r = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (r < 0)
        throw SysError("ioctl", "KVM_GET_VCPU_MMAP_SIZE", errno);
    return r;
}

// ---- Vcpu ----------------------------------------------------------------

Vcpu::Vcpu(UniqueFd fd, size_t run_size, unsigned id)
    : fd_(std::move(fd)), run_size_(run_size), id_(id) {
    void* p = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED)
        throw SysError("mmap", fmt::format("vcpu{} kvm_run, size={:#x}", id, run_size), errno);
    run_ = static_cast<kvm_run*>(p);
}

Vcpu::~Vcpu() {
    if (run_)
        ::munmap(run_, run_size_);
}

int Vcpu::try_run() {
    CallScope scope(kOpRun, fd_.get(), reinterpret_cast<uint64_t>(run_), id_);
    return errno_of(::ioctl(fd_.get(), KVM_RUN, 0));
}

void Vcpu::run() {
    if (int e = try_run())
        throw SysError("ioctl", fmt::format("KVM_RUN vcpu{}", id_), e);
}

kvm_regs Vcpu::regs() const {
    kvm_regs r{};
    if (::ioctl(fd_.get(), KVM_GET_REGS, &r) < 0)
        throw SysError("ioctl", fmt::format("KVM_GET_REGS vcpu{}", id_), errno);
    return r;
}

void Vcpu::set_regs(const kvm_regs& r) {
    if (::ioctl(fd_.get(), KVM_SET_REGS, &r) < 0)
        throw SysError("ioctl", fmt::format("KVM_SET_REGS vcpu{}", id_), errno);
}

kvm_sregs Vcpu::sregs() const {
    kvm_sregs s{};
    if (::ioctl(fd_.get(), KVM_GET_SREGS, &s) < 0)
        throw SysError("ioctl", fmt::format("KVM_GET_SREGS vcpu{}", id_), errno);
    return s;
}

void Vcpu::set_sregs(const kvm_sregs& s) {
    if (::ioctl(fd_.get(), KVM_SET_SREGS, &s) < 0)
        throw SysError("ioctl", fmt::format("KVM_SET_SREGS vcpu{}", id_), errno);
}

int Vcpu::try_pre_fault(uint64_t gpa, uint64_t size, uint64_t* remaining) {
    uapi::kvm_pre_fault_memory r{};
    r.gpa = gpa;
    r.size = size;
    CallScope scope(kOpPreFault, fd_.get(), gpa, size, id_);
    int rc = ::ioctl(fd_.get(), uapi::kPreFaultMemory, &r);
    if (remaining)
        *remaining = r.size;
    return errno_of(rc);
}

// ---- Vm ------------------------------------------------------------------

int Vm::try_create(Vm& out, const Kvm& kvm, unsigned long type) {
    CallScope scope(kOpCreateVm, kvm.fd(), type);
    int fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, type);
    if (fd < 0)
        return errno;
    out.destroy();
    out.fd_.reset(fd);
    out.type_ = type;
    return 0;
}

Vm Vm::create(const Kvm& kvm, unsigned long type) {
    Vm vm;
    // KVM_CREATE_VM can fail transiently with EINTR; the selftests retry too.
    int e;
    do {
        e = try_create(vm, kvm, type);
    } while (e == EINTR);
    if (e)
        throw SysError("ioctl", fmt::format("KVM_CREATE_VM type={}", type), e);
    return vm;
}

Vm& Vm::operator=(Vm&& o) noexcept {
    if (this != &o) {
        destroy();
        fd_ = std::move(o.fd_);
        type_ = o.type_;
        vcpus_ = std::move(o.vcpus_);
        memslots_ = std::move(o.memslots_);
    }
    return *this;
}

Vm::~Vm() {
    destroy();
}

void Vm::destroy() {
    vcpus_.clear();
    if (fd_.valid()) {
        // Unbind before closing so guest_memfd bindings go away in a known order.
        for (auto& [slot, m] : memslots_)
            try_set_region_raw(deleted(m));
    }
    memslots_.clear();
    if (fd_.valid()) {
        CallScope scope(kOpDestroyVm, fd_.get());
        fd_.reset();
    }
}

long Vm::check_extension(unsigned cap) const {
    int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? -errno : r;
}

int Vm::try_create_guest_memfd_raw(uint64_t size, uint64_t flags) {
    uapi::kvm_create_guest_memfd g{};
    g.size = size;
    g.flags = flags;
    CallScope scope(kOpCreateGmem, fd_.get(), size, flags);
    int fd = ::ioctl(fd_.get(), uapi::kCreateGuestMemfd, &g);
    return fd < 0 ? -errno : fd;
}

GuestMemfd Vm::create_guest_memfd(uint64_t size, uint64_t flags) {
    int fd = try_create_guest_memfd_raw(size, flags);
    if (fd < 0)
        throw SysError("ioctl",
                       fmt::format("KVM_CREATE_GUEST_MEMFD size={:#x}, flags={:#x}", size, flags),
                       -fd);
    return GuestMemfd(UniqueFd(fd), size, flags);
}

int Vm::try_set_region_raw(const Memslot& m) {
    auto r = region_of(m);
    CallScope scope(kOpSetRegion, fd_.get(), m.slot, m.size, uint64_t(int64_t(m.gmem_fd)));
    return errno_of(::ioctl(fd_.get(), uapi::kSetUserMemoryRegion2, &r));
}

int Vm::try_add_memslot(const Memslot& m) {
    if (int e = try_set_region_raw(m))
        return e;
    memslots_[m.slot] = m;
    return 0;
}

const Memslot& Vm::add_memslot(const Memslot& m) {
    if (int e = try_add_memslot(m))
        throw SysError("ioctl",
                       fmt::format("KVM_SET_USER_MEMORY_REGION2 slot={}, flags={:#x}, gpa={:#x}, "
                                   "size={:#x}, uaddr={:#x}, guest_memfd={}, offset={:#x}",
                                   m.slot, m.flags, m.gpa, m.size, m.userspace_addr, m.gmem_fd,
                                   m.gmem_offset),
                       e);
    return memslots_.at(m.slot);
}

int Vm::try_remove_memslot(uint32_t slot) {
    auto it = memslots_.find(slot);
    if (it == memslots_.end())
        return ENOENT;
    if (int e = try_set_region_raw(deleted(it->second)))
        return e;
    memslots_.erase(it);
    return 0;
}

void Vm::remove_memslot(uint32_t slot) {
    if (int e = try_remove_memslot(slot))
        throw SysError("ioctl", fmt::format("KVM_SET_USER_MEMORY_REGION2 slot={} size=0", slot), e);
}

int Vm::try_set_memory_attributes(uint64_t gpa, uint64_t size, uint64_t attributes) {
    uapi::kvm_memory_attributes a{};
    a.address = gpa;
    a.size = size;
    a.attributes = attributes;
    CallScope scope(kOpSetAttrs, fd_.get(), gpa, size, attributes);
    return errno_of(::ioctl(fd_.get(), uapi::kSetMemoryAttributes, &a));
}

void Vm::set_memory_attributes(uint64_t gpa, uint64_t size, uint64_t attributes) {
    if (int e = try_set_memory_attributes(gpa, size, attributes))
        throw SysError(
            "ioctl",
            fmt::format("KVM_SET_MEMORY_ATTRIBUTES gpa={:#x}, size={:#x}, attributes={:#x}", gpa,
                        size, attributes),
            e);
}

int Vm::try_enable_cap(unsigned cap, uint64_t arg0) {
    kvm_enable_cap c{};
    c.cap = cap;
    c.args[0] = arg0;
    return errno_of(::ioctl(fd_.get(), KVM_ENABLE_CAP, &c));
}

Vcpu& Vm::add_vcpu(unsigned id, const Kvm& kvm) {
    int fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, id);
    if (fd < 0)
        throw SysError("ioctl", fmt::format("KVM_CREATE_VCPU id={}", id), errno);
    vcpus_.push_back(std::make_unique<Vcpu>(UniqueFd(fd), kvm.vcpu_mmap_size(), id));
    return *vcpus_.back();
}

// ---- x86 helpers ---------------------------------------------------------

void setup_flat_protected_mode(Vcpu& vcpu, uint64_t entry, uint64_t stack) {
    kvm_sregs s = vcpu.sregs();
    kvm_segment seg{};
    seg.base = 0;
    seg.limit = 0xffffffff;
    seg.present = 1;
    seg.dpl = 0;
    seg.db = 1; // 32-bit
    seg.s = 1;  // code/data
    seg.l = 0;
    seg.g = 1;      // 4 KiB granularity
    seg.type = 0xb; // execute/read, accessed
    seg.selector = 0x8;
    s.cs = seg;
    seg.type = 0x3; // read/write, accessed
    seg.selector = 0x10;
    s.ds = s.es = s.fs = s.gs = s.ss = seg;
    s.cr0 |= 1; // PE; paging stays off
    s.cr4 = 0;
    s.efer = 0;
    vcpu.set_sregs(s);

    kvm_regs r{};
    r.rflags = 0x2;
    r.rip = entry;
    r.rsp = stack;
    vcpu.set_regs(r);
}

std::string exit_reason_name(uint32_t reason) {
    switch (reason) {
    case KVM_EXIT_UNKNOWN:
        return "UNKNOWN";
    case KVM_EXIT_EXCEPTION:
        return "EXCEPTION";
    case KVM_EXIT_IO:
        return "IO";
    case KVM_EXIT_HYPERCALL:
        return "HYPERCALL";
    case KVM_EXIT_DEBUG:
        return "DEBUG";
    case KVM_EXIT_HLT:
        return "HLT";
    case KVM_EXIT_MMIO:
        return "MMIO";
    case KVM_EXIT_SHUTDOWN:
        return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY:
        return "FAIL_ENTRY";
    case KVM_EXIT_INTR:
        return "INTR";
    case KVM_EXIT_INTERNAL_ERROR:
        return "INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT:
        return "SYSTEM_EVENT";
    case uapi::kExitMemoryFault:
        return "MEMORY_FAULT";
    default:
        return fmt::format("exit#{}", reason);
    }
}

} // namespace gms::kvm
