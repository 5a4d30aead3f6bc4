#include "core/caps.h"

#include "core/fd.h"
#include "core/util.h"
#include "kvm/btf_view.h"
#include "kvm/kvm.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace gms {

namespace {

std::string read_cpu_model() {
    auto info = read_file("/proc/cpuinfo");
    if (!info)
        return "unknown";
    auto pos = info->find("model name");
    if (pos == std::string::npos)
        return "unknown";
    auto colon = info->find(':', pos);
    auto eol = info->find('\n', pos);
    return info->substr(colon + 2, eol - colon - 2);
}

uint64_t meminfo_kb(const std::string& key) {
    auto info = read_file("/proc/meminfo");
    if (!info)
        return 0;
    auto pos = info->find(key + ":");
    if (pos == std::string::npos)
        return 0;
    return std::strtoull(info->c_str() + pos + key.size() + 1, nullptr, 10);
}

// "none [integrity] confidentiality" -> "integrity". securityfs may be
// unmounted (containers); mounting it is harmless and read-only in effect.
std::string read_lockdown() {
    const char* path = "/sys/kernel/security/lockdown";
    auto s = read_file(path);
    if (!s && geteuid() == 0) {
        ::mount("securityfs", "/sys/kernel/security", "securityfs", 0, nullptr);
        s = read_file(path);
    }
    if (!s)
        return access("/sys/kernel/security", F_OK) == 0 ? "unknown (no lockdown LSM)" : "unknown";
    auto open = s->find('[');
    auto close = s->find(']');
    if (open == std::string::npos || close == std::string::npos)
        return "unknown";
    return s->substr(open + 1, close - open - 1);
}

std::string kvm_open_advice(int err, const std::string& dev) {
    switch (err) {
    case ENOENT:
        return fmt::format("no {}: load kvm-intel or kvm-amd, or enable virtualization", dev);
    case ENODEV:
    case ENXIO:
        return fmt::format("{} exists but no KVM driver answers it (is this kernel itself a "
                           "guest without nested virtualization?)",
                           dev);
    case EACCES:
    case EPERM:
        return fmt::format("no permission on {}: run as root or join the kvm group", dev);
    default:
        return fmt::format("cannot open {}", dev);
    }
}

// In-place conversion on a default VM: the capability a profile named, else
// the ioctl itself, issued on a guest_memfd with size 0 (EINVAL from every
// version of the series, ENOTTY without it).
void detect_memory_attributes2(Caps& c, kvm::Vm& vm) {
    const auto& abi = c.series.abi;
    if (abi.cap_attrs2 != uapi::kCapMemoryAttributes2None) {
        long v = std::max<long>(0, vm.check_extension(abi.cap_attrs2));
        c.memory_attributes2 = v > 0;
        c.memory_attributes2_how =
            fmt::format("capability {} (abi.cap_memory_attributes2) = {:#x}", abi.cap_attrs2, v);
        return;
    }
    if (!c.guest_memfd) {
        c.memory_attributes2_how = "no guest_memfd on a default VM to ask";
        return;
    }
    int fd = vm.try_create_guest_memfd_raw(4096, 0);
    if (fd < 0) {
        c.memory_attributes2_how =
            fmt::format("KVM_CREATE_GUEST_MEMFD failed ({})", errno_name(-fd));
        return;
    }
    UniqueFd owner(fd);
    int e = kvm::probe_set_memory_attributes2(fd, abi);
    c.memory_attributes2 = e != ENOTTY;
    c.memory_attributes2_how =
        fmt::format("KVM_SET_MEMORY_ATTRIBUTES2 ({:#x}: nr {:#x}, {} bytes) on a guest_memfd with "
                    "size 0: {}",
                    abi.attrs2_request(), abi.attrs2_nr, abi.attrs2.size,
                    e == ENOTTY ? "ENOTTY (no such ioctl)"
                                : fmt::format("{} (the ioctl exists)", e ? errno_name(e) : "0"));
}

} // namespace

