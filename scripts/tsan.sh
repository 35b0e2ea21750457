#!/usr/bin/env bash
# Build fastlogits with ThreadSanitizer (CMake option FASTLOGITS_TSAN) into a fresh virtual
# environment and run the thread and concurrency tests under it. Exits nonzero on any
# ThreadSanitizer report (halt_on_error, exit code 66), on a test failure, and when no test ran.
#
#   scripts/tsan.sh                     # tests/test_concurrency.py and tests/test_threads.py
#   scripts/tsan.sh -- -k fork          # extra pytest arguments after --
#
# Choices, and why:
# - Python and NumPy are not instrumented; the TSan runtime must still be the first library
#   loaded, hence LD_PRELOAD of gcc's libtsan. Uninstrumented code reports nothing of its own,
#   and its locks (the GIL) are seen through the intercepted pthread calls, so no suppressions
#   are needed: there is no suppressions file, and a report about our code is never silenced.
# - die_after_fork=0: the fork test starts the pool again in the child of a threaded process,
#   which is what fl_pool.c's atfork handler is for (TSan refuses it by default).
# - allocator_may_return_null=1: tests/test_threads.py asks for a 2**40-element scratch row on
#   purpose, to check that every task failing at once is reported as MemoryError.
# - The kernels keep -O3 (Release) with -g, unstripped: TSan works at any level, and the reports
#   name functions and lines.
# - Reports go to files (log_path), printed at the end: pytest's output capture would swallow a
#   report written to stderr by a process that halts on it, and the subprocess tests' children
#   (which inherit the preload) report there too.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
# shellcheck source=scripts/missing_tool.sh
source scripts/missing_tool.sh

extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        *) echo "tsan.sh: unknown argument $1 (use -- PYTEST_ARGS)" >&2; exit 2 ;;
    esac
done

CC="${CC:-gcc}"
libtsan="$("$CC" -print-file-name=libtsan.so)"
if [ ! -e "$libtsan" ]; then
    missing_tool "$CC has no libtsan.so (apt-get install libtsan2)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="$work/venv"
start=$(date +%s)

python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "scikit-build-core>=0.10" "cython>=3.0" "numpy>=2.0" ninja pytest threadpoolctl
CC="$CC" "$py" -m pip install --quiet --no-build-isolation \
    -Cbuild-dir="$work/build" \
    -Ccmake.define.FASTLOGITS_TSAN=ON \
    -Ccmake.build-type=Release \
    -Cinstall.strip=false \
    .
echo "tsan.sh: built in $(( $(date +%s) - start )) s"

mkdir -p "$work/reports"
export TSAN_OPTIONS="halt_on_error=1:exitcode=66:die_after_fork=0:allocator_may_return_null=1:second_deadlock_stack=1:log_path=$work/reports/tsan"
export FASTLOGITS_SANITIZED=1   # tests that measure RSS skip themselves
# Run from a scratch directory so the installed (instrumented) package is imported, not src/.
cd "$work"
set +e
LD_PRELOAD="$libtsan" "$py" -m pytest "$root/tests/test_concurrency.py" "$root/tests/test_threads.py" \
    -q -p no:cacheprovider -m "not slow" "${extra[@]}"
status=$?
set -e
echo "tsan.sh: tests finished with status $status after $(( $(date +%s) - start )) s"
reports=("$work"/reports/tsan.*)
if [ -e "${reports[0]}" ]; then
    cat "${reports[@]}" >&2
    if [ "$status" = 0 ]; then status=66; fi
fi
case $status in
    0) ;;
    5) echo "tsan.sh: no test ran" >&2 ;;
    66) echo "tsan.sh: ThreadSanitizer reported a data race or other error (see above)" >&2 ;;
esac
exit $status
