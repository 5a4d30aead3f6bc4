// File formats the lab reads and writes on the host: the bzImage boot header,
// kernel modules' .modinfo, static ELFs, newc cpio.
#include "core/error.h"
#include "core/util.h"
#include "lab/lab.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <elf.h>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

namespace fs = std::filesystem;

namespace gms::lab {

namespace {

std::string read_prefix(const std::string& path, size_t max) {
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw EnvError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    std::string data(max, '\0');
    f.read(data.data(), std::streamsize(max));
    data.resize(size_t(f.gcount()));
    return data;
}

template <typename T> bool load(const std::string& b, size_t off, T& out) {
    if (off > b.size() || b.size() - off < sizeof(T))
        return false;
    std::memcpy(&out, b.data() + off, sizeof(T));
    return true;
}

} // namespace

BzImageInfo read_bzimage(const std::string& path) {
    // Documentation/arch/x86/boot.rst: "HdrS" at 0x202, protocol at 0x206,
    // kernel_version (offset - 0x200 of a NUL-terminated string) at 0x20e.
    std::string b = read_prefix(path, 64 * 1024);
    uint32_t magic = 0;
    if (!load(b, 0x202, magic) || magic != 0x53726448)
        throw EnvError(fmt::format("{} is not an x86 bzImage: no 'HdrS' boot header at offset "
                                   "0x202 (pass the vmlinuz of a kernel package)",
                                   path));
    BzImageInfo info;
    load(b, 0x206, info.protocol);
    if (info.protocol < 0x0206)
        throw EnvError(fmt::format("{}: boot protocol {:#x} is too old for the lab (need 2.06+)",
                                   path, info.protocol));
    uint16_t ver_off = 0;
    load(b, 0x20e, ver_off);
    size_t at = size_t(ver_off) + 0x200;
    if (ver_off && at < b.size()) {
        size_t end = b.find('\0', at);
        info.version = b.substr(at, std::min(end, at + 256) - at);
        info.release = info.version.substr(0, info.version.find(' '));
    }
    return info;
}

std::multimap<std::string, std::string> parse_modinfo(const std::string& e,
                                                      const std::string& what) {
    Elf64_Ehdr eh{};
    if (!load(e, 0, eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64)
        throw EnvError(fmt::format("{} is not an ELF64 kernel module", what));
    auto section = [&](unsigned i, Elf64_Shdr& sh) {
        return i < eh.e_shnum && load(e, eh.e_shoff + size_t(i) * eh.e_shentsize, sh);
    };
    Elf64_Shdr strtab{};
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || !section(eh.e_shstrndx, strtab) ||
        strtab.sh_offset > e.size())
        throw EnvError(fmt::format("{}: malformed ELF section table", what));
    std::multimap<std::string, std::string> out;
    for (unsigned i = 0; i < eh.e_shnum; ++i) {
        Elf64_Shdr sh{};
        if (!section(i, sh) || strtab.sh_offset + sh.sh_name >= e.size())
            continue;
        if (std::strncmp(e.data() + strtab.sh_offset + sh.sh_name, ".modinfo",
                         e.size() - strtab.sh_offset - sh.sh_name) != 0)
            continue;
        if (sh.sh_offset > e.size() || e.size() - sh.sh_offset < sh.sh_size)
            throw EnvError(fmt::format("{}: .modinfo section past the end of the file", what));
        std::string_view info(e.data() + sh.sh_offset, sh.sh_size);
        size_t pos = 0;
        while (pos < info.size()) {
            size_t end = info.find('\0', pos);
            if (end == std::string_view::npos)
                end = info.size();
            std::string_view kv = info.substr(pos, end - pos);
            size_t eq = kv.find('=');
            if (eq != std::string_view::npos)
                out.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
            pos = end + 1;
        }
        return out;
    }
    throw EnvError(fmt::format("{} has no .modinfo section (not a kernel module)", what));
}

std::string normalize_module_name(const std::string& name) {
    std::string n = name;
    for (char& c : n)
        if (c == '-')
            c = '_';
    return n;
}

std::map<std::string, ModuleFile> index_modules(const std::string& dir) {
    std::map<std::string, ModuleFile> out;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec),
        end;
    if (ec)
        throw EnvError(fmt::format("cannot read the modules directory {}: {}", dir, ec.message()));
    for (; it != end; it.increment(ec)) {
        if (ec)
            break;
        if (!it->is_regular_file(ec))
            continue;
        std::string file = it->path().filename().string();
        for (const char* suffix : {".ko", ".ko.xz", ".ko.zst", ".ko.gz"}) {
            size_t n = std::strlen(suffix);
            if (file.size() > n && file.compare(file.size() - n, n, suffix) == 0) {
                std::string name = normalize_module_name(file.substr(0, file.size() - n));
                out.try_emplace(name, ModuleFile{name, it->path().string()});
                break;
            }
        }
    }
    return out;
}

