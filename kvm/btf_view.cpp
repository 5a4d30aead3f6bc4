#include "kvm/btf_view.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <mutex>

namespace gms::kvm {

namespace {

// A BTF type as C spells it, enough to tell "struct page *" from
// "const void *" and "kvm_pfn_t *" from "struct page **".
std::string c_type(const struct btf* b, uint32_t id, int depth = 0) {
    if (id == 0)
        return "void";
    const struct btf_type* t = btf__type_by_id(b, id);
    if (!t || depth > 16)
        return "?";
    const char* name = btf__name_by_offset(b, t->name_off);
    std::string n = name ? name : "";
    switch (btf_kind(t)) {
    case BTF_KIND_PTR: {
        std::string inner = c_type(b, t->type, depth + 1);
        return inner + (!inner.empty() && inner.back() == '*' ? "*" : " *");
    }
    case BTF_KIND_CONST:
        return "const " + c_type(b, t->type, depth + 1);
    case BTF_KIND_VOLATILE:
        return "volatile " + c_type(b, t->type, depth + 1);
    case BTF_KIND_RESTRICT:
    case BTF_KIND_TYPE_TAG:
        return c_type(b, t->type, depth + 1);
    case BTF_KIND_STRUCT:
        return "struct " + n;
    case BTF_KIND_UNION:
        return "union " + n;
    case BTF_KIND_ENUM:
    case BTF_KIND_ENUM64:
        return "enum " + n;
    case BTF_KIND_ARRAY:
        return c_type(b, btf_array(t)->type, depth + 1) + "[]";
    case BTF_KIND_FUNC_PROTO:
        return "function";
    default:
        return n; // int, typedef, float, ...
    }
}

// Members of a struct, those of anonymous unions/structs flattened.
void flatten(const struct btf* b, const struct btf_type* t, uint32_t base, BtfStruct& out,
             int depth = 0) {
    if (depth > 8)
        return;
    const struct btf_member* m = btf_members(t);
    for (unsigned i = 0; i < btf_vlen(t); ++i, ++m) {
        const char* name = btf__name_by_offset(b, m->name_off);
        uint32_t off = base + btf_member_bit_offset(t, i) / 8;
        uint32_t tid = m->type;
        const struct btf_type* mt = btf__type_by_id(b, tid);
        while (mt && (btf_is_mod(mt) || btf_is_typedef(mt))) {
            tid = mt->type;
            mt = btf__type_by_id(b, tid);
        }
        if ((!name || !*name) && mt && btf_is_composite(mt)) {
            flatten(b, mt, off, out, depth + 1);
            continue;
        }
        long sz = btf__resolve_size(b, m->type);
        out.members.push_back({name ? name : "", off, sz > 0 ? uint32_t(sz) : 0});
    }
}

} // namespace

struct KernelBtf::Impl {
    struct btf* vmlinux = nullptr;
    std::vector<std::pair<std::string, struct btf*>> modules;
    mutable std::once_flag kallsyms_once;
    mutable std::set<std::string> kallsyms;

    ~Impl() {
        for (auto& [n, b] : modules)
            btf__free(b);
        btf__free(vmlinux);
    }

    // vmlinux first, then the modules (their types are split BTF over it).
    std::vector<const struct btf*> all() const {
        std::vector<const struct btf*> v;
        if (vmlinux)
            v.push_back(vmlinux);
        for (const auto& [n, b] : modules)
            v.push_back(b);
        return v;
    }

    // Type ids of `b` that are its own (a module's, not vmlinux's).
    std::pair<uint32_t, uint32_t> own_ids(const struct btf* b) const {
        uint32_t first = b == vmlinux ? 1 : btf__type_cnt(vmlinux);
        return {first, btf__type_cnt(b)};
    }

    const std::set<std::string>& syms() const {
        std::call_once(kallsyms_once, [this] {
            std::ifstream in("/proc/kallsyms");
            std::string line;
            while (std::getline(in, line)) {
                // "addr type name [module]"
                auto a = line.find(' ');
                if (a == std::string::npos || a + 3 > line.size())
                    continue;
                char type = line[a + 1];
                if (type != 't' && type != 'T')
                    continue;
                auto name_start = a + 3;
                auto end = line.find_first_of(" \t", name_start);
                kallsyms.insert(line.substr(
                    name_start, end == std::string::npos ? std::string::npos : end - name_start));
            }
        });
        return kallsyms;
    }

