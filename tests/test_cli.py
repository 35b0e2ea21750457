"""The real console script in subprocesses: ``python -m fastlogits`` and the ``fastlogits``
script installed next to ``sys.executable``."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlogits as fl

SCRIPT = os.path.join(os.path.dirname(sys.executable), "fastlogits")
LAUNCHERS = [pytest.param([sys.executable, "-m", "fastlogits"], id="module")]
if os.path.exists(SCRIPT):
    LAUNCHERS.append(pytest.param([SCRIPT], id="script"))


def each_case_once(cases):
    """(launcher, case) pairs: every case through ``python -m fastlogits``, the first case also
    through the installed script. Both launchers run the same ``cli.main``; one case a test
    shows the script's exit status and streams, without a second process for every case."""
    module = LAUNCHERS[0].values[0]
    pairs = [pytest.param(module, case, id=f"module-{case}") for case in cases]
    pairs += [pytest.param(other.values[0], cases[0], id=f"{other.id}-{cases[0]}") for other in LAUNCHERS[1:]]
    return pairs


def run(launcher, *args, cwd=None):
    return subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 6)) * 2).astype(np.float32)
    y = rng.integers(0, 6, 500)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    np.save(d / "xb.npy", x[:, 0])
    np.save(d / "yb.npy", (y % 2).astype(bool))
    np.savez(d / "stored.npz", logits=x, y=y)
    np.savez_compressed(d / "packed.npz", logits=x, y=y)
    (d / "junk.npy").write_bytes(b"not an array")
    np.save(d / "yfar.npy", y + 10)
    return d, x, y


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_score_table_and_json(launcher, data):
    d, x, y = data
    r = run(launcher, "score", d / "x.npy", "--target", d / "y.npy", "--json", "--k", "2")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    expected = fl.score(x, y, k=2)
    assert got.pop("task") == "multiclass" and got.pop("k") == 2
    assert got == pytest.approx(expected, rel=1e-15)
    table = run(launcher, "score", d / "x.npy", "--target", d / "y.npy", "--metrics", "nll,accuracy")
    assert table.returncode == 0 and table.stderr == ""
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["task", "nll", "accuracy"]


@pytest.mark.parametrize("npz", ["stored.npz", "packed.npz"])
def test_score_npz_members(npz, data):
    d, x, y = data
    r = run(LAUNCHERS[0].values[0], "score", d / npz, "--key", "logits", "--target-key", "y", "--json", "--chunk-rows", "64")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got.pop("task") == "multiclass" and got.pop("k") == 5
    assert got == fl.score(x, y)


def test_score_binary_threads_and_plot(data, tmp_path):
    pytest.importorskip("matplotlib")
    d, x, y = data
    png = tmp_path / "rel.png"
    r = run(LAUNCHERS[0].values[0], "score", d / "xb.npy", "--target", d / "yb.npy", "--json", "--threads", "1",
            "--plot", png)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["task"] == "binary" and got["roc_auc"] == pytest.approx(fl.score(x[:, 0], y % 2)["roc_auc"], rel=1e-15)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_parquet(data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d, x, y = data
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6), "y": y}), path)
    cols = tmp_path / "cols.parquet"
    pq.write_table(pa.table({f"c{i}": x[:, i] for i in range(6)}), cols)
    for args in (["--column", "logits"], ["--column", "logits", "--target", path]):
        r = run(LAUNCHERS[0].values[0], "score", path, *args, "--target-column", "y", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["nll"] == fl.score(x, y)["nll"]
    r = run(LAUNCHERS[0].values[0], "score", cols, "--target", d / "y.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nll"] == fl.score(x, y)["nll"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".fastlogits-")]  # scratch removed


@pytest.mark.parametrize("launcher, mode", each_case_once(["label", "proba", "log-proba", "topk", "threshold"]))
def test_predict(launcher, mode, data, tmp_path):
    d, x, _ = data
    out = tmp_path / "out.npy"
    extra = {"label": [], "proba": ["--proba"], "log-proba": ["--log-proba"], "topk": ["--topk", "3"],
             "threshold": ["--threshold", "0.7"]}[mode]
    r = run(launcher, "predict", d / "x.npy", "--out", out, "--chunk-rows", "77", *extra)
    assert r.returncode == 0, r.stderr
    got = np.load(out)
    expected = {"label": lambda: fl.predict(x), "proba": lambda: fl.softmax(x), "log-proba": lambda: fl.log_softmax(x),
                "topk": lambda: fl.topk(x, 3)[1], "threshold": lambda: fl.predict_binary(x, 0.7)}[mode]()
    np.testing.assert_array_equal(got, expected)
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]


