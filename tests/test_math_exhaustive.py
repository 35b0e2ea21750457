"""The vector math of csrc/simd/*.h against libm, through csrc/tests/test_math.c.

test_math.c is compiled with the system C compiler once per instruction set this CPU can run
(scalar always; AVX2 and AVX-512 when /proc/cpuinfo, or a probe, says so; NEON on AArch64)
and run:

* ``test_math_sampled``: every 1021st float32 bit pattern plus dense windows around the edges,
  all specials, f16/bf16 conversions of all 65536 patterns, load_part/store_part/hmax/hsum.
  A few seconds per ISA; always runs.
* ``test_math_exhaustive`` (marked slow): every float32 input of exp (all of [-104, 104]), of
  the x <= 0 exponentials of the row sums, flv_exp_neg and the losses' shorter
  flv_exp_neg_fast (all of [-104, 0]; their no-clamp twins over [-86, 0]), log
  (all non-negative floats) and log1p (all of [-1, inf]), and float32 -> f16/bf16 narrowing of
  every non-negative float. About 40-60 s per ISA on two cores, so by default only the best
  ISA of this CPU runs it; ``FASTLOGITS_EXHAUSTIVE=all`` runs every ISA, ``=0`` none. It
  takes the form of products of subnormal values the package's kernels take on this CPU (the
  plain instructions on AMD); the sampled run takes both on the x86 paths.

Skips cleanly when no C compiler is found. Only the exhaustive run imports the package.
"""
import os
import platform
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "csrc", "tests", "test_math.c")

ISA_FLAGS = {
    "scalar": (0, []),
    "avx2": (1, ["-mavx2", "-mfma", "-mf16c", "-mpopcnt"]),
    "avx512": (2, ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma", "-mf16c", "-mpopcnt"]),
    "neon": (3, []),
}


def _compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CC = _compiler()

_PROBE = r"""
#include <stdio.h>
int main(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    printf("%d %d\n", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt"),
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"));
#else
    printf("0 0\n");
#endif
    return 0;
}
"""


def _x86_support(tmpdir):
    """(avx2, avx512) from /proc/cpuinfo, else from a __builtin_cpu_supports probe."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    avx2 = {"avx2", "fma", "f16c", "popcnt"} <= flags
                    avx512 = avx2 and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
                    return avx2, avx512
    except OSError:
        pass
    src = os.path.join(tmpdir, "probe.c")
    exe = os.path.join(tmpdir, "probe")
    with open(src, "w") as f:
        f.write(_PROBE)
    try:
        subprocess.run([CC, src, "-o", exe], check=True, capture_output=True)
        out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split()
        return out[0] == "1", out[1] == "1"
    except (OSError, subprocess.CalledProcessError, IndexError):
        return False, False


def _supported_isas(tmpdir):
    names = ["scalar"]
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        avx2, avx512 = _x86_support(tmpdir)
        if avx2:
            names.append("avx2")
        if avx512:
            names.append("avx512")
    elif machine in ("aarch64", "arm64"):
        names.append("neon")
    return names


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{isa: path of the compiled test_math} for every ISA this CPU runs."""
    if CC is None:
        pytest.skip("no C compiler (cc/gcc/clang) found")
    if not os.path.exists(SRC):
        pytest.skip("needs the source tree (csrc/tests/test_math.c); the tests run from a copy of tests/")
    tmpdir = str(tmp_path_factory.mktemp("test_math"))
    jobs = {}  # compiled side by side: a second each, one after another they were 2.5 s of the default layer
    for isa in _supported_isas(tmpdir):
        num, flags = ISA_FLAGS[isa]
        exe = os.path.join(tmpdir, "test_math_" + isa)
        cmd = [CC, "-O2", "-std=c11", "-DFL_ISA=%d" % num, *flags, SRC, "-o", exe, "-lm", "-pthread"]
        jobs[isa] = (exe, cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = {}
    for isa, (exe, cmd, proc) in jobs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, "compiling test_math.c for %s failed:\n%s\n%s" % (isa, " ".join(cmd), err)
        out[isa] = exe
    return out


def _run(exe, args, timeout):
    res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res


ALL_ISAS = ["scalar", "avx2", "avx512", "neon"]


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_math_sampled(builds, isa):
    """Sampled; the x86 paths with each form of their products of subnormal values (the
    assist-free one, and the plain instructions of the AMD default)."""
    if isa not in builds:
        pytest.skip("%s not supported by this CPU" % isa)
    forms = [[], ["--plain-subnormals"]] if isa in ("avx2", "avx512") else [[]]
    for form in forms:
        res = _run(builds[isa], ["--quick", "--threads", "2", *form], timeout=300)
        assert res.returncode == 0, "test_math --quick %s failed for %s:\n%s\n%s" % (form, isa, res.stdout, res.stderr)
        assert "all passed" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_math_exhaustive(builds, isa):
    if isa not in builds:
        pytest.skip("%s not supported by this CPU" % isa)
    mode = os.environ.get("FASTLOGITS_EXHAUSTIVE", "best").lower()
    if mode in ("0", "no", "off", "false", ""):
        pytest.skip("FASTLOGITS_EXHAUSTIVE=0")
    best = next((i for i in ("avx512", "avx2", "neon") if i in builds), "scalar")
    if mode != "all" and isa != best:
        pytest.skip("exhaustive run only for the best ISA (%s); FASTLOGITS_EXHAUSTIVE=all runs every ISA" % best)
    from fastlogits import _core  # the form of subnormal products this CPU's kernels take

    threads = str(max(1, min(os.cpu_count() or 1, 8)))
    form = ["--plain-subnormals"] if _core.subnormal_policy() else []
    res = _run(builds[isa], ["--threads", threads, *form], timeout=1800)
    assert res.returncode == 0, "exhaustive test_math failed for %s:\n%s\n%s" % (isa, res.stdout, res.stderr)
    assert "all passed" in res.stdout
