#!/usr/bin/env bash
# csrc/tests/test_pool.c, the thread pool's own test, three ways:
#   1. built with the host compiler (warnings are errors) and run;
#   2. built with -fsanitize=thread and run: any ThreadSanitizer report fails it;
#   3. cross-compiled for Windows with MinGW-w64 (the Win32 pool of csrc/fl_thread.h), twice:
#      with C11 atomics and with the Interlocked fallback MSVC builds use (FL_ATOMIC_INTERLOCKED),
#      and run under wine; and built as a DLL exporting only what is marked for export (as an
#      MSVC .pyd does), which must export the two symbols threadpoolctl looks for.
#   scripts/test_pool.sh [plain|tsan|windows ...]    (default: all three)
# Needs gcc's ThreadSanitizer runtime (libtsan), gcc-mingw-w64-x86-64 and wine (Debian's wine64);
# a missing tool fails under CI=true and skips otherwise (scripts/missing_tool.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/missing_tool.sh
source scripts/missing_tool.sh

CC="${CC:-gcc}"
MINGW_CC="${MINGW_CC:-x86_64-w64-mingw32-gcc}"
flags=(-O2 -std=c11 -Wall -Wextra -Werror)
sources=(csrc/fl_pool.c csrc/tests/test_pool.c)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run_plain() {
    "$CC" "${flags[@]}" -D_GNU_SOURCE -pthread "${sources[@]}" -o "$out/test_pool"
    echo "test_pool.sh: plain ($CC)"
    "$out/test_pool" --quick
}

run_tsan() {
    if [ ! -e "$("$CC" -print-file-name=libtsan.so)" ]; then
        missing_tool "$CC has no ThreadSanitizer runtime (apt-get install libtsan2)"
    fi
    "$CC" "${flags[@]}" -g -fsanitize=thread -D_GNU_SOURCE -pthread "${sources[@]}" -o "$out/test_pool_tsan"
    echo "test_pool.sh: ThreadSanitizer ($CC -fsanitize=thread)"
    # halt_on_error: the first race ends the run with exit code 66
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" "$out/test_pool_tsan" --quick
}

find_wine() {
    local w
    for w in "${WINE:-}" wine64 wine /usr/lib/wine/wine64; do
        if [ -n "$w" ] && command -v "$w" >/dev/null 2>&1; then echo "$w"; return; fi
    done
}

run_windows() {
    if ! command -v "$MINGW_CC" >/dev/null 2>&1; then
        missing_tool "$MINGW_CC not found (apt-get install gcc-mingw-w64-x86-64)"
    fi
    local wine
    wine="$(find_wine)"
    if [ -z "$wine" ]; then
        missing_tool "wine not found (apt-get install wine64)"
    fi
    # a private wine prefix: nothing read from or left in the user's ~/.wine
    export WINEPREFIX="$out/wineprefix" WINEDEBUG=-all
    local variant
    for variant in c11 interlocked; do
        local defs=()
        if [ "$variant" = interlocked ]; then defs=(-DFL_ATOMIC_INTERLOCKED); fi
        # -static: the .exe needs no MinGW runtime DLL beside it under wine
        "$MINGW_CC" "${flags[@]}" "${defs[@]}" -static "${sources[@]}" -o "$out/test_pool_$variant.exe"
        echo "test_pool.sh: Windows ($MINGW_CC, $variant atomics) under $wine"
        "$wine" "$out/test_pool_$variant.exe" --quick
    done
    "$MINGW_CC" "${flags[@]}" -shared -Wl,--exclude-all-symbols csrc/fl_pool.c -o "$out/fl_pool.dll"
    local exports
    exports="$("${MINGW_CC%gcc}objdump" -p "$out/fl_pool.dll")"
    for sym in fl_get_num_threads fl_set_num_threads; do
        if ! grep -q "\] $sym\$" <<<"$exports"; then
            echo "test_pool.sh: the Windows DLL does not export $sym (threadpoolctl could not find the pool)" >&2
            exit 1
        fi
    done
    echo "test_pool.sh: the Windows DLL exports fl_get_num_threads and fl_set_num_threads"
    # let the prefix's wineserver finish before the prefix is removed
    local server
    server="$(dirname "$(command -v "$wine")")/wineserver"
    if [ -x "$server" ]; then "$server" -w; fi
}

modes=("$@")
if [ ${#modes[@]} -eq 0 ]; then modes=(plain tsan windows); fi
for mode in "${modes[@]}"; do
    case "$mode" in
        plain) run_plain ;;
        tsan) run_tsan ;;
        windows) run_windows ;;
        *) echo "test_pool.sh: unknown mode $mode (plain, tsan or windows)" >&2; exit 2 ;;
    esac
done
echo "test_pool.sh: ${modes[*]}: passed"
