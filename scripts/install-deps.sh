#!/usr/bin/env bash
# Installs what Conduit needs to build and test, from Debian's packages only. Idempotent: when every
# package is already installed it does nothing (no apt-get update, no network).
#
# --arm64 adds what the arm64 bed needs (tests/bed/bed.sh --arch arm64, docs/testing.md): arm64 as a
# foreign architecture of dpkg (`dpkg --add-architecture arm64`, for the `:arm64` packages and
# downloads), the aarch64 cross compilers (the L1 kernel, the probe, Conduit's arm64 build),
# device-tree-compiler (FDT golden tests), and QEMU 10's qemu-system-arm and qemu-user from
# bookworm-backports. The static arm64 busybox and bash of the bed's initramfs images are NOT
# installed: busybox-static:arm64 would replace this machine's busybox-static, which the x86 bed and
# guests need; scripts/arm64-static.sh fetches them with `apt-get download` and unpacks them into the
# cache with `dpkg-deb -x`.
set -euo pipefail
arm64=0
[ "${1:-}" = --arm64 ] && arm64=1

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

# The arm64 bed's tools (--arm64); QEMU comes from bookworm-backports (bookworm's 7.2 is too old).
arm64_packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross device-tree-compiler
  # Conduit's arm64 build (multiarch). Not libfdt-dev:arm64: bookworm's libfdt-dev is not
  # Multi-Arch: same, so installing it removes libfdt-dev (amd64) and the x86 build loses libfdt.a;
  # the arm64 build must take its libfdt.a from `apt-get download libfdt-dev:arm64` + `dpkg-deb -x`.
  libspdlog-dev:arm64 libfmt-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64 liblz4-dev:arm64
  zlib1g-dev:arm64 liblzma-dev:arm64 libzstd-dev:arm64 libboost-dev:arm64)
arm64_backports=(qemu-system-arm qemu-user)
[ $arm64 = 1 ] && packages+=("${arm64_packages[@]}")

missing=() missing_bpo=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ $arm64 = 1 ]; then
  for p in "${arm64_backports[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_bpo+=("$p")
  done
fi
foreign=1
[ $arm64 = 0 ] || dpkg --print-foreign-architectures | grep -qx arm64 || foreign=0
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bpo[@]} -eq 0 ] && [ $foreign = 1 ]; then
  echo "install-deps: all ${#packages[@]} packages present$([ $arm64 = 1 ] && echo ", and the arm64 bed's")"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
[ $foreign = 1 ] || { echo "install-deps: dpkg --add-architecture arm64"; $SUDO dpkg --add-architecture arm64; }
if [ ${#missing_bpo[@]} -gt 0 ] && ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list > /dev/null
fi
echo "install-deps: installing ${missing[*]} ${missing_bpo[*]}"
$SUDO apt-get update -qq
[ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ ${#missing_bpo[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing_bpo[@]}"
