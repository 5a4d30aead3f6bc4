#!/usr/bin/env bash
# Fetches the kernel's own KTAP parser (tools/testing/kunit/*.py: kunit.py,
# kunit_parser.py and the modules they import) from Debian's linux-source
# package, for the tests that check `gmemstress run --ktap` output with it.
#
# Only the python files are extracted (the package is ~150 MB; it is deleted
# afterwards) and cached outside any clone:
#   DEST/kunit_parser.py, DEST/kunit.py, ...
# A cache that already holds kunit_parser.py is reused without the network.
#
# Prints the directory (DEST) on stdout; progress goes to stderr. Exit 1 with
# the reason on stderr when the files cannot be had (no network, no apt).
#
# Usage: fetch-kunit-parser.sh [--dest DIR] [--package NAME]
#   --dest DIR      default: $GMS_KUNIT_DIR, else
#                   ${XDG_CACHE_HOME:-$HOME/.cache}/gmemstress/kunit
#   --package NAME  default: linux-source-6.12, else linux-source (the
#                   suite's default), whichever apt can download first
set -euo pipefail

dest=${GMS_KUNIT_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/gmemstress/kunit}
packages="linux-source-6.12 linux-source"

die() {
  echo "fetch-kunit-parser: $*" >&2
  exit 1
}
log() { echo "fetch-kunit-parser: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=${2:?--dest needs a directory}; shift 2 ;;
    --package) packages=${2:?--package needs a name}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ -s "$dest/kunit_parser.py" ]; then
  echo "$dest"
  exit 0
fi

for tool in apt-get dpkg-deb tar xz flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found (a Debian system with apt and dpkg is needed)"
done

# One fetch at a time per cache directory (parallel test runs share it).
exec 9>"$dest/.lock"
flock -w 900 9 || die "timed out waiting for the lock on $dest/.lock"
if [ -s "$dest/kunit_parser.py" ]; then
  echo "$dest"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gms-kunit.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download runs as the _apt user when it can; a private directory it
# can write avoids the "unsandboxed" warning and permission trouble.
chmod 0777 "$work"

got=""
for pkg in $packages; do
  log "downloading $pkg (the kernel source package; only tools/testing/kunit/*.py is kept)"
  if apt-get download -q "$pkg" >&2; then
    got=$pkg
    break
  fi
done
[ -n "$got" ] || die "could not download any of: $packages (no network or no such package in apt's lists; try apt-get update)"

deb=$(ls ./*.deb | head -n 1)
dpkg-deb --fsys-tarfile "$deb" | tar -x --wildcards './usr/src/linux-source-*.tar.*' ||
  die "$deb holds no usr/src/linux-source-*.tar.*"
src=$(ls usr/src/linux-source-*.tar.* | head -n 1)
tar -xf "$src" --wildcards '*/tools/testing/kunit/*.py' ||
  die "$src holds no tools/testing/kunit/*.py"
kunit=$(ls -d linux-source-*/tools/testing/kunit | head -n 1)
[ -s "$kunit/kunit_parser.py" ] || die "no kunit_parser.py in $src"
mkdir -p "$dest.tmp.$$"
cp "$kunit"/*.py "$dest.tmp.$$"/
echo "${deb##*/}" >"$dest.tmp.$$/SOURCE"
# kunit_parser.py last: its presence means the cache is complete.
for f in "$dest.tmp.$$"/*; do
  [ "${f##*/}" = kunit_parser.py ] || mv -f "$f" "$dest/"
done
mv -f "$dest.tmp.$$/kunit_parser.py" "$dest/"
rmdir "$dest.tmp.$$"
log "kunit parser from ${deb##*/} cached in $dest"
echo "$dest"
