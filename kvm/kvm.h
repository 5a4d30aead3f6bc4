// RAII layer over /dev/kvm, modelled on the KVM selftests library:
// `try_foo()` returns 0 or an errno (the raw result), `foo()` throws a
// SysError naming the ioctl, its arguments and errno.
//
// Ownership: Vm owns its Vcpus and Memslots and tears down in a fixed order
// (vCPUs, then memslots, then the VM fd). GuestMemfd and Mapping are
// independent owners so that workloads can close a guest_memfd while it is
// bound, or destroy the VM while the guest_memfd lives.
#pragma once

#include "core/fd.h"
#include "kvm/flags.h"
#include "kvm/uapi.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace gms::kvm {

class Mapping {
  public:
    Mapping() = default;
    // Returns 0 or errno.
    static int try_map(Mapping& out, int fd, size_t size, int prot, int flags, off_t offset = 0);
    static Mapping map(int fd, size_t size, int prot, int flags, off_t offset = 0);
    static Mapping anonymous(size_t size);
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& o) noexcept;
    Mapping& operator=(Mapping&& o) noexcept;
    ~Mapping();

    uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
    size_t size() const { return size_; }
    bool valid() const { return addr_ != nullptr; }
    void reset();

  private:
    void* addr_ = nullptr;
    size_t size_ = 0;
};

struct InodeId {
    uint64_t dev = 0; // st_dev as the kernel encodes it (new_encode_dev is done by the probes)
    uint64_t ino = 0;
    bool operator==(const InodeId&) const = default;
};

class GuestMemfd {
  public:
    GuestMemfd() = default;
    GuestMemfd(UniqueFd fd, uint64_t size, uint64_t flags);
    GuestMemfd(GuestMemfd&&) noexcept = default;
    GuestMemfd& operator=(GuestMemfd&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = std::move(o.fd_);
            size_ = o.size_;
            flags_ = o.flags_;
            inode_ = o.inode_;
        }
        return *this;
    }
    ~GuestMemfd();

    int fd() const { return fd_.get(); }
    uint64_t size() const { return size_; }
    uint64_t flags() const { return flags_; }
    InodeId inode() const { return inode_; }
    bool valid() const { return fd_.valid(); }
    void close(); // the release may block: a watched call

    int try_allocate(uint64_t offset, uint64_t len);   // fallocate(KEEP_SIZE)
    int try_punch_hole(uint64_t offset, uint64_t len); // PUNCH_HOLE|KEEP_SIZE
    int try_fallocate(int mode, uint64_t offset, uint64_t len);
    void punch_hole(uint64_t offset, uint64_t len);
    // pwrite(); returns bytes written or -errno.
    ssize_t try_pwrite(const void* buf, size_t len, uint64_t offset);
    Mapping map_shared(int prot = 0x3 /*PROT_READ|PROT_WRITE*/) const;

  private:
    UniqueFd fd_;
    uint64_t size_ = 0;
    uint64_t flags_ = 0;
    InodeId inode_;
};

// The KVM device: $GMS_KVM_DEVICE when set (tests point it at a missing
// node to exercise a machine without KVM), else /dev/kvm.
std::string device_path();

class Kvm {
  public:
    static int try_open(Kvm& out, const std::string& path = device_path());
    static Kvm open(const std::string& path = device_path());
    int fd() const { return fd_.get(); }
    int api_version() const;
    // KVM_CHECK_EXTENSION on /dev/kvm: value, or -errno.
    long check_extension(unsigned cap) const;
    int vcpu_mmap_size() const;

  private:
    UniqueFd fd_;
};

class Vcpu {
  public:
    Vcpu(UniqueFd fd, size_t run_size, unsigned id);
    ~Vcpu();
    Vcpu(const Vcpu&) = delete;
    Vcpu& operator=(const Vcpu&) = delete;

    unsigned id() const { return id_; }
    int fd() const { return fd_.get(); }
    kvm_run* run_state() const { return run_; }

    // KVM_RUN: 0 or errno (EINTR when a signal interrupted it).
    int try_run();
    void run();
    kvm_regs regs() const;
    void set_regs(const kvm_regs& r);
    kvm_sregs sregs() const;
    void set_sregs(const kvm_sregs& s);
    // KVM_PRE_FAULT_MEMORY: 0 or errno; `remaining` gets what was not done.
    int try_pre_fault(uint64_t gpa, uint64_t size, uint64_t* remaining = nullptr);

  private:
    UniqueFd fd_;
    kvm_run* run_ = nullptr;
    size_t run_size_ = 0;
    unsigned id_ = 0;
};

struct Memslot {
    uint32_t slot = 0;
    uint32_t flags = 0;
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint64_t userspace_addr = 0;
    int gmem_fd = -1;
    uint64_t gmem_offset = 0;
};

class Vm {
  public:
    static int try_create(Vm& out, const Kvm& kvm, unsigned long type);
    static Vm create(const Kvm& kvm, unsigned long type = uapi::kX86DefaultVm);
    Vm() = default;
    Vm(Vm&&) noexcept = default;
    Vm& operator=(Vm&& o) noexcept;
    ~Vm();

    int fd() const { return fd_.get(); }
    unsigned long type() const { return type_; }
    bool valid() const { return fd_.valid(); }
    long check_extension(unsigned cap) const;

    // KVM_CREATE_GUEST_MEMFD: fd or -errno.
    int try_create_guest_memfd_raw(uint64_t size, uint64_t flags);
    GuestMemfd create_guest_memfd(uint64_t size, uint64_t flags);

    // KVM_SET_USER_MEMORY_REGION2 for `m` as given (memory_size m.size, 0
    // deletes); 0 or errno. Does not record the slot (conformance probes bad input).
    int try_set_region_raw(const Memslot& m);
    // Binds and records a memslot; the Vm unbinds it on destruction.
    int try_add_memslot(const Memslot& m);
    const Memslot& add_memslot(const Memslot& m);
    int try_remove_memslot(uint32_t slot);
    void remove_memslot(uint32_t slot);
    const std::map<uint32_t, Memslot>& memslots() const { return memslots_; }

    int try_set_memory_attributes(uint64_t gpa, uint64_t size, uint64_t attributes);
    void set_memory_attributes(uint64_t gpa, uint64_t size, uint64_t attributes);
    int try_enable_cap(unsigned cap, uint64_t arg0);

    Vcpu& add_vcpu(unsigned id, const Kvm& kvm);
    std::vector<std::unique_ptr<Vcpu>>& vcpus() { return vcpus_; }

    // Explicit teardown in the fixed order; idempotent.
    void destroy();

  private:
    UniqueFd fd_;
    unsigned long type_ = 0;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    std::map<uint32_t, Memslot> memslots_;
};

// Puts a vCPU in 32-bit flat protected mode (no paging) at `entry`, with
// `stack` in ESP. Guest code can then address all of 4 GiB directly.
void setup_flat_protected_mode(Vcpu& vcpu, uint64_t entry, uint64_t stack);

// Name of a KVM exit reason for messages ("IO", "HLT", ...).
std::string exit_reason_name(uint32_t reason);

} // namespace gms::kvm
