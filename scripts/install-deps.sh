#!/usr/bin/env bash
# Installs everything gmemstress needs to build, test and run the lab on a
# fresh Debian 12 machine. Idempotent; safe to re-run.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
backports=/etc/apt/sources.list.d/gmemstress-backports.sources
if [ "$codename" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat >"$backports" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get update -qq
bpo=()
[ "$codename" = bookworm ] && bpo=(-t bookworm-backports)

# Build tools and libraries. Catch2 v3, libbpf 1.4 and bpftool 7.5 come from
# backports on bookworm (bookworm itself ships Catch2 v2 and libbpf 1.1).
apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates \
  clang llvm \
  libcli11-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev \
  libelf-dev zlib1g-dev \
  python3 python3-jsonschema \
  >/dev/null
apt-get install -y -qq --no-install-recommends "${bpo[@]}" \
  catch2 libbpf-dev bpftool >/dev/null

# The lab: QEMU, a static busybox for the initramfs, cpio/xz to build and
# unpack, dpkg-deb for kernel packages.
apt-get install -y -qq --no-install-recommends \
  qemu-system-x86 busybox-static cpio xz-utils kmod zstd >/dev/null

# Building the project's test kernel (scripts/build-test-kernel.sh).
apt-get install -y -qq --no-install-recommends \
  make gcc flex bison bc dwarves libssl-dev perl >/dev/null

# Headless Chromium renders the HTML report in its tests (tests/e2e/test_html.py).
apt-get install -y -qq --no-install-recommends chromium >/dev/null

# The kernel's own KTAP parser (tools/testing/kunit/*.py from Debian's
# linux-source), cached outside the clone for the KTAP tests. Fetched here, on
# the host: where those tests run inside the lab (no /dev/kvm on the host), the
# guest sees the host's cache through the shared root but has no network.
"$(dirname "$0")/fetch-kunit-parser.sh" >/dev/null ||
  echo "install-deps: the KTAP tests will skip: kunit parser unavailable (see above)" >&2

echo "install-deps: done"
