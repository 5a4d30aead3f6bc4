#include "probes/program_stats.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>

namespace gms::probes {

int BpfStatsScope::try_enable() {
    int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd < 0)
        return errno ? errno : -fd;
    fd_.reset(fd);
    return 0;
}

std::vector<report::ProgramStat> read_program_stats(bpf_object* obj,
                                                    const std::vector<AttachedPoint>& points) {
    std::vector<report::ProgramStat> rows;
    if (!obj)
        return rows;
    for (const auto& p : points) {
        if (!p.attached)
            continue;
        for (const auto& name : p.progs) {
            const bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
            int fd = prog ? bpf_program__fd(prog) : -1;
            if (fd < 0)
                continue;
            bpf_prog_info info;
            std::memset(&info, 0, sizeof(info));
            uint32_t len = sizeof(info);
            if (bpf_prog_get_info_by_fd(fd, &info, &len))
                continue;
            report::ProgramStat s;
            s.point = p.def->name;
            s.program = name;
            s.target = p.target;
            s.runs = info.run_cnt;
            s.run_time_ns = info.run_time_ns;
            s.recursion_misses = info.recursion_misses;
            rows.push_back(std::move(s));
        }
    }
    return rows;
}

} // namespace gms::probes
