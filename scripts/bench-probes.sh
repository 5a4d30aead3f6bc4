#!/usr/bin/env bash
# Cost of observation: runs the same host-fault workload twice in one
# invocation, with the probes off (`--set probes.mode="off"`) and on, and
# prints the fault throughput of both and their ratio. See docs/PROBES.md.
#
# Usage: scripts/bench-probes.sh [--bin PATH] [--duration 10s] [--threads 2]
#                                [--backend auto|fentry|kprobe|tracepoint]
#                                [--workload host-fault] [--reps N]
# Exit: 0 measured; 77 when the probes cannot attach here (printed why);
#       other non-zero when a run failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=""
duration=10s
threads=2
backend=auto
workload=host-fault
reps=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "bench-probes: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  for b in "$repo"/build*/cli/gmemstress "$repo"/build*/gmemstress; do
    [ -x "$b" ] && bin=$b && break
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "bench-probes: no gmemstress binary (pass --bin)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/bench.toml" <<TOML
name = "bench-probes"
description = "$workload throughput, for probes on/off comparison"
seed = 1
duration = "$duration"
[guest_memfd]
size = "64MiB"
flags = ["mmap", "init_shared"]
[[workload]]
kind = "$workload"
threads = $threads
TOML

# ops/s of the (only) workload in a report.
rate() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
w = r["workloads"][0]
ops = sum(o.get("count", 0) for o in w.get("ops", {}).values())
print(f'{ops / w["duration_s"] if w["duration_s"] else 0:.1f} {ops} {w["duration_s"]:.2f} {w["outcome"]}')
PY
}

probe_status() {
  python3 - "$1" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])).get("probes", {})
used = ",".join(p.get("backends_in_use", []))
print(p.get("status", "?"), used or "-", p.get("events_decoded", 0),
      p.get("drops", {}).get("ringbuf_reserve_failures", 0), p.get("reason", "").replace(" ", "_")[:200])
PY
}

printf "%-4s %-6s %12s %12s %8s  %s\n" rep probes "ops/s" ops "secs" "probe backends / events / drops"
total_off=0; total_on=0
for i in $(seq 1 "$reps"); do
  for mode in off on; do
    set +e
    "$bin" run -p "$work/bench.toml" -q --no-progress --set "probes.mode=\"$mode\"" \
      --set "probes.backend=\"$backend\"" -r "$work/$mode.json" >"$work/$mode.out" 2>&1
    rc=$?
    set -e
    if [ ! -s "$work/$mode.json" ]; then
      if [ "$mode" = on ] && grep -qi "bpf" "$work/$mode.out"; then
        echo "bench-probes: probes cannot attach here:"; cat "$work/$mode.out"; exit 77
      fi
      echo "bench-probes: run with probes $mode failed (exit $rc):" >&2; cat "$work/$mode.out" >&2; exit 1
    fi
    read -r r ops secs outcome < <(rate "$work/$mode.json")
    read -r st used events drops reason < <(probe_status "$work/$mode.json")
    if [ "$mode" = on ] && [ "$st" != attached ]; then
      echo "bench-probes: probes did not attach: ${reason//_/ }"; exit 77
    fi
    extra=""
    [ "$mode" = on ] && extra="$used / $events / $drops"
    printf "%-4s %-6s %12s %12s %8s  %s\n" "$i" "$mode" "$r" "$ops" "$secs" "$extra"
    [ "$outcome" = pass ] || echo "  (workload outcome: $outcome)"
    if [ "$mode" = off ]; then total_off=$(python3 -c "print($total_off + $r)"); else total_on=$(python3 -c "print($total_on + $r)"); fi
  done
done
python3 - "$total_off" "$total_on" <<'PY'
import sys
off, on = float(sys.argv[1]), float(sys.argv[2])
if off > 0:
    print(f"throughput with probes / without: {on / off:.3f} (cost {100 * (1 - on / off):.1f}%)")
PY
