#!/usr/bin/env bash
# Fetches Debian's NEWEST amd64 kernel (image + modules) for `gmemstress lab`.
#
# Not a pinned version: the newest `linux-image-amd64` across trixie-backports
# and sid is resolved with apt, using a private apt state directory (sources,
# lists, cache) so the host's apt configuration is never touched. The unsigned
# kernel binary and the modules package are downloaded with `apt-get download`
# and unpacked to
#   DEST/<release>/vmlinuz
#   DEST/<release>/modules/        (the package's lib/modules/<release>)
# A kernel already unpacked there is reused. When Debian's servers cannot be
# reached, the newest cached kernel is used (with a warning).
#
# Prints, on stdout, shell-style lines (progress goes to stderr):
#   release=7.3.4+deb13-amd64
#   version=7.3.4-1~bpo13+1
#   kernel=DEST/7.3.4+deb13-amd64/vmlinuz
#   modules=DEST/7.3.4+deb13-amd64/modules
#
# Usage: fetch-lab-kernel.sh [--dest DIR] [--offline] [--suites "S1 S2"]
#   --dest DIR    where kernels are cached (default: $GMS_LAB_KERNEL_DIR, else
#                 ${XDG_CACHE_HOME:-$HOME/.cache}/gmemstress/kernels: outside any
#                 clone, so a machine downloads each kernel once)
#   --offline     do not contact the network; use the newest cached kernel
#   --suites      Debian suites to consider (default: "trixie-backports sid")
set -euo pipefail

# `gmemstress lab` runs a copy of this script embedded in the binary (bash -c),
# so nothing here may depend on where the script file lives.
dest=${GMS_LAB_KERNEL_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/gmemstress/kernels}
offline=0
suites="trixie-backports sid"
mirror=${GMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
flavour=amd64

die() {
  echo "fetch-lab-kernel: $*" >&2
  exit 1
}
log() { echo "fetch-lab-kernel: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=${2:?--dest needs a directory}; shift 2 ;;
    --offline) offline=1; shift ;;
    --suites) suites=${2:?--suites needs a list}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

for tool in apt-get apt-cache dpkg-deb dpkg flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found (a Debian system with apt and dpkg is needed)"
done

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# One fetch at a time per cache directory (parallel test runs share it).
exec 9>"$dest/.lock"
flock -w 900 9 || die "timed out waiting for the lock on $dest/.lock"

emit() { # release dir version
  if [ ! -s "$2/vmlinuz" ] || [ ! -d "$2/modules" ]; then
    die "cached kernel in $2 is incomplete"
  fi
  echo "release=$1"
  echo "version=$3"
  echo "kernel=$2/vmlinuz"
  echo "modules=$2/modules"
}

