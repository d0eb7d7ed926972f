# Cross-compiling Conduit for arm64 on an amd64 Debian 12 host (docs/testing.md, "The arm64 build"):
#   ARCH=arm64 scripts/build.sh          (or: cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake)
# Compilers from Debian's g++-aarch64-linux-gnu, libraries from the `:arm64` packages installed
# side by side with the amd64 ones (multiarch: /usr/lib/aarch64-linux-gnu, /usr/include/aarch64-linux-gnu),
# test binaries run by qemu-user (qemu-aarch64). scripts/install-deps.sh installs all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)

# find_library/find_package/find_path: the multiarch triplet makes CMake look in
# /usr/lib/aarch64-linux-gnu (libraries and their CMake packages) and /usr/include/aarch64-linux-gnu;
# the host's /usr/lib/x86_64-linux-gnu is never searched, and is ignored outright so that an arm64
# package that is missing fails the configure instead of an amd64 one being picked up and failing the link.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake /usr/include/x86_64-linux-gnu)
# libfdt-dev:arm64 cannot be installed next to libfdt-dev (amd64; not Multi-Arch: same), so
# scripts/install-deps.sh unpacks it under the cache instead: its libfdt.a is found there, its
# header (the same on every architecture) in /usr/include.
if(DEFINED ENV{CONDUIT_CACHE_DIR})
  list(APPEND CMAKE_PREFIX_PATH "$ENV{CONDUIT_CACHE_DIR}/arm64-sysroot/usr")
else()
  list(APPEND CMAKE_PREFIX_PATH "$ENV{HOME}/.cache/conduit/arm64-sysroot/usr")
endif()
# Headers that are the same on every architecture (nlohmann-json, CLI11, Boost, libfdt.h) stay under
# /usr/include and /usr/share; programs (the build's own tools) are the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# Conduit's build does not use pkg-config; should it ever, it must read the arm64 .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)

# Every executable fully static: the arm64 nested-KVM bed runs the built binaries (conduit, the test
# binaries) by path inside a bare busybox L1 that has no arm64 libc, libstdc++ or loader.
set(CMAKE_EXE_LINKER_FLAGS_INIT -static)

# ctest (and gtest_discover_tests at build time) run arm64 executables through qemu-user. -L is the
# sysroot for a dynamically linked binary's loader and libraries; the static ones do not need it.
# CONDUIT_QEMU_USER=1 in the program's environment tells a test it runs under qemu-user, for the
# few kernel behaviours qemu-user does not emulate (the test says which and skips; the arm64 bed
# runs it on a real kernel).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu -E CONDUIT_QEMU_USER=1)
