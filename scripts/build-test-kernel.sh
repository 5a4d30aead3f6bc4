#!/usr/bin/env bash
# Builds the gmemstress test kernel: a bzImage with everything built in (KVM,
# guest_memfd, BPF with BTF, 9p, the debug layer) that `gmemstress lab --kernel`
# boots without modules.
#
# Source: Debian's newest linux-source-X.Y package (default), or a kernel tree
# you point at (your series applied; built out of tree, so the tree stays clean).
# Plants: a Debian-source kernel gets lab/patches/*.patch applied (the
# test-only switches that plant known bugs behind the kvm.gms_plant= boot
# parameter; off by default, see docs/DETECTION.md). A --tree is built as it is.
# Config: allnoconfig with the fragments in lab/kconfig forced on
# (lab-boot.config, gmemstress.config, gmemstress-debug.config) plus any
# --fragment; every option a fragment asks for is checked in the result, and a
# fragment that the kernel does not honour is an error naming the option.
#
# Cached outside any clone, keyed by (source, fragments):
#   CACHE/src/<debian version>/          the unpacked linux-source tarball, with
#                                         the plants applied (.gms-patches)
#   CACHE/obj/<objkey>/                   the object tree, keyed by (source,
#                                         fragments) (kept: a rebuild after a
#                                         change to one file or to the plants
#                                         takes minutes)
#   CACHE/out/<key>/{bzImage,config,RELEASE,SOURCE,PLANTS,build.log}, keyed by
#                                         (source, fragments, plants)
# A Debian-source kernel already in CACHE/out is reused without running make;
# a --tree kernel is always handed to make, which rebuilds what changed.
#
# Prints, on stdout, shell-style lines (progress goes to stderr):
#   release=7.3.4-gms
#   kernel=CACHE/out/<key>/bzImage
#   config=CACHE/out/<key>/config
#   source=debian:linux-source-7.3=7.3.4-1~bpo13+1 | tree:/path (git HEAD, dirty)
#   key=<key>
#
# Usage: build-test-kernel.sh [--tree DIR] [--fragment FILE]... [--cache DIR]
#                             [--jobs N] [--offline] [--suites "S1 S2"]
#   --tree DIR       build this kernel tree instead of Debian's linux-source
#   --fragment FILE  one more config fragment (applied last; may repeat)
#   --sanitizers     also lab/kconfig/gmemstress-sanitizers.config (lockdep,
#                    KASAN, DEBUG_ATOMIC_SLEEP, DEBUG_LIST): slower, found
#                    bugs the other layers cannot see; its own cached kernel
#   --no-build       only print the cached kernel's lines; exit 3 when it is
#                    not built (tests use it to skip rather than build)
#   --cache DIR      default: $GMS_TEST_KERNEL_DIR, else
#                    ${XDG_CACHE_HOME:-$HOME/.cache}/gmemstress/test-kernel
#   --jobs N         make -j (default: the number of CPUs)
#   --offline        do not contact Debian's servers: use the newest cached source
#   --suites LIST    Debian suites searched for linux-source (default:
#                    "trixie-backports sid")
#   --kconfig-dir D  where the fragments are (default: lab/kconfig next to this
#                    script; `gmemstress lab` passes its own copies)
#   --patch-dir D    where the plants patches are (default: lab/patches next to
#                    this script; `gmemstress lab` passes its own copies)
set -euo pipefail

