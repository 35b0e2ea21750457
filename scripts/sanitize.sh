#!/usr/bin/env bash
# Build fastlogits with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# FASTLOGITS_SANITIZE) into a fresh virtual environment and run the test suite under it.
# Exits nonzero on any sanitizer report (halt_on_error) or test failure.
#
#   scripts/sanitize.sh                 # the CI subset (see below)
#   scripts/sanitize.sh --full          # the whole suite (slow tests deselected)
#   scripts/sanitize.sh -- -k softmax   # extra pytest arguments after --
#
# Choices, and why:
# - The kernels keep the project's -O3 (Release): ASan and UBSan work at any optimisation level
#   and -O0 would make the parity tests several times slower for no extra checking.
# - Python, NumPy and PyTorch are not instrumented; the ASan runtime must still be the first
#   library loaded, hence LD_PRELOAD of gcc's libasan. Interpreters leak by design (interned
#   objects, arenas kept to exit), so leak detection is off: detect_leaks=0.
# - PyTorch under ASan: its CPU build runs its own allocator and intercepts nothing that trips
#   ASan here, so the PyTorch parity tests run as well; FASTLOGITS_SANITIZE_NO_TORCH=1 hides
#   torch (those tests then skip) should a torch build misbehave under the preloaded runtime.
# - Default subset (CI, 2 cores): every test module except the exhaustive float32 sweep
#   (test_math_exhaustive, whose C-level twin is csrc/tests/test_math.c), with slow tests
#   deselected, plus the fuzz harness for FASTLOGITS_FUZZ_SECONDS (default here 60).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

full=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --full) full=1 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "sanitize.sh: unknown argument $1 (use --full, or -- PYTEST_ARGS)" >&2; exit 2 ;;
    esac
    shift
done

CC="${CC:-gcc}"
libasan="$("$CC" -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
    echo "sanitize.sh: $CC has no libasan.so (install gcc's sanitizer runtime, e.g. libasan8)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="$work/venv"
start=$(date +%s)

# System site packages give NumPy, ml_dtypes, pytest, hypothesis (and torch where installed)
# without downloading them again; anything missing comes from the package index.
python3 -m venv --system-site-packages "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "scikit-build-core>=0.10" "cython>=3.0" "numpy>=2.0" ninja
"$py" -m pip install --quiet --no-build-isolation \
    -Cbuild-dir="$work/build" \
    -Ccmake.define.FASTLOGITS_SANITIZE=ON \
    -Ccmake.build-type=Release \
    ".[test]"
echo "sanitize.sh: built in $(( $(date +%s) - start )) s"

# allocator_may_return_null: tests/test_status.py and tests/test_threads.py ask for a 2**40-element
# scratch row on purpose (the kernels' FL_ENOMEM path); without it ASan aborts on the request.
# Reports go to files (log_path) as well as killing the process: pytest's capture would hide a
# report printed to stderr, and a CLI test's child process reports where no pytest sees it.
mkdir -p "$work/reports"
export ASAN_OPTIONS="log_path=$work/reports/asan:detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="log_path=$work/reports/ubsan:halt_on_error=1:print_stacktrace=1:exitcode=87"
export FASTLOGITS_FUZZ_SECONDS="${FASTLOGITS_FUZZ_SECONDS:-60}"
export FASTLOGITS_SANITIZED=1   # tests that measure RSS skip themselves
pytest_args=(-q -p no:cacheprovider -m "not slow")
# A module that fails to import makes pytest.importorskip skip its tests. matplotlib and pyarrow
# are always hidden: their C++ code throws exceptions, and a preloaded libasan aborts on the first
# throw ("CHECK failed: asan_interceptors.cpp ... real___cxa_throw", an ASan limitation with
# LD_PRELOAD, not a finding). dask and distributed too: a LocalCluster's worker processes under
# the preloaded runtime stalled the run (the Dask layer is pure Python over the same kernels,
# which the rest of the suite covers). torch on request.
hidden=(matplotlib pyarrow dask distributed)
if [ "${FASTLOGITS_SANITIZE_NO_TORCH:-0}" = 1 ]; then hidden+=(torch); fi
for mod in "${hidden[@]}"; do
    mkdir -p "$work/hidden/$mod"
    echo "raise ImportError('$mod hidden by scripts/sanitize.sh')" > "$work/hidden/$mod/__init__.py"
done
export PYTHONPATH="$work/hidden${PYTHONPATH:+:$PYTHONPATH}"
if [ "$full" = 1 ]; then
    targets=("$root/tests")
else
    targets=("$root/tests" --ignore="$root/tests/test_math_exhaustive.py")
fi

# Run from a scratch directory so the installed (instrumented) package is imported, not src/.
cd "$work"
set +e
LD_PRELOAD="$libasan" "$py" -m pytest "${targets[@]}" "${pytest_args[@]}" "${extra[@]}"
status=$?
set -e
echo "sanitize.sh: tests finished with status $status after $(( $(date +%s) - start )) s"
reports=("$work"/reports/*)
if [ -e "${reports[0]}" ]; then
    echo "sanitize.sh: sanitizer reports:" >&2
    cat "${reports[@]}" >&2
    [ "$status" -ne 0 ] || status=88
fi
case $status in
    86) echo "sanitize.sh: AddressSanitizer reported an error (see above)" >&2 ;;
    87) echo "sanitize.sh: UndefinedBehaviorSanitizer reported an error (see above)" >&2 ;;
    88) echo "sanitize.sh: a sanitizer report from a process whose failure no test saw (see above)" >&2 ;;
esac
exit $status
