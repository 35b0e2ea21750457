#!/usr/bin/env bash
# Cross-compile csrc/tests/test_math.c for AArch64 with the NEON backend (FL_ISA=3) and run it
# under qemu-user, sampled (--stride, not exhaustive) so it finishes in about a minute.
#   scripts/cross_neon.sh [extra test_math args, e.g. --stride 4093 | --bench]
# Needs the Debian packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user. Without them it fails under
# CI=true and skips (exit 0, saying so) otherwise (scripts/missing_tool.sh). Exits nonzero when
# the build or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/missing_tool.sh
source scripts/missing_tool.sh

CC="${AARCH64_CC:-aarch64-linux-gnu-gcc}"
if ! command -v "$CC" >/dev/null 2>&1; then
    missing_tool "$CC not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
fi
QEMU="${QEMU_AARCH64:-qemu-aarch64}"
if ! command -v "$QEMU" >/dev/null 2>&1; then
    if command -v qemu-aarch64-static >/dev/null 2>&1; then QEMU=qemu-aarch64-static
    else
        missing_tool "qemu-aarch64 not found (apt-get install qemu-user)"
    fi
fi
SYSROOT="${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
exe="$out/test_math_neon"
"$CC" -O2 -std=c11 -Wall -Wextra -DFL_ISA=3 csrc/tests/test_math.c -o "$exe" -lm -pthread

args=("$@")
if [ ${#args[@]} -eq 0 ]; then args=(--stride 257); fi
echo "cross_neon.sh: $QEMU -L $SYSROOT test_math ${args[*]}"
"$QEMU" -L "$SYSROOT" "$exe" "${args[@]}"

# The kernels: every kernel source compiled for the scalar and the NEON path (warnings are
# errors, as in the package build) and compared by csrc/tests/test_kernels_isa.c.
flags=(-O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -ffp-contract=off -fno-math-errno -fno-trapping-math -Icsrc)
# The list is CMakeLists.txt's FL_KERNEL_SOURCES, read from there so that a new kernel file
# cannot be left out of this build (it was once: the link failed only here).
mapfile -t kernels < <(sed -n '/^set(FL_KERNEL_SOURCES/,/)/p' CMakeLists.txt \
    | tr ' ()' '\n\n\n' | sed -n 's|^\${CSRC}/|csrc/|p')
if [ ${#kernels[@]} -lt 2 ]; then
    echo "cross_neon.sh: could not read FL_KERNEL_SOURCES from CMakeLists.txt" >&2; exit 1
fi
objs=()
for isa in 0 3; do
    for src in "${kernels[@]}"; do
        obj="$out/$(basename "$src" .c)_$isa.o"
        "$CC" "${flags[@]}" -DFL_ISA=$isa -c "$src" -o "$obj"
        objs+=("$obj")
    done
done
"$CC" "${flags[@]}" -DFL_HAVE_NEON -c csrc/fl_dispatch.c -o "$out/fl_dispatch.o"
"$CC" "${flags[@]}" -c csrc/fl_pool.c -o "$out/fl_pool.o"
"$CC" "${flags[@]}" -DFL_HAVE_NEON -DFL_TEST_TABLE=fl_table_neon csrc/tests/test_kernels_isa.c \
    "${objs[@]}" "$out/fl_dispatch.o" "$out/fl_pool.o" -o "$out/test_kernels_neon" -lm -pthread
echo "cross_neon.sh: $QEMU -L $SYSROOT test_kernels_neon"
"$QEMU" -L "$SYSROOT" "$out/test_kernels_neon"
