#!/usr/bin/env bash
# Installs what Conduit needs to build and test, from Debian's packages only. Idempotent: when every
# package is already installed it does nothing (no apt-get update, no network).
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

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