    // A type of this kind and name in any of the BTFs: (btf, id).
    std::pair<const struct btf*, int> find(const std::string& name, int kind) const {
        for (const auto* b : all()) {
            int id = btf__find_by_name_kind(b, name.c_str(), kind);
            if (id > 0)
                return {b, id};
        }
        return {nullptr, 0};
    }
};

KernelBtf::KernelBtf() : impl_(std::make_unique<Impl>()) {
    impl_->vmlinux = btf__load_vmlinux_btf();
    if (!impl_->vmlinux)
        return;
    // KVM is usually a module: guest_memfd's functions and types live in the
    // kvm module's BTF (kvm_amd/kvm_intel hold the vendor parts).
    if (DIR* d = ::opendir("/sys/kernel/btf")) {
        while (auto* ent = ::readdir(d)) {
            std::string n = ent->d_name;
            if (n.rfind("kvm", 0) != 0)
                continue;
            if (auto* b = btf__load_module_btf(n.c_str(), impl_->vmlinux))
                impl_->modules.emplace_back(n, b);
        }
        ::closedir(d);
    }
}

KernelBtf::~KernelBtf() = default;

bool KernelBtf::btf_available() const {
    return impl_->vmlinux != nullptr;
}

std::string KernelBtf::btf_source() const {
    std::string s = "vmlinux";
    for (const auto& [n, b] : impl_->modules)
        s += (s == "vmlinux" ? " + " : ", ") + n;
    return s;
}

bool KernelBtf::kallsyms_available() const {
    return !impl_->syms().empty();
}

bool KernelBtf::btf_has_function(const std::string& name) const {
    return impl_->find(name, BTF_KIND_FUNC).first != nullptr;
}

std::vector<std::string> KernelBtf::btf_functions_with_prefix(const std::string& prefix) const {
    std::set<std::string> out;
    for (const auto* b : impl_->all()) {
        auto [first, end] = impl_->own_ids(b);
        for (uint32_t id = first; id < end; ++id) {
            const struct btf_type* t = btf__type_by_id(b, id);
            if (!t || !btf_is_func(t))
                continue;
            const char* n = btf__name_by_offset(b, t->name_off);
            if (n && std::string_view(n).substr(0, prefix.size()) == prefix)
                out.insert(n);
        }
    }
    return {out.begin(), out.end()};
}

bool KernelBtf::kallsyms_has(const std::string& name) const {
    return impl_->syms().count(name) != 0;
}

std::vector<std::string> KernelBtf::kallsyms_with_prefix(const std::string& prefix) const {
    std::vector<std::string> out;
    const auto& s = impl_->syms();
    for (auto it = s.lower_bound(prefix); it != s.end() && it->rfind(prefix, 0) == 0; ++it)
        out.push_back(*it);
    return out;
}

std::optional<int64_t> KernelBtf::enum_value(const std::string& enum_name,
                                             const std::string& value) const {
    for (int kind : {int(BTF_KIND_ENUM), int(BTF_KIND_ENUM64)}) {
        auto [b, id] = impl_->find(enum_name, kind);
        if (!b)
            continue;
        const struct btf_type* t = btf__type_by_id(b, id);
        for (unsigned i = 0; i < btf_vlen(t); ++i) {
            if (btf_is_enum(t)) {
                const struct btf_enum* e = btf_enum(t) + i;
                if (value == btf__name_by_offset(b, e->name_off))
                    return e->val;
            } else {
                const struct btf_enum64* e = btf_enum64(t) + i;
                if (value == btf__name_by_offset(b, e->name_off))
                    return int64_t(btf_enum64_value(e));
            }
        }
    }
    return std::nullopt;
}

std::optional<BtfStruct> KernelBtf::find_struct(const std::string& name) const {
    auto [b, id] = impl_->find(name, BTF_KIND_STRUCT);
    if (!b)
        return std::nullopt;
    const struct btf_type* t = btf__type_by_id(b, id);
    BtfStruct s;
    s.size = t->size;
    flatten(b, t, 0, s);
    return s;
}

std::optional<std::vector<std::string>> KernelBtf::param_types(const std::string& fn) const {
    auto [b, id] = impl_->find(fn, BTF_KIND_FUNC);
    if (!b)
        return std::nullopt;
    const struct btf_type* t = btf__type_by_id(b, id);
    const struct btf_type* proto = t ? btf__type_by_id(b, t->type) : nullptr;
    if (!proto || !btf_is_func_proto(proto))
        return std::nullopt;
    std::vector<std::string> out;
    const struct btf_param* p = btf_params(proto);
    for (unsigned i = 0; i < btf_vlen(proto); ++i, ++p)
        out.push_back(c_type(b, p->type));
    return out;
}

std::optional<int> KernelBtf::func_args(const std::string& fn) const {
    auto p = param_types(fn);
    return p ? std::optional<int>(int(p->size())) : std::nullopt;
}

SeriesFingerprint fingerprint_running_kernel() {
    KernelBtf k;
    return fingerprint_series(k);
}

} // namespace gms::kvm
