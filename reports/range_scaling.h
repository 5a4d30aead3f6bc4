// The range-scaling section of a workload's report: per guest_memfd
// operation, its times at growing sizes, the fits of time against size, the
// growth class and the sizes at which one operation would reach the
// soft-lockup threshold and a guest-visible stall. Plain data; the JSON and
// text renderings are below, the schema is $defs/range_scaling in
// reports/schema/report.schema.json.
#pragma once

#include "core/scaling_fit.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gms::report {

// One size of one operation: every repetition's time.
struct ScalingSample {
    uint64_t range_bytes = 0; // the range the operation covered
    uint64_t work_pages = 0;  // the x of the fits (ScalingOp::x says what it counts)
    bool sparse = false;      // populated every sparse_stride-th page only
    std::vector<uint64_t> ns; // one per repetition, in order
    // The fits use the minimum: disturbances only ever add time.
    uint64_t min_ns() const;
    uint64_t median_ns() const;
    uint64_t max_ns() const;
};

// A repetition far above what the fit predicts at its size: a one-off
// (a sleep under a lock, preemption), not growth.
struct ScalingOutlier {
    uint64_t range_bytes = 0;
    unsigned rep = 0; // 0-based
    uint64_t ns = 0;
    double expected_ns = 0;
};

// Where one operation would take `threshold_s`.
struct ScalingProjection {
    std::string threshold; // "soft_lockup", "guest_stall"
    double threshold_s = 0;
    std::optional<double> pages;   // x of the fit; unset: the fit never gets there
    std::optional<uint64_t> bytes; // the range of that many pages, populated like the
                                   // measured ones (1 in sparse_stride for *_sparse);
                                   // unset: never, or beyond 2^63 bytes
    std::string basis;             // "linear" or "power" (the fit used)
};

struct ScalingOp {
    std::string name;        // "punch_hole", "allocate", "convert_to_private", ...
    std::string x;           // what work_pages counts ("populated pages", "range pages")
    std::string skip_reason; // set: the operation did not run here
    std::vector<ScalingSample> samples;
    std::optional<fit::LinearFit> linear; // over the per-size minima
    std::optional<fit::PowerFit> power;
    std::optional<fit::Growth> growth; // unset: too few sizes (growth_reason says)
    double n_log_n_exponent = 0;       // the exponent n log n would show at these sizes
    std::string growth_reason;
    std::vector<ScalingProjection> projections;
    std::vector<ScalingOutlier> outliers;
};

struct RangeScaling {
    uint64_t mem_available = 0; // at the start
    uint64_t memory_budget = 0; // pages populated at once stay below this
    uint64_t min_size = 0, max_size = 0;
    uint64_t dense_limit = 0; // larger sizes are populated sparsely
    uint64_t sparse_stride = 0;
    double growth_factor = 0;
    unsigned reps = 0;
    double tolerance = 0;
    double watchdog_thresh_s = 0;
    std::string watchdog_source; // "/proc/sys/kernel/watchdog_thresh" or why the default
    double soft_lockup_s = 0;    // 2 x watchdog_thresh
    double stall_s = 0;
    std::vector<std::string> notes; // what limited the sizes, what was sparse, ...
    std::vector<ScalingOp> ops;
};

// Fills op's fits, class, projections and outliers from its samples: fits over
// each size's minimum (x = work_pages, y = ns) from 3 sizes on (none below: no
// made-up slope); the class (fit::classify, `tolerance`) from 3 sizes spanning
// 8x; for a classified op, projections at `thresholds` (name, seconds): the
// smaller size of the two fits (the less flattering); outliers: repetitions
// `outlier_factor` times and 1 ms above the largest of both fits and the
// fastest other repetition at their size (never against <= 0 ns).
void fit_op(ScalingOp& op, double tolerance, double outlier_factor,
            const std::vector<std::pair<std::string, double>>& thresholds);

nlohmann::json to_json(const RangeScaling& s);
// Lines for the text summary (no trailing newline), each indented by `indent`.
std::vector<std::string> to_text_lines(const RangeScaling& s, const std::string& indent);

} // namespace gms::report