def test_predict_parquet_output(data, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d, x, _ = data
    out = tmp_path / "p.parquet"
    r = run(LAUNCHERS[0].values[0], "predict", d / "x.npy", "--out", out, "--proba", "--chunk-rows", "100")
    assert r.returncode == 0, r.stderr
    col = pq.read_table(out).column("proba").combine_chunks()
    np.testing.assert_array_equal(col.flatten().to_numpy().reshape(-1, 6), fl.softmax(x))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_info(launcher):
    r = run(launcher, "info")
    assert r.returncode == 0 and r.stdout.startswith(f"fastlogits {fl.__version__}")
    assert "SIMD path" in r.stdout and "threads" in r.stdout


ERRORS = {
    "missing file": (["score", "{d}/nope.npy", "--target", "{d}/y.npy"], "no such file"),
    "no target": (["score", "{d}/x.npy"], "needs targets"),
    "shape mismatch": (["score", "{d}/x.npy", "--target", "{d}/xb.npy", "--task", "multiclass"], "target"),
    "target out of range": (["score", "{d}/x.npy", "--target", "{d}/yfar.npy"], "out of range"),
    "unknown metric": (["score", "{d}/x.npy", "--target", "{d}/y.npy", "--metrics", "nll,f2_score"], "valid names"),
    "unreadable npy": (["score", "{d}/junk.npy", "--target", "{d}/y.npy"], "cannot read"),
    "unknown format": (["score", "{d}/x.txt", "--target", "{d}/y.npy"], ""),
    "npz key": (["score", "{d}/stored.npz", "--key", "nope", "--target", "{d}/y.npy"], "no array named"),
    "bad k": (["score", "{d}/x.npy", "--target", "{d}/y.npy", "--k", "9", "--metrics", "top_k_accuracy"], "k:"),
    "bad option": (["score", "{d}/x.npy", "--frobnicate"], "unrecognized"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "no command": ([], "required"),
    "predict without out": (["predict", "{d}/x.npy"], "--out"),
    "predict bad dir": (["predict", "{d}/x.npy", "--out", "{d}/no/such/dir/p.npy"], "does not exist"),
    "predict bad topk": (["predict", "{d}/x.npy", "--out", "{d}/p.npy", "--topk", "7"], "--topk"),
    "bench unknown op": (["bench", "--ops", "softmax,softmix"], "--ops: unknown bench operation(s) softmix"),
    "bench no op": (["bench", "--ops", ","], "--ops: unknown bench operation(s) none named"),
}


@pytest.mark.parametrize("launcher, case", each_case_once(list(ERRORS)))
def test_errors_are_one_line_exit_2(launcher, case, data):
    d = data[0]
    (d / "x.txt").write_text("1 2 3")
    args, needle = ERRORS[case]
    r = run(launcher, *[a.format(d=d) for a in args])
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlogits: error: "), (case, r.stderr)
    assert needle in lines[0], (case, lines[0])
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (d / "p.npy").exists() and not [p for p in os.listdir(d) if p.startswith(".fastlogits-")]


def test_predict_failure_leaves_nothing(data, tmp_path):
    """A failure mid-way (here: the process is told to fail after the first chunk) removes the
    temporary output and keeps an existing destination untouched."""
    d, x, _ = data
    out = tmp_path / "out.npy"
    out.write_bytes(b"previous")
    code = textwrap.dedent(f"""
        import sys, fastlogits as fl
        from fastlogits import cli
        calls = []
        def boom(*a, **k):
            calls.append(1)
            if len(calls) > 1:
                raise ValueError("simulated failure")
            return real(*a, **k)
        real = fl.predict
        fl.predict = boom
        sys.exit(cli.main(["predict", {str(d / "x.npy")!r}, "--out", {str(out)!r}, "--chunk-rows", "100"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "fastlogits: error: simulated failure"
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]


@pytest.mark.slow
def test_score_file_over_2gb_in_bounded_memory(tmp_path):
    """Score a > 2 GB float32 .npy through the CLI; the child's peak RSS stays under 500 MB.

    The CLI runs under a fresh intermediate interpreter that reads RUSAGE_CHILDREN: Linux carries
    the parent's RSS high-water mark at fork into the child's ru_maxrss across exec, so measuring
    from this process (which has just written the file through a memmap) would count its pages."""
    n, c = 2_200_000, 250  # 2.2e9 bytes of float32
    path = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, c))
    block = np.random.default_rng(0).normal(size=(20000, c)).astype(np.float32)
    for lo in range(0, n, len(block)):
        x[lo:lo + len(block)] = block[:n - lo]
    x.flush()
    del x
    y = np.tile(np.arange(c), n // c + 1)[:n]
    np.save(tmp_path / "y.npy", y)
    assert os.path.getsize(path) > 2 * 1024**3
    code = textwrap.dedent(f"""
        import json, resource, subprocess, sys
        r = subprocess.run([sys.executable, "-m", "fastlogits", "score", {str(path)!r}, "--target",
                            {str(tmp_path / "y.npy")!r}, "--json", "--metrics", "count,nll,accuracy"],
                           capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
        print(json.dumps({{"rc": r.returncode, "out": r.stdout, "err": r.stderr, "peak": peak}}))
    """)
    try:
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        timeout=600).stdout)
    finally:
        path.unlink()
    assert res["rc"] == 0, res["err"]
    assert json.loads(res["out"])["count"] == n
    assert res["peak"] < 500 * 1024**2, f"peak RSS {res['peak'] / 1024**2:.0f} MB"


def test_npz_members_are_memory_mapped(data):
    """Stored members are mapped in place; compressed ones inflated into a scratch file, mapped."""
    from fastlogits._files import open_array

    d, x, y = data
    for name in ("stored.npz", "packed.npz"):
        a = open_array(str(d / name), key="logits")
        assert isinstance(a, np.memmap) and a.mode == "r" and a.flags.aligned
        np.testing.assert_array_equal(a, x)
        np.testing.assert_array_equal(open_array(str(d / name), key="y"), y)
