#!/usr/bin/env bash
# Installs what Conduit needs to build and test, from Debian's packages only. Idempotent: when every
# package is already installed it does nothing (no apt-get update, no network).
# The arm64 build (ARCH=arm64 scripts/build.sh, cmake/aarch64-linux-gnu.cmake) needs Debian's cross
# toolchain, the :arm64 libraries (multiarch: `dpkg --add-architecture arm64` first) and qemu-user
# 10 from bookworm-backports (bookworm's 7.2 is older than the QEMU the beds use). Two arm64
# packages cannot be installed next to their amd64 selves (not Multi-Arch: same): installing them
# REMOVES the amd64 one. busybox-static:arm64 is never installed (the x86 bed's L1 runs the amd64
# busybox); libfdt-dev:arm64 is fetched (`apt-get download`) and unpacked under
# ${CONDUIT_CACHE_DIR:-~/.cache/conduit}/arm64-sysroot, where the toolchain file finds its libfdt.a.
# The arm64 bed (tests/bed/bed.sh --arch arm64) adds qemu-system-arm 10 (bookworm-backports) and
# device-tree-compiler (FDT golden tests); the static arm64 busybox and bash of its initramfs images
# are fetched by scripts/arm64-static.sh with `apt-get download` and unpacked into the cache.
set -euo pipefail

packages=(
  cmake make g++ gcc binutils                 # toolchain (gcc/ld/objcopy also build the guest payloads)
  libfdt-dev libboost-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  googletest libgtest-dev libgmock-dev        # unit and integration tests
  liblz4-dev zlib1g-dev liblzma-dev libzstd-dev   # unpacking a bzImage's kernel on the host
  lz4 xz-utils zstd dpkg                      # the Linux-boot test unpacks Debian's kernel package
  busybox-static cpio                          # initramfs for Linux guests (tests, scripts/busybox-initramfs.sh) and the bed's L1
  clang libclang-rt-14-dev                    # libFuzzer targets (tests/fuzz): clang, libFuzzer + ASan/UBSan runtimes
  acpica-tools                                # iasl: the ACPI tables test disassembles what Conduit generates
)
# The arm64 build: cross compilers, the arm64 builds of the libraries above, qemu-user for its tests.
packages+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross device-tree-compiler)
# The vsmmu bed (bed.sh --arch arm64 --vsmmu) boots its L1 through UEFI: EDK2's QEMU_EFI.fd.
packages+=(qemu-efi-aarch64)
packages+=(libspdlog-dev:arm64 libfmt-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64
           liblz4-dev:arm64 zlib1g-dev:arm64 liblzma-dev:arm64 libzstd-dev:arm64 libboost-dev:arm64)
backports=(qemu-user qemu-system-arm)         # from bookworm-backports (QEMU 10)
sysroot="${CONDUIT_CACHE_DIR:-$HOME/.cache/conduit}/arm64-sysroot"
unpacked=(libfdt-dev:arm64)                   # into $sysroot (see above)

# An arm64 package's name with :arm64 matches only that architecture; dpkg-query without a suffix
# would also take another architecture's package of the same name (Multi-Arch: no) for this one.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_bpo=() missing_sysroot=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${backports[@]}"; do installed "$p" || missing_bpo+=("$p"); done
[ -f "$sysroot/usr/lib/aarch64-linux-gnu/libfdt.a" ] || missing_sysroot+=("${unpacked[@]}")
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bpo[@]} -eq 0 ] && [ ${#missing_sysroot[@]} -eq 0 ]; then
  echo "install-deps: all $(( ${#packages[@]} + ${#backports[@]} + ${#unpacked[@]} )) packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! dpkg --print-foreign-architectures | grep -qx arm64 &&
   [[ " ${missing[*]} ${missing_sysroot[*]} " == *:arm64\ * ]]; then
  echo "install-deps: adding the arm64 architecture (multiarch) for the arm64 build's libraries"
  $SUDO dpkg --add-architecture arm64
fi
if [ ${#missing_bpo[@]} -ne 0 ] && ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' |
    $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list > /dev/null
fi
echo "install-deps: installing ${missing[*]} ${missing_bpo[*]} ${missing_sysroot[*]}"
$SUDO apt-get update -qq
if [ ${#missing[@]} -ne 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_bpo[@]} -ne 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing_bpo[@]}"
fi
if [ ${#missing_sysroot[@]} -ne 0 ]; then
  debs=$(mktemp -d) && chmod 755 "$debs"  # readable by apt's _apt user
  (cd "$debs" && apt-get download -qq "${missing_sysroot[@]}")
  mkdir -p "$sysroot"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
  rm -rf "$debs"
  echo "install-deps: unpacked ${missing_sysroot[*]} into $sysroot"
fi
