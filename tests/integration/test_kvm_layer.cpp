// The KVM layer against the real /dev/kvm.
#include "core/error.h"
#include "kvm/kvm.h"

#include <catch2/catch_test_macros.hpp>
#include <cerrno>
#include <sys/mman.h>
#include <unistd.h>

using namespace gms;

namespace {
bool have_kvm(std::string& why) {
    kvm::Kvm k;
    if (int e = kvm::Kvm::try_open(k)) {
        why = std::string("/dev/kvm not usable: ") + strerror(e);
        return false;
    }
    if (k.check_extension(uapi::kCapGuestMemfd) <= 0) {
        why = "kernel has no guest_memfd (KVM_CAP_GUEST_MEMFD=0)";
        return false;
    }
    return true;
}
} // namespace

TEST_CASE("guest_memfd create, map, fallocate, punch through the RAII layer", "[kvm]") {
    std::string why;
    if (!have_kvm(why))
        SKIP(why);
    kvm::Kvm k = kvm::Kvm::open();
    CHECK(k.api_version() == 12);
    kvm::Vm vm = kvm::Vm::create(k);
    long flags = vm.check_extension(uapi::kCapGuestMemfdFlags);
    if (flags < 3)
        SKIP("guest_memfd MMAP|INIT_SHARED not supported (KVM_CAP_GUEST_MEMFD_FLAGS=" +
             std::to_string(flags) + ")");
    kvm::GuestMemfd g = vm.create_guest_memfd(1 << 20, 3);
    CHECK(g.inode().ino != 0);
    kvm::Mapping m = g.map_shared();
    CHECK(m.data()[0] == 0);
    m.data()[4096] = 0x5a;
    CHECK(m.data()[4096] == 0x5a);
    g.punch_hole(4096, 4096);
    CHECK(m.data()[4096] == 0);
    CHECK(g.try_punch_hole(1, 4096) == EINVAL);
    CHECK_THROWS_AS(vm.create_guest_memfd(4095, 0), SysError);
    CHECK(vm.try_create_guest_memfd_raw(4095, 0) == -EINVAL);
}

TEST_CASE("a vCPU runs guest code from a guest_memfd memslot", "[kvm]") {
    std::string why;
    if (!have_kvm(why))
        SKIP(why);
    kvm::Kvm k = kvm::Kvm::open();
    kvm::Vm vm = kvm::Vm::create(k);
    if (vm.check_extension(uapi::kCapGuestMemfdFlags) < 3)
        SKIP("guest_memfd MMAP|INIT_SHARED not supported");
    kvm::GuestMemfd g = vm.create_guest_memfd(1 << 20, 3);
    kvm::Mapping m = g.map_shared();
    // 32-bit: mov $0x1234abcd, %eax; out %eax, $0x10; hlt
    const uint8_t code[] = {0xb8, 0xcd, 0xab, 0x34, 0x12, 0xe7, 0x10, 0xf4};
    std::memcpy(m.data() + 0x1000, code, sizeof code);
    vm.add_memslot({.slot = 0,
                    .flags = uapi::kMemGuestMemfd,
                    .gpa = 0,
                    .size = 1 << 20,
                    .userspace_addr = reinterpret_cast<uint64_t>(m.data()),
                    .gmem_fd = g.fd(),
                    .gmem_offset = 0});
    kvm::Vcpu& v = vm.add_vcpu(0, k);
    kvm::setup_flat_protected_mode(v, 0x1000, 0x8000);
    v.run();
    REQUIRE(kvm::exit_reason_name(v.run_state()->exit_reason) == "IO");
    CHECK(v.run_state()->io.port == 0x10);
    uint32_t val;
    std::memcpy(&val, reinterpret_cast<uint8_t*>(v.run_state()) + v.run_state()->io.data_offset, 4);
    CHECK(val == 0x1234abcd);
    v.run();
    CHECK(kvm::exit_reason_name(v.run_state()->exit_reason) == "HLT");
    vm.destroy();
    CHECK_FALSE(vm.valid());
}
