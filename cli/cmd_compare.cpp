// `gmemstress compare` and `gmemstress report html`: read JSON reports back
// (reports/parse.h) and compare or draw them. Exit status of compare: 0 no
// regression, 1 a regression, 2 bad input (a file that is missing or not a
// version-2 report, named in the message).
#include "cli/commands.h"
#include "core/error.h"
#include "engine/engine.h"
#include "reports/compare.h"
#include "reports/html.h"
#include "reports/parse.h"
#include "reports/render.h"

#include <algorithm>
#include <fmt/format.h>
#include <unistd.h>

namespace gms::cli {

namespace {

// `BASE... -- NEW...`: CLI11 hands every positional word over in one list
// (the second list stays for what it may put there), so the words after
// `--` on the command line are the new side.
struct Sides {
    std::vector<std::string> base, next, positional, positional_new;
};

std::vector<std::string> after_dashes() {
    const auto& argv = invocation();
    auto dash = std::find(argv.begin(), argv.end(), "--");
    return dash == argv.end() ? std::vector<std::string>{}
                              : std::vector<std::string>(dash + 1, argv.end());
}

// --base/--new, or positional `BASE... -- NEW...`.
void split_sides(Sides& s, const std::string& cmd) {
    std::vector<std::string> words = s.positional;
    words.insert(words.end(), s.positional_new.begin(), s.positional_new.end());
    if (words.empty())
        return;
    if (!s.base.empty() || !s.next.empty())
        throw UsageError(
            fmt::format("{}: give the reports either as --base/--new or as BASE... -- NEW..., "
                        "not both",
                        cmd));
    auto tail = after_dashes();
    if (tail.empty() || tail.size() >= words.size() ||
        !std::equal(tail.begin(), tail.end(), words.end() - long(tail.size())))
        throw UsageError(fmt::format("{}: separate the base reports from the new ones with "
                                     "'--' (BASE... -- NEW...), or use --base and --new",
                                     cmd));
    s.base.assign(words.begin(), words.end() - long(tail.size()));
    s.next = std::move(tail);
    s.positional.clear();
    s.positional_new.clear();
}

report::RunSet read_side(const std::vector<std::string>& paths) {
    report::RunSet s;
    for (const auto& p : paths) {
        s.paths.push_back(p);
        s.reports.push_back(report::read_report(p));
    }
    return s;
}

report::Comparison comparison_of(Sides& s, const std::string& cmd, const report::stats::Rules& r) {
    split_sides(s, cmd);
    if (s.base.empty() || s.next.empty())
        throw UsageError(
            fmt::format("{}: needs at least one base and one new report (--base A.json "
                        "--new B.json)",
                        cmd));
    report::RunSet base = read_side(s.base); // base first: its errors first
    report::RunSet next = read_side(s.next);
    return report::compare(std::move(base), std::move(next), r);
}

struct CompareOptions {
    Sides sides;
    bool json = false;
    std::string json_path, html_path;
    double min_change_pct = 5;
    double alpha = 0.05;
    size_t min_samples = 3;
};

int compare_command(CompareOptions& o) {
    engine::check_output_paths({o.json_path, o.html_path});
    report::stats::Rules rules;
    rules.min_change = o.min_change_pct / 100;
    rules.alpha = o.alpha;
    rules.min_samples = o.min_samples;
    report::Comparison c = comparison_of(o.sides, "compare", rules);
    auto j = report::to_json(c);
    if (!o.json_path.empty())
        report::write_atomically(o.json_path, j.dump(2) + "\n");
    if (!o.html_path.empty())
        report::write_atomically(o.html_path, report::to_html(c));
    if (o.json)
        fmt::print("{}\n", j.dump(2));
    else
        fmt::print("{}", report::to_text(c, isatty(STDOUT_FILENO)));
    return c.regressions() ? kExitFailures : kExitPass;
}

void add_rule_flags(CLI::App* cmd, CompareOptions& o) {
    cmd->add_option("--min-change", o.min_change_pct,
                    "smallest change in percent that can be significant (default 5)")
        ->check(CLI::Range(0.0, 1000.0));
    cmd->add_option("--alpha", o.alpha, "Welch's t-test significance level (default 0.05)")
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--min-samples", o.min_samples,
                    "reports per side needed to judge a change (default 3, as LKP)")
        ->check(CLI::Range(2, 1000));
}

void add_side_flags(CLI::App* cmd, Sides& s) {
    cmd->add_option("--base", s.base, "a report of the base side (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--new", s.next, "a report of the new side (repeatable)")
        ->allow_extra_args(false);
}

struct HtmlOptions {
    CompareOptions compare;
    std::string out;
};

int report_html_command(HtmlOptions& h) {
    engine::check_output_paths({h.out});
    auto& s = h.compare.sides;
    std::string html;
    bool one = s.base.empty() && s.next.empty() && after_dashes().empty();
    if (one) {
        if (s.positional.size() != 1)
            throw UsageError(fmt::format(
                "report html: give one report to draw it, or --base/--new (or BASE... -- "
                "NEW...) to draw a comparison; got {} reports",
                s.positional.size()));
        html = report::to_html(report::read_report(s.positional[0]));
    } else {
        report::stats::Rules rules;
        rules.min_change = h.compare.min_change_pct / 100;
        rules.alpha = h.compare.alpha;
        rules.min_samples = h.compare.min_samples;
        html = report::to_html(comparison_of(s, "report html", rules));
    }
    report::write_atomically(h.out, html);
    fmt::print("report html: wrote {}\n", h.out);
    return kExitPass;
}

} // namespace

void add_compare_command(CLI::App& app, Action& action) {
    static CompareOptions o;
    auto* cmd = app.add_subcommand(
        "compare",
        "Compare reports of a base and a new set of runs: outcome and verdict changes, new "
        "kernel-log findings, throughput and latency changes beyond the run-to-run noise. Exit 1 "
        "on a regression");
    add_side_flags(cmd, o.sides);
    // Bounded: CLI11 allows one unbounded positional list only.
    cmd->add_option("base-reports", o.sides.positional, "BASE.json... (then -- NEW.json...)")
        ->expected(0, 4096);
    cmd->add_option("new-reports", o.sides.positional_new, "NEW.json... (after --)");
    cmd->add_flag("--json", o.json, "print the comparison as JSON instead of text");
    cmd->add_option("-o,--output", o.json_path, "also write the comparison as JSON here");
    cmd->add_option("--html", o.html_path, "also write it as a self-contained HTML page here");
    add_rule_flags(cmd, o);
    cmd->callback([&action] { action = [] { return compare_command(o); }; });
}

void add_report_command(CLI::App& app, Action& action) {
    static HtmlOptions h;
    auto* cmd = app.add_subcommand("report", "Render JSON reports in other forms");
    cmd->require_subcommand(1);
    auto* html = cmd->add_subcommand(
        "html", "A self-contained HTML page (no network) of one report, or of a comparison");
    html->add_option("reports", h.compare.sides.positional,
                     "REPORT.json, or BASE.json... -- NEW.json...")
        ->expected(0, 4096);
    html->add_option("new-reports", h.compare.sides.positional_new, "NEW.json... (after --)");
    add_side_flags(html, h.compare.sides);
    html->add_option("-o,--output", h.out, "the HTML file to write")->required();
    add_rule_flags(html, h.compare);
    html->callback([&action] { action = [] { return report_html_command(h); }; });
}

} // namespace gms::cli