# The newest complete kernel in the cache, by Debian version (for offline use).
newest_cached() {
  local best_dir="" best_ver="" d v
  for d in "$dest"/*/; do
    d=${d%/}
    if [ ! -s "$d/vmlinuz" ] || [ ! -s "$d/VERSION" ] || [ ! -d "$d/modules" ]; then
      continue
    fi
    v=$(cat "$d/VERSION")
    if [ -z "$best_ver" ] || dpkg --compare-versions "$v" gt "$best_ver"; then
      best_ver=$v
      best_dir=$d
    fi
  done
  [ -n "$best_dir" ] || return 1
  emit "$(basename "$best_dir")" "$best_dir" "$best_ver"
}

if [ "$offline" = 1 ]; then
  newest_cached || die "--offline: no cached kernel under $dest (run once without --offline)"
  exit 0
fi

# Private apt state: nothing under /etc/apt or /var/lib/apt is read for sources
# or written.
apt_dir=$dest/.apt
mkdir -p "$apt_dir"/lists/partial "$apt_dir"/cache/archives/partial \
  "$apt_dir"/sources.list.d "$apt_dir"/preferences.d
: >"$apt_dir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring missing (apt-get install debian-archive-keyring)"
{
  for s in $suites; do
    echo "deb [arch=amd64 signed-by=$keyring] $mirror $s main"
  done
} >"$apt_dir/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
  -o "Dir::Etc::sourceparts=$apt_dir/sources.list.d"
  -o "Dir::Etc::preferences=$apt_dir/preferences"
  -o "Dir::Etc::preferencesparts=$apt_dir/preferences.d"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures::=amd64"
  -o "Acquire::Languages=none"
  -o "Acquire::Retries=2"
  -o "Acquire::http::Timeout=30"
  -o "Debug::NoLocking=1"
)
# As root, apt drops to the _apt user to download, which cannot write into a
# private directory; download as root instead of printing a warning.
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o "APT::Sandbox::User=root")

log "resolving the newest linux-image-$flavour in: $suites"
if ! apt-get "${apt_opts[@]}" -qq update >"$apt_dir/update.log" 2>&1 \
  || grep -qE '^(W|E): Failed to fetch' "$apt_dir/update.log"; then
  sed 's/^/  /' "$apt_dir/update.log" >&2
  if newest_cached; then
    log "warning: Debian's servers could not be reached; using the newest cached kernel above"
    exit 0
  fi
  die "could not update the package lists from $mirror and nothing is cached in $dest"
fi

# Highest version of the metapackage across all suites (pin priorities are
# ignored on purpose: backports may be newer than sid).
newest_ver=""
while read -r ver; do
  [ -n "$ver" ] || continue
  if [ -z "$newest_ver" ] || dpkg --compare-versions "$ver" gt "$newest_ver"; then
    newest_ver=$ver
  fi
done < <(apt-cache "${apt_opts[@]}" madison "linux-image-$flavour" | awk -F'|' '{gsub(/ /,"",$2); print $2}')
[ -n "$newest_ver" ] || die "linux-image-$flavour not found in: $suites"

# linux-image-amd64 (= V) depends on linux-image-<release> (= V).
meta=$(apt-cache "${apt_opts[@]}" show "linux-image-$flavour=$newest_ver")
release=$(awk -v fl="$flavour" '
  /^Depends: / && !done {
    n = split(substr($0, 10), deps, ",")
    for (i = 1; i <= n; i++) {
      split(deps[i], w, " ")
      if (w[1] ~ "^linux-image-[0-9].*-" fl "$") { print substr(w[1], 13); done = 1; break }
    }
  }' <<<"$meta")
[ -n "$release" ] || die "cannot find the kernel release in the dependencies of linux-image-$flavour=$newest_ver"
log "newest: linux-image-$flavour $newest_ver (kernel release $release)"

out=$dest/$release
if [ -s "$out/vmlinuz" ] && [ -d "$out/modules" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$newest_ver" ]; then
  log "cached: $out"
  emit "$release" "$out" "$newest_ver"
  exit 0
fi

# The unsigned image when it exists (newer packaging), else the classic one.
binary_pkg=""
for p in "linux-binary-unsigned-$release" "linux-image-$release-unsigned" "linux-binary-$release" "linux-image-$release"; do
  # (Captured first: grep -q closing the pipe early would fail under pipefail.)
  info=$(apt-cache "${apt_opts[@]}" show "$p=$newest_ver" 2>/dev/null) || continue
  # The new-style linux-image-<release> is a small metapackage without the kernel.
  size=$(awk '/^Size: / { print $2; exit }' <<<"$info")
  if [ "${size:-0}" -gt 1000000 ]; then
    binary_pkg=$p
    break
  fi
done
[ -n "$binary_pkg" ] || die "no kernel binary package found for $release ($newest_ver)"
pkgs=("$binary_pkg=$newest_ver")
if apt-cache "${apt_opts[@]}" show "linux-modules-$release=$newest_ver" >/dev/null 2>&1; then
  pkgs+=("linux-modules-$release=$newest_ver")
fi

work=$(mktemp -d "$dest/.work.XXXXXX")

trap 'rm -rf "$work"' EXIT
log "downloading ${pkgs[*]} (about 130 MB)"
# Without -q apt shows its progress (a bar on a terminal, Get: lines otherwise).
(cd "$work" && apt-get "${apt_opts[@]}" download "${pkgs[@]}") >&2 \
  || die "apt-get download ${pkgs[*]} failed"

mkdir -p "$work/root"
for deb in "$work"/*.deb; do
  log "unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$work/root"
done
moddir=$work/root/usr/lib/modules/$release
[ -d "$moddir" ] || moddir=$work/root/lib/modules/$release
[ -d "$moddir" ] || die "the packages did not contain lib/modules/$release"
# Newer packaging puts the image next to the modules; older under /boot.
vmlinuz=""
for f in "$moddir/vmlinuz.unsigned" "$moddir/vmlinuz" "$work/root/boot/vmlinuz-$release"; do
  if [ -s "$f" ]; then vmlinuz=$f; break; fi
done
[ -n "$vmlinuz" ] || die "the packages did not contain a kernel image (vmlinuz) for $release"

stage=$work/out
mkdir -p "$stage"
mv "$vmlinuz" "$stage/vmlinuz"
for f in "$moddir/config" "$work/root/boot/config-$release"; do
  if [ -f "$f" ]; then mv "$f" "$stage/config"; break; fi
done
mv "$moddir" "$stage/modules"
echo "$newest_ver" >"$stage/VERSION"
rm -rf "$out"
mv "$stage" "$out"
log "unpacked to $out"
emit "$release" "$out" "$newest_ver"