Caps detect_caps(const kvm::AbiOverrides& overrides) {
    Caps c;
    c.series.fingerprint = kvm::fingerprint_running_kernel();
    c.series.abi = kvm::resolve_series_abi(c.series.fingerprint, overrides);
    c.bits = c.series.abi.bits;
    struct utsname u {};
    if (uname(&u) == 0)
        c.kernel_release = u.release;
    const char* in_lab = std::getenv("GMS_IN_LAB");
    c.lab_guest = in_lab && std::string(in_lab) == "1";
    c.cpu_model = read_cpu_model();
    c.mem_total = meminfo_kb("MemTotal") * 1024;
    c.mem_available = meminfo_kb("MemAvailable") * 1024;
    c.lockdown = read_lockdown();
    c.btf_vmlinux = access("/sys/kernel/btf/vmlinux", R_OK) == 0;
    c.fail_nth = access(kFailNthPath, F_OK) == 0;
    struct statfs sfs {};
    c.debugfs = statfs(kDebugfsDir, &sfs) == 0 && sfs.f_type == DEBUGFS_MAGIC;
    c.failslab = access(fmt::format("{}/failslab", kDebugfsDir).c_str(), F_OK) == 0;
    c.fail_page_alloc = access(fmt::format("{}/fail_page_alloc", kDebugfsDir).c_str(), F_OK) == 0;

    kvm::Kvm k;
    const std::string dev = kvm::device_path();
    if (int e = kvm::Kvm::try_open(k, dev)) {
        c.kvm_error = fmt::format("{} ({})", kvm_open_advice(e, dev), errno_name(e));
        return c;
    }
    c.kvm_accessible = true;
    c.api_version = k.api_version();
    auto cap = [&](unsigned n) { return std::max<long>(0, k.check_extension(n)); };
    c.vm_types = cap(uapi::kCapVmTypes);
    if (c.vm_types == 0)
        c.vm_types = 1; // no KVM_CAP_VM_TYPES: only the default VM type exists
    c.guest_memfd = cap(uapi::kCapGuestMemfd) > 0;
    c.user_memory2 = cap(uapi::kCapUserMemory2) > 0;
    c.nr_vcpus = int(cap(uapi::kCapNrVcpus));
    c.max_vcpus = int(cap(uapi::kCapMaxVcpus));
    c.nr_memslots = int(cap(uapi::kCapNrMemslots));
    c.exit_hypercall_mask = cap(uapi::kCapExitHypercall);
    c.exit_hypercall = c.exit_hypercall_mask & (1ull << uapi::kHcMapGpaRange);

    // Several caps are per VM (type): ask a default VM.
    kvm::Vm vm;
    if (kvm::Vm::try_create(vm, k, uapi::kX86DefaultVm) == 0) {
        auto vcap = [&](unsigned n) { return std::max<long>(0, vm.check_extension(n)); };
        c.guest_memfd_flags = vcap(uapi::kCapGuestMemfdFlags);
        c.memory_attributes = vcap(uapi::kCapMemoryAttributes);
        c.pre_fault_memory = vcap(uapi::kCapPreFaultMemory) > 0;
        detect_memory_attributes2(c, vm);
        // 0: no KVM_CAP_GUEST_MEMFD_FLAGS (MMAP is advertised wherever it exists).
        c.series.notes = kvm::check_advertised(
            c.series.fingerprint, c.series.abi,
            c.guest_memfd_flags ? std::optional<uint64_t>(c.guest_memfd_flags) : std::nullopt);
    } else {
        // A device that opens but cannot create a VM is no KVM to run on.
        c.kvm_accessible = false;
        c.kvm_error = fmt::format("{} opens but KVM_CREATE_VM fails ({})", dev, errno_name(errno));
    }
    return c;
}

nlohmann::json Caps::to_json() const {
    using nlohmann::json;
    json j;
    j["kernel_release"] = kernel_release;
    j["lab_guest"] = lab_guest;
    j["cpu_model"] = cpu_model;
    j["mem_total"] = mem_total;
    j["mem_available"] = mem_available;
    j["lockdown"] = lockdown;
    j["btf_vmlinux"] = btf_vmlinux;
    j["kvm"] = {{"accessible", kvm_accessible}, {"error", kvm_error}, {"api_version", api_version}};
    j["vm_types"] = vm_types;
    j["guest_memfd"] = guest_memfd;
    j["guest_memfd_flags"] = guest_memfd_flags;
    j["guest_memfd_flags_decoded"] = kvm::flags_to_string(guest_memfd_flags, bits);
    j["memory_attributes"] = memory_attributes;
    j["memory_attributes2"] = memory_attributes2;
    j["memory_attributes2_how"] = memory_attributes2_how;
    j["pre_fault_memory"] = pre_fault_memory;
    j["user_memory2"] = user_memory2;
    j["exit_hypercall_map_gpa_range"] = exit_hypercall;
    j["nr_vcpus"] = nr_vcpus;
    j["max_vcpus"] = max_vcpus;
    j["nr_memslots"] = nr_memslots;
    j["flag_bits"] = {
        {"no_direct_map", bits.no_direct_map}, {"write", bits.write}, {"hugetlb", bits.hugetlb}};
    j["fault_injection"] = {{"fail_nth", fail_nth},
                            {"debugfs", debugfs},
                            {"failslab", failslab},
                            {"fail_page_alloc", fail_page_alloc}};
    j["bpf"] = bpf;
    return j;
}

} // namespace gms