std::vector<std::string> builtin_modules(const std::string& dir) {
    std::vector<std::string> out;
    std::ifstream f(dir + "/modules.builtin");
    std::string line;
    while (std::getline(f, line)) {
        // kernel/arch/x86/kvm/kvm.ko
        auto slash = line.rfind('/');
        std::string file = line.substr(slash == std::string::npos ? 0 : slash + 1);
        if (file.size() > 3 && file.compare(file.size() - 3, 3, ".ko") == 0)
            out.push_back(normalize_module_name(file.substr(0, file.size() - 3)));
    }
    return out;
}

bool is_static_elf(const std::string& path) {
    std::string b = read_prefix(path, 64 * 1024);
    Elf64_Ehdr eh{};
    if (!load(b, 0, eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64)
        return false;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph{};
        if (!load(b, eh.e_phoff + size_t(i) * eh.e_phentsize, ph))
            return false;
        if (ph.p_type == PT_INTERP)
            return false;
    }
    return true;
}

// ---- cpio (newc) ----------------------------------------------------------------

void CpioWriter::add(const std::string& path, uint32_t mode, const std::string& data, uint32_t rmaj,
                     uint32_t rmin) {
    std::string name = path;
    while (!name.empty() && name.front() == '/')
        name.erase(0, 1);
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    out_ += fmt::format("070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}"
                        "{:08X}{:08X}",
                        ino_++, mode, 0, 0, (mode & 0170000) == 0040000 ? 2 : 1, 0,
                        uint32_t(data.size()), 0, 0, rmaj, rmin, uint32_t(name.size() + 1), 0);
    out_ += name;
    out_ += '\0';
    out_.append((4 - out_.size() % 4) % 4, '\0');
    out_ += data;
    out_.append((4 - out_.size() % 4) % 4, '\0');
}

void CpioWriter::add_dir(const std::string& path, uint32_t mode) {
    add(path, 0040000 | mode, "");
}

void CpioWriter::add_file(const std::string& path, const std::string& data, uint32_t mode) {
    if (data.size() > 0xffffffffull)
        throw Error(fmt::format("cpio: {} is too large", path));
    add(path, 0100000 | mode, data);
}

void CpioWriter::add_symlink(const std::string& path, const std::string& target) {
    add(path, 0120000 | 0777, target);
}

void CpioWriter::add_char_device(const std::string& path, uint32_t major, uint32_t minor,
                                 uint32_t mode) {
    add(path, 0020000 | mode, "", major, minor);
}

std::string CpioWriter::finish() {
    add("TRAILER!!!", 0, "");
    std::string out = std::move(out_);
    out_.clear();
    ino_ = 1;
    return out;
}

std::string shell_quote(const std::string& s) {
    // Words a shell reads as they are stay readable in messages.
    bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || std::strchr("_-./=:,+@%", c);
    });
    if (plain)
        return s;
    std::string out = "'";
    for (char c : s) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    return out + "'";
}

} // namespace gms::lab