cache=${GMS_TEST_KERNEL_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/gmemstress/test-kernel}
tree=""
extra_fragments=()
jobs=$(nproc 2>/dev/null || echo 2)
offline=0
sanitizers=0
no_build=0
suites="trixie-backports sid"
mirror=${GMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
kconfig_dir=""
patch_dir=""
# Part of the cache key: a change to how the kernel is built builds it again.
recipe_version=1

die() {
  echo "build-test-kernel: $*" >&2
  exit 1
}
log() { echo "build-test-kernel: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=${2:?--tree needs a directory}; shift 2 ;;
    --fragment) extra_fragments+=("${2:?--fragment needs a file}"); shift 2 ;;
    --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --offline) offline=1; shift ;;
    --sanitizers) sanitizers=1; shift ;;
    --no-build) no_build=1; offline=1; shift ;;
    --suites) suites=${2:?--suites needs a list}; shift 2 ;;
    --kconfig-dir) kconfig_dir=${2:?--kconfig-dir needs a directory}; shift 2 ;;
    --patch-dir) patch_dir=${2:?--patch-dir needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs $jobs: expected a positive number"
if [ -z "$kconfig_dir" ]; then
  kconfig_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../lab/kconfig" 2>/dev/null && pwd) ||
    die "no lab/kconfig next to this script; pass --kconfig-dir"
fi
if [ -z "$patch_dir" ]; then
  patch_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../lab/patches" 2>/dev/null && pwd) ||
    die "no lab/patches next to this script; pass --patch-dir"
fi
patches=()
for f in "$patch_dir"/*.patch; do [ -e "$f" ] && patches+=("$f"); done
fragments=("$kconfig_dir/lab-boot.config" "$kconfig_dir/gmemstress.config"
  "$kconfig_dir/gmemstress-debug.config")
[ "$sanitizers" = 0 ] || fragments+=("$kconfig_dir/gmemstress-sanitizers.config")
for f in "${extra_fragments[@]}"; do
  [ -f "$f" ] || die "--fragment $f: no such file"
  fragments+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done
for f in "${fragments[@]}"; do
  [ -r "$f" ] || die "config fragment $f: cannot read it"
done

missing=()
for tool in make gcc flex bison bc pahole perl python3 tar xz sha256sum flock patch; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -e /usr/include/libelf.h ] || missing+=("libelf-dev")
[ -e /usr/include/openssl/ssl.h ] || missing+=("libssl-dev")
[ ${#missing[@]} -eq 0 ] ||
  die "missing build tools: ${missing[*]} (scripts/install-deps.sh installs them: flex bison dwarves libelf-dev libssl-dev bc)"

mkdir -p "$cache"/src "$cache"/obj "$cache"/out
cache=$(cd "$cache" && pwd)
if [ "$no_build" = 0 ]; then
  exec 9>"$cache/.lock"
  flock -w 3600 9 || die "timed out waiting for another build holding $cache/.lock"
fi

# --- the source ------------------------------------------------------------
debian_source() { # prints the unpacked source directory; sets source_id
  local apt_dir=$cache/.apt keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local newest_dir="" newest_ver="" d v
  newest_cached_src() {
    for d in "$cache"/src/*/; do
      d=${d%/}
      [ -s "$d/.complete" ] || continue
      v=$(cat "$d/.complete")
      if [ -z "$newest_ver" ] || dpkg --compare-versions "${v#*=}" gt "${newest_ver#*=}"; then
        newest_ver=$v
        newest_dir=$d
      fi
    done
    [ -n "$newest_dir" ]
  }
  if [ "$offline" = 1 ]; then
    if ! newest_cached_src; then
      [ "$no_build" = 0 ] || { log "not built: no linux-source unpacked under $cache/src"; exit 3; }
      die "--offline: no unpacked linux-source under $cache/src"
    fi
    source_dir=$newest_dir
    source_id="debian:$newest_ver"
    return
  fi
  mkdir -p "$apt_dir"/lists/partial "$apt_dir"/cache/archives/partial "$apt_dir"/sources.list.d \
    "$apt_dir"/preferences.d
  : >"$apt_dir/status"
  [ -r "$keyring" ] || die "$keyring missing (apt-get install debian-archive-keyring)"
  for s in $suites; do echo "deb [arch=amd64 signed-by=$keyring] $mirror $s main"; done \
    >"$apt_dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=$apt_dir/sources.list.d"
    -o "Dir::Etc::preferences=$apt_dir/preferences" -o "Dir::Etc::preferencesparts=$apt_dir/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache" -o "APT::Architecture=amd64" -o "Acquire::Languages=none"
    -o "Acquire::Retries=2" -o "Acquire::http::Timeout=30" -o "Debug::NoLocking=1")
  [ "$(id -u)" -eq 0 ] && apt_opts+=(-o "APT::Sandbox::User=root")
  log "resolving the newest linux-source in: $suites"
  if ! apt-get "${apt_opts[@]}" -qq update >"$apt_dir/update.log" 2>&1 ||
    grep -qE '^(W|E): Failed to fetch' "$apt_dir/update.log"; then
    sed 's/^/  /' "$apt_dir/update.log" >&2
    if newest_cached_src; then
      log "warning: Debian's servers could not be reached; using the cached $newest_ver"
      source_dir=$newest_dir
      source_id="debian:$newest_ver"
      return
    fi
    die "could not update the package lists from $mirror and no source is cached in $cache/src"
  fi
  local meta_ver="" ver pkg
  while read -r ver; do
    [ -n "$ver" ] || continue
    if [ -z "$meta_ver" ] || dpkg --compare-versions "$ver" gt "$meta_ver"; then meta_ver=$ver; fi
  done < <(apt-cache "${apt_opts[@]}" madison linux-source | awk -F'|' '{gsub(/ /,"",$2); print $2}')
  [ -n "$meta_ver" ] || die "linux-source not found in: $suites"
  pkg=$(apt-cache "${apt_opts[@]}" show "linux-source=$meta_ver" |
    awk '/^Depends: / { n = split(substr($0, 10), d, ","); for (i = 1; i <= n; i++) { split(d[i], w, " "); if (w[1] ~ /^linux-source-[0-9]/) { print w[1]; exit } } }')
  [ -n "$pkg" ] || die "cannot find linux-source-X.Y in the dependencies of linux-source=$meta_ver"
  ver=$(apt-cache "${apt_opts[@]}" show "$pkg" | awk '/^Version: / { print $2; exit }')
  for v in $(apt-cache "${apt_opts[@]}" madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}'); do
    dpkg --compare-versions "$v" gt "$ver" && ver=$v
  done
  source_id="debian:$pkg=$ver"
  source_dir=$cache/src/$ver
  if [ "$(cat "$source_dir/.complete" 2>/dev/null)" = "$pkg=$ver" ]; then
    log "source: $pkg $ver (cached in $source_dir)"
    return
  fi
  local work
  work=$(mktemp -d "$cache/src/.work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  log "downloading $pkg $ver (about 170 MB)"
  (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg=$ver") >&2 || die "apt-get download $pkg=$ver failed"
  dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work" --wildcards './usr/src/linux-source-*.tar.*' ||
    die "the package $pkg has no /usr/src/linux-source-*.tar.* tarball"
  local tarball
  tarball=$(ls "$work"/usr/src/linux-source-*.tar.*)
  log "unpacking $(basename "$tarball")"
  mkdir -p "$work/tree"
  tar -xf "$tarball" -C "$work/tree" --strip-components=1
  [ -f "$work/tree/Makefile" ] && [ -d "$work/tree/virt/kvm" ] || die "$tarball is not a kernel tree"
  echo "$pkg=$ver" >"$work/tree/.complete"
  rm -rf "$source_dir"
  mv "$work/tree" "$source_dir"
  rm -rf "$work"
  trap - EXIT
}

# The plants go into the unpacked Debian source in place, so that a change to
# them rebuilds only the files they touch in the same object tree. What is
# applied is kept in .gms-patches and reversed before other plants go in.
apply_plants() {
  local applied=$source_dir/.gms-patches want=$cache/.plants.want # under the lock
  : >"$want"
  [ ${#patches[@]} -eq 0 ] || cat "${patches[@]}" >"$want"
  if cmp -s "$want" "$applied" 2>/dev/null || { [ ! -s "$want" ] && [ ! -s "$applied" ]; }; then
    plants_desc=$( [ -s "$want" ] && sha256sum <"$want" | cut -c1-16 || echo none)
    return
  fi
  if [ -s "$applied" ]; then
    log "reversing the plants applied earlier to $source_dir"
    patch -d "$source_dir" -p1 -R -s -f --no-backup-if-mismatch <"$applied" >&2 ||
      die "cannot reverse the plants in $source_dir (.gms-patches); delete that directory to unpack it again"
    rm -f "$applied"
  fi
  if [ -s "$want" ]; then
    if ! patch -d "$source_dir" -p1 -s -f --dry-run <"$want" >"$cache/patch.log" 2>&1; then
      sed 's/^/  /' "$cache/patch.log" >&2
      die "the plants ($(printf '%s ' "${patches[@]##*/}")) do not apply to $source_id: port lab/patches to this kernel"
    fi
    patch -d "$source_dir" -p1 -s -f --no-backup-if-mismatch <"$want" >&2
    cp "$want" "$applied"
    log "plants applied: ${patches[*]##*/}"
  fi
  plants_desc=$( [ -s "$want" ] && sha256sum <"$want" | cut -c1-16 || echo none)
}

plants_desc=none
if [ -n "$tree" ]; then
  source_dir=$(cd "$tree" 2>/dev/null && pwd) || die "--tree $tree: no such directory"
  [ -f "$source_dir/Makefile" ] && [ -d "$source_dir/virt/kvm" ] ||
    die "--tree $source_dir: not a kernel tree (no Makefile or virt/kvm)"
  if [ -f "$source_dir/.config" ] || [ -d "$source_dir/include/config" ]; then
    die "--tree $source_dir has been configured in place; the build is out of tree (O=): run 'make mrproper' there first"
  fi
  source_id="tree:$source_dir"
  if head=$(git -C "$source_dir" rev-parse --short=12 HEAD 2>/dev/null); then
    dirty=$(git -C "$source_dir" status --porcelain --untracked-files=no 2>/dev/null | head -1)
    source_desc="$source_id (git $head${dirty:+, with uncommitted changes})"
  else
    source_desc=$source_id
  fi
else
  debian_source
  source_desc=$source_id
  if [ "$no_build" = 1 ]; then # what apply_plants would name, without patching
    plants_desc=$( [ ${#patches[@]} -gt 0 ] && cat "${patches[@]}" | sha256sum | cut -c1-16 || echo none)
  else
    apply_plants
  fi
fi

# --- the configuration -----------------------------------------------------
key=$( {
  echo "recipe=$recipe_version"
  echo "source=$source_id"
  for f in "${fragments[@]}"; do
    echo "fragment=$(basename "$f")"
    cat "$f"
  done
} | sha256sum | cut -c1-16)
obj=$cache/obj/$key
# Plants change a few files: same object tree, another output.
[ "$plants_desc" = none ] || key=$(echo "$key plants=$plants_desc" | sha256sum | cut -c1-16)
out=$cache/out/$key
mkdir -p "$obj"
kmake() { make -C "$source_dir" O="$obj" -j"$jobs" LOCALVERSION=-gms "$@"; }

if [ -z "$tree" ] && [ -s "$out/bzImage" ] && [ -s "$out/RELEASE" ]; then
  log "cached: $out ($source_desc)"
elif [ "$no_build" = 1 ]; then
  log "not built: no cached kernel for these fragments and plants in $out (run this script without --no-build; the first build takes tens of minutes)"
  exit 3
else
  # allnoconfig with every fragment forced: options a fragment does not name
  # stay off, so the kernel is only what the lab and gmemstress need.
  merged=$obj/gmemstress.allconfig
  cat "${fragments[@]}" >"$merged"
  if [ ! -f "$obj/.config" ] || ! cmp -s "$merged" "$obj/.allconfig.applied"; then
    log "configuring: allnoconfig + $(for f in "${fragments[@]}"; do printf '%s ' "$(basename "$f")"; done)"
    kmake -s KCONFIG_ALLCONFIG="$merged" allnoconfig >"$obj/config.log" 2>&1 ||
      { tail -20 "$obj/config.log" >&2; die "make allnoconfig failed (log: $obj/config.log)"; }
    cp "$merged" "$obj/.allconfig.applied"
  fi
  # Every option a fragment sets must have that value now: Kconfig drops an
  # option whose dependencies are unmet without a word.
  unmet=()
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=n) opt=${line%%=*}
        grep -qE "^$opt=" "$obj/.config" && unmet+=("$line (is $(grep -E "^$opt=" "$obj/.config" | cut -d= -f2))") ;;
      CONFIG_*=*) opt=${line%%=*}
        grep -qxF "$line" "$obj/.config" ||
          unmet+=("$line (is $(grep -E "^$opt=" "$obj/.config" | cut -d= -f2- || echo unset))") ;;
    esac
  done < <(grep -hE '^CONFIG_[A-Za-z0-9_]+=' "${fragments[@]}")
  if [ ${#unmet[@]} -gt 0 ]; then
    printf '  %s\n' "${unmet[@]}" >&2
    die "this kernel does not honour ${#unmet[@]} option(s) of the fragments (above): a missing dependency or an option the source does not have"
  fi

  log "building bzImage with make -j$jobs in $obj (the first build takes tens of minutes on 2 CPUs)"
  start=$(date +%s)
  # Progress: one line per 250 compiled objects, with the elapsed time (no
  # carriage returns: this is read in CI logs too).
  set +e
  kmake bzImage 2>&1 | tee "$obj/build.log" | awk -v start="$start" '
    /^  (CC|AS|LD|AR|BTF|GEN)/ { n++; if (n % 250 == 0) { cmd = "date +%s"; cmd | getline now; close(cmd);
        printf "build-test-kernel: %d steps, %d s\n", n, now - start > "/dev/stderr"; fflush("/dev/stderr") } }
    /error:|Error [0-9]/ { print > "/dev/stderr" }'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    tail -30 "$obj/build.log" >&2
    die "make bzImage failed (exit $status; full log: $obj/build.log)"
  fi
  release=$(cat "$obj/include/config/kernel.release")
  stage=$(mktemp -d "$cache/out/.stage.XXXXXX")
  cp "$obj/arch/x86/boot/bzImage" "$stage/bzImage"
  cp "$obj/.config" "$stage/config"
  cp "$obj/build.log" "$stage/build.log"
  echo "$release" >"$stage/RELEASE"
  echo "$source_desc" >"$stage/SOURCE"
  echo "$plants_desc" >"$stage/PLANTS"
  rm -rf "$out"
  mv "$stage" "$out"
  log "built $release in $(($(date +%s) - start)) s: $out/bzImage"
fi

echo "release=$(cat "$out/RELEASE")"
echo "kernel=$out/bzImage"
echo "config=$out/config"
echo "source=$(cat "$out/SOURCE")"
echo "plants=$(cat "$out/PLANTS" 2>/dev/null || echo none)"
echo "key=$key"
