"""Fault injection for the command line and its file readers (issue 16): real mechanisms only.

- a full disk: a real 8 MB tmpfs (skipped, with the reason, where mounting is impossible) and,
  always available, RLIMIT_FSIZE set in the child (``ulimit -f``: writes fail with EFBIG);
- real signals (SIGTERM, SIGHUP, SIGINT) sent to a running CLI subprocess;
- crafted ``.npy``, ``.npz`` (stored and deflated) and Parquet files, and a corpus of malformed
  ones fed to every reader;
- a symlink planted at the temporary output's name between its creation and its use (the
  name generator is wrapped, so the race is deterministic);
- memory measured from the child's /proc/PID/status (RssAnon sampled while it runs).

Every test here failed on the code before the fix (see the CHANGELOG entry of issue 16).
"""
import contextlib
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest

import fastlogits as fl

CLI = [sys.executable, "-m", "fastlogits"]


def cli(*args, preexec_fn=None, env=None, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn, env=env)


def run_main(capsys, *args):
    """The command line in this process (``cli.main``), for the cases where no real process
    boundary is needed: its status and what it printed, as a CompletedProcess."""
    from fastlogits import cli as cli_module

    capsys.readouterr()
    try:
        status = cli_module.main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def assert_one_line_error(r, *words, code=2):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlogits: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def leftovers(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith(".fastlogits-") or p.endswith(".part"))


def pyarrow():
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet  # noqa: F401

    return pa


def write_parquet(path, columns, **kwargs):
    pa = pyarrow()
    pa.parquet.write_table(pa.table(columns), path, **kwargs)


# ------------------------------------------------------------------------------ silent wrong results

def test_parquet_list_rows_of_uneven_length_are_refused(tmp_path):
    """Lengths 4, 3, 5 total 12 = 3 x 4: once re-cut silently into three rows of 4."""
    pa = pyarrow()
    path = tmp_path / "uneven.parquet"
    write_parquet(path, {"logits": pa.array([[0.0, 1, 2, 3], [4.0, 5, 6], [7.0, 8, 9, 10, 11]], pa.list_(pa.float32()))})
    r = cli("predict", path, "--out", tmp_path / "o.npy")
    assert_one_line_error(r, "row 1 holds 3 values", "the first row 4")
    assert sorted(os.listdir(tmp_path)) == ["uneven.parquet"]


def test_parquet_null_list_row_is_named_null(tmp_path, capsys):
    pa = pyarrow()
    path = tmp_path / "nullrow.parquet"
    write_parquet(path, {"logits": pa.array([[0.0, 1.0], None, [2.0, 3.0]], pa.list_(pa.float32()))})
    assert_one_line_error(run_main(capsys, "predict", path, "--out", tmp_path / "o.npy"), "row 1 is null")
    fixed = tmp_path / "nullfixed.parquet"
    write_parquet(fixed, {"logits": pa.array([[0.0, 1.0], [2.0, 3.0], None], pa.list_(pa.float32(), 2))})
    assert_one_line_error(run_main(capsys, "predict", fixed, "--out", tmp_path / "o.npy"), "row 2 is null")


def test_parquet_columns_take_their_common_type(tmp_path):
    """An int8 column beside a float64 one: 300.5 and 4e10 were squeezed into int8."""
    pa = pyarrow()
    a = np.array([1, -2, 3], np.int8)
    b = np.array([300.5, 4e10, -7.25])
    path = tmp_path / "cols.parquet"
    write_parquet(path, {"a": pa.array(a), "b": pa.array(b)})
    out = tmp_path / "lp.npy"
    r = cli("predict", path, "--out", out, "--log-proba")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), fl.log_softmax(np.stack([a, b], axis=1).astype(np.float64)))


def test_parquet_nulls_refused_in_integer_columns_nan_in_float_columns(tmp_path, capsys):
    pa = pyarrow()
    ints = tmp_path / "ints.parquet"
    write_parquet(ints, {"a": pa.array([1, None, 3], pa.int64()), "b": pa.array([0.5, 1.5, 2.5])})
    assert_one_line_error(run_main(capsys, "predict", ints, "--out", tmp_path / "o.npy"), "'a'", "row 1 is null")
    floats = tmp_path / "floats.parquet"
    write_parquet(floats, {"a": pa.array([1.0, None, 3.0]), "b": pa.array([0.5, 1.5, 2.5])})
    r = run_main(capsys, "predict", floats, "--out", tmp_path / "lp.npy", "--log-proba")
    assert r.returncode == 0, r.stderr
    want = fl.log_softmax(np.array([[1.0, 0.5], [np.nan, 1.5], [3.0, 2.5]]))
    np.testing.assert_array_equal(np.load(tmp_path / "lp.npy"), want)  # the null is NaN
    int_lists = tmp_path / "intlists.parquet"
    write_parquet(int_lists, {"l": pa.array([[1, 2], [3, None]], pa.list_(pa.int32()))})
    assert_one_line_error(run_main(capsys, "predict", int_lists, "--out", tmp_path / "o.npy"), "row 1 holds a null value")


def _npz_with_member(path, name, member, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr(name, member)


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_npz_member_claiming_more_rows_than_it_holds(tmp_path, compress):
    """A consistent zip (right CRC) whose .npy header claims 11 rows over 10 rows of data:
    the mapping once ran past the member into the zip's own headers."""
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    member = _npy_bytes(x).replace(b"(10, 4)", b"(11, 4)")
    path = tmp_path / "lie.npz"
    _npz_with_member(path, "logits.npy", member, compress)
    assert_one_line_error(cli("predict", path, "--out", tmp_path / "o.npy"), "(11, 4)", "160 bytes")
    assert sorted(os.listdir(tmp_path)) == ["lie.npz"]


def test_npz_flipped_data_byte_fails_the_crc(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "flip.npz"
    np.savez(path, logits=x)
    raw = bytearray(path.read_bytes())
    pos = raw.index(x.tobytes()) + 17
    raw[pos] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception):  # NumPy refuses it too
        np.load(path)["logits"]
    assert_one_line_error(cli("predict", path, "--out", tmp_path / "o.npy"), "CRC")


def test_unaligned_stored_member_is_mapped_aligned_from_a_scratch_copy(tmp_path):
    """A member name of odd length puts the data at an odd offset: mapped as is, every user of
    the array (fl.score) would copy all of it into memory; it is read through an anonymous,
    aligned scratch copy instead."""
    from fastlogits._files import open_array

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "odd.npz"
    np.savez(path, x=x)
    a = open_array(str(path))
    assert isinstance(a, np.memmap) and a.flags.aligned
    np.testing.assert_array_equal(a, x)
    assert sorted(os.listdir(tmp_path)) == ["odd.npz"]


def _negative_bit_tensor():
    torch = pytest.importorskip("torch")
    z = torch.tensor([[1.0 + 2.0j, 3.0 - 1.0j, -0.5 + 0.25j], [2.0 - 3.0j, 0.0 + 1.0j, 1.5 - 0.5j]])
    t = z.conj().imag  # a lazily negated view: the stored values are the opposite
    assert t.is_neg()
    return t, t.resolve_neg().numpy().copy()


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "predict", "logsumexp", "sigmoid"])
def test_torch_negative_bit_is_resolved(name):
    t, ref = _negative_bit_tensor()
    np.testing.assert_array_equal(getattr(fl, name)(t), getattr(fl, name)(ref))


def test_torch_negative_bit_is_resolved_in_losses_and_scoring():
    t, ref = _negative_bit_tensor()
    y = np.array([1, 0])
    assert fl.cross_entropy(t, y) == fl.cross_entropy(ref, y)
    assert fl.score(t, y) == fl.score(ref, y)
    assert fl.bce_with_logits(t, (ref > 0).astype(np.float32)) == fl.bce_with_logits(ref, (ref > 0).astype(np.float32))


@pytest.mark.parametrize("temperature", [1e38, 3.5e38, 1e39, 1e300, 1e-38, 1e-40, 1e-46, 1e-300])
def test_score_temperature_outside_float32_range(isa, temperature):
    """float32 logits took 1/T in float32: NaN for T beyond the normal float32 range."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 7)).astype(np.float32) * 3
    y = rng.integers(0, 7, 64)
    got = fl.score(x, y, temperature=temperature)
    want = fl.score(x.astype(np.float64), y, temperature=temperature)
    for key, value in want.items():
        assert not (isinstance(value, float) and np.isnan(value)), (key, value)
        assert got[key] == pytest.approx(value, rel=1e-6), (key, got[key], value)


def test_cli_score_extreme_temperature(tmp_path, capsys):
    x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    y = np.arange(50) % 4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for t in ("1e39", "1e-40"):
        r = run_main(capsys, "score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--json", "--temperature", t)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["nll"] == pytest.approx(fl.score(x.astype(np.float64), y, temperature=float(t))["nll"], rel=1e-6)


def test_bce_infinite_weight_follows_pytorch(isa):
    torch = pytest.importorskip("torch")
    x = np.array([0.0, 2.0, -3.0, 50.0, 1e4, -20.0], np.float32)
    y = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0], np.float32)
    for w in (np.inf, np.array([np.inf, 1.0, np.inf, 2.0, np.inf, np.inf], np.float32)):
        want = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(x), torch.from_numpy(y), weight=torch.as_tensor(w), reduction="none").numpy()
        assert np.isinf(want).sum() >= 2
        for dt in (np.float32, np.float64):
            got = fl.bce_with_logits(x.astype(dt), y.astype(dt), weight=w, reduction="none")
            np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    assert fl.bce_with_logits(x[:1], y[:1], weight=np.inf) == np.inf
    # a zero weight still masks an infinite logit, and a NaN weight still propagates
    masked = fl.bce_with_logits(np.array([np.inf, -np.inf, 1.0], np.float32), np.array([0.0, 1.0, 1.0], np.float32),
                                weight=np.array([0.0, 0.0, np.nan], np.float32), reduction="none")
    assert masked[0] == 0.0 and masked[1] == 0.0 and np.isnan(masked[2])


def test_cross_entropy_zero_classes_probability_targets_is_nan():
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.cross_entropy(torch.empty(3, 0), torch.empty(3, 0)).item()
    assert np.isnan(want)
    assert np.isnan(fl.cross_entropy(np.empty((3, 0), np.float32), np.empty((3, 0), np.float32)))
    loss, grad = fl.cross_entropy_and_grad(np.empty((3, 0)), np.empty((3, 0)))
    assert np.isnan(loss) and grad.shape == (3, 0)


def test_predict_refuses_to_overwrite_its_input(tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(2).normal(size=(20, 5)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    before = path.read_bytes()
    os.symlink(path, tmp_path / "link.npy")
    os.link(path, tmp_path / "hard.npy")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for out in (path, tmp_path / "sub" / ".." / "x.npy", "x.npy", tmp_path / "link.npy", tmp_path / "hard.npy"):
        assert_one_line_error(run_main(capsys, "predict", path, "--out", out, "--proba"), "is the input file")
    assert_one_line_error(run_main(capsys, "predict", "link.npy", "--out", path), "is the input file")
    assert path.read_bytes() == before and not leftovers(tmp_path)


# ------------------------------------------------------------------------------ a full disk

@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 8 MB tmpfs (needs root and a mount namespace that allows it)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); the RLIMIT_FSIZE tests cover a full disk")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the RLIMIT_FSIZE tests cover a full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(directory, leave):
    """Fill the filesystem of ``directory`` up to ``leave`` free bytes."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(directory, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_full_tmpfs_predict_output(small_tmpfs, tmp_path):
    x = np.random.default_rng(3).normal(size=(3000, 1000)).astype(np.float32)  # 12 MB of output
    np.save(tmp_path / "x.npy", x)
    out = small_tmpfs / "out.npy"
    out.write_bytes(b"previous")
    r = cli("predict", tmp_path / "x.npy", "--out", out, "--proba")
    assert_one_line_error(r, str(out), "No space left on device")
    assert out.read_bytes() == b"previous" and not leftovers(small_tmpfs)


def test_full_tmpfs_parquet_scratch(small_tmpfs, tmp_path):
    """The Parquet input's scratch copy (12 MB) fits neither beside it nor in TMPDIR."""
    pa = pyarrow()
    x = np.zeros((3000, 1000), np.float32)
    path = small_tmpfs / "in.parquet"
    write_parquet(path, {"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 1000)})
    np.save(tmp_path / "y.npy", np.zeros(3000, np.int64))
    env = dict(os.environ, TMPDIR=str(small_tmpfs))
    r = cli("score", path, "--target", tmp_path / "y.npy", env=env)
    assert_one_line_error(r, "scratch copy", "No space left on device")
    assert sorted(os.listdir(small_tmpfs)) == ["in.parquet"]


def test_full_tmpfs_deflated_npz_scratch(small_tmpfs, tmp_path):
    x = np.zeros((3000, 1000), np.float32)
    path = small_tmpfs / "in.npz"
    np.savez_compressed(path, logits=x)
    env = dict(os.environ, TMPDIR=str(small_tmpfs))
    r = cli("predict", path, "--out", tmp_path / "o.npy", env=env)
    assert_one_line_error(r, "scratch copy", "No space left on device")
    assert sorted(os.listdir(small_tmpfs)) == ["in.npz"] and not (tmp_path / "o.npy").exists()
    # with room in TMPDIR the scratch copy goes there instead
    r = cli("predict", path, "--out", tmp_path / "o.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.zeros(3000, np.int64))


def test_full_tmpfs_plot(small_tmpfs, tmp_path):
    pytest.importorskip("matplotlib")
    x = np.random.default_rng(4).normal(size=(200, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(200) % 3)
    png = small_tmpfs / "rel.png"
    png.write_bytes(b"previous plot")
    _fill(small_tmpfs, 0)
    r = cli("score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--plot", png)
    assert_one_line_error(r, str(png), "No space left on device")
    assert png.read_bytes() == b"previous plot" and not leftovers(small_tmpfs)


def _file_size_limit(nbytes):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


@pytest.mark.parametrize("ext", ["npy", "parquet"])
def test_file_size_limit_predict(tmp_path, ext):
    """RLIMIT_FSIZE (``ulimit -f``): the writes fail with EFBIG, like a full disk."""
    if ext == "parquet":
        pyarrow()
    x = np.random.default_rng(5).normal(size=(2000, 500)).astype(np.float32)  # 4 MB of output
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"out.{ext}"
    out.write_bytes(b"previous")
    r = cli("predict", tmp_path / "x.npy", "--out", out, "--proba", preexec_fn=_file_size_limit(1 << 20))
    assert_one_line_error(r, str(out), "File too large")
    assert out.read_bytes() == b"previous" and not leftovers(tmp_path)


def test_file_size_limit_plot(tmp_path):
    """``--plot`` once wrote straight into the destination: a partial PNG replaced the old one."""
    pytest.importorskip("matplotlib")
    x = np.random.default_rng(6).normal(size=(200, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(200) % 3)
    png = tmp_path / "rel.png"
    png.write_bytes(b"previous plot")
    r = cli("score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--plot", png,
            preexec_fn=_file_size_limit(4096))
    assert_one_line_error(r, str(png), "File too large")
    assert png.read_bytes() == b"previous plot" and not leftovers(tmp_path)


# ------------------------------------------------------------------------------ signals

def _scratch_or_part_open(pid, *directories):
    """Whether process ``pid`` has a temporary file of ours in one of ``directories``: a named
    one (``.part``, ``.fastlogits-*``) or an anonymous one (open or mapped, "(deleted)")."""
    for d in directories:
        if leftovers(d):
            return True
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return any(str(d) in t and "(deleted)" in t for d in directories for t in fds + maps.splitlines())


def _default_signals():
    """In the child before exec: the signals the tests send get their default disposition. A
    test run started under nohup (or by a shell that ignores SIGHUP) hands its children an
    ignored SIGHUP, which the CLI rightly keeps ignoring, and the SIGHUP cases then saw exit 0."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _signal_when(cmd, sig, ready, timeout=60):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_default_signals)
    deadline = time.monotonic() + timeout
    try:
        while p.poll() is None and not ready(p.pid):
            assert time.monotonic() < deadline, "the command never reached the point to interrupt"
            time.sleep(0.001)
        assert p.poll() is None, ("finished before the signal", p.returncode, p.stderr.read())
        p.send_signal(sig)
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


SIGNALS = [pytest.param(getattr(signal, n), id=n) for n in ("SIGTERM", "SIGHUP", "SIGINT")]


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_during_predict_leaves_nothing(tmp_path, sig):
    x = np.random.default_rng(7).normal(size=(200_000, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npy"
    out.write_bytes(b"previous")
    cmd = [*CLI, "predict", str(tmp_path / "x.npy"), "--out", str(out), "--proba", "--chunk-rows", "1"]
    r = _signal_when(cmd, sig, lambda pid: bool(leftovers(tmp_path)))
    assert_one_line_error(r, f"interrupted by {signal.Signals(sig).name}", code=128 + sig)
    assert sorted(os.listdir(tmp_path)) == ["out.npy", "x.npy"] and out.read_bytes() == b"previous"


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_during_parquet_conversion_leaves_nothing(tmp_path, sig):
    pa = pyarrow()
    x = np.random.default_rng(8).normal(size=(200_000, 16)).astype(np.float32)
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.parquet"
    write_parquet(path, {"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 16)}, row_group_size=2000)
    out = tmp_path / "out.npy"
    cmd = [*CLI, "predict", str(path), "--out", str(out), "--proba", "--chunk-rows", "1"]
    r = _signal_when(cmd, sig, lambda pid: _scratch_or_part_open(pid, data, tmp_path))
    assert_one_line_error(r, f"interrupted by {signal.Signals(sig).name}", code=128 + sig)
    assert os.listdir(data) == ["x.parquet"] and sorted(os.listdir(tmp_path)) == ["data"]


def test_a_signal_inside_a_critical_section_is_raised_at_its_end():
    """A signal while the temporary file is being created or renamed does not cut that short:
    it is raised when the section ends (whichever thread the OS delivered it to)."""
    from fastlogits._signals import Interrupted, deferred_signals, signals_as_exceptions

    done, before = [], signal.getsignal(signal.SIGTERM)
    with signals_as_exceptions():
        with pytest.raises(Interrupted) as info:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                for i in range(1000):  # bytecodes: where the handler runs
                    done.append(i)
        assert info.value.signum == signal.SIGTERM and len(done) == 1000
    assert signal.getsignal(signal.SIGTERM) == before


def test_failed_final_rename_leaves_nothing(tmp_path, capsys):
    x = np.random.default_rng(9).normal(size=(30, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "dir.npy").mkdir()
    assert_one_line_error(run_main(capsys, "predict", tmp_path / "x.npy", "--out", tmp_path / "dir.npy"), "is a directory")
    long_name = tmp_path / ("a" * 300 + ".npy")
    assert_one_line_error(run_main(capsys, "predict", tmp_path / "x.npy", "--out", long_name), "File name too long")
    assert sorted(os.listdir(tmp_path)) == ["dir.npy", "x.npy"] and os.listdir(tmp_path / "dir.npy") == []


def test_failed_rename_in_process_removes_the_temporary(tmp_path, monkeypatch):
    """os.replace itself fails (as on a read-only bind mount): the .part goes too."""
    from fastlogits import cli as cli_module

    x = np.random.default_rng(10).normal(size=(30, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)

    def failing_replace(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert cli_module.main(["predict", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npy")]) == 2
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_absurd_npy_dimensions(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616, 4), }"
    path = tmp_path / "absurd.npy"
    path.write_bytes(_raw_npy(header, b"\0" * 64))
    assert_one_line_error(cli("predict", path, "--out", tmp_path / "o.npy"), "truncated or corrupt", "18446744073709551616")


def test_parquet_struct_column(tmp_path):
    pa = pyarrow()
    path = tmp_path / "struct.parquet"
    write_parquet(path, {"s": pa.array([{"a": 1, "b": 2.0}, {"a": 3, "b": 4.0}])})
    assert_one_line_error(cli("predict", path, "--out", tmp_path / "o.npy"), "'s'", "struct")


# ------------------------------------------------------------------------------ bounded memory

def _run_sampling_memory(cmd, timeout=600, **kwargs):
    """Run ``cmd``; return (CompletedProcess, peak RssAnon, peak VmHWM) in bytes, sampled from
    /proc/PID/status every millisecond while it runs (its own anonymous memory: the heap and
    NumPy buffers, not the file pages it maps). Skips on a sanitizer build (scripts/sanitize.sh),
    where the shadow memory and the quarantine of freed blocks are anonymous memory too."""
    if os.environ.get("FASTLOGITS_SANITIZED") == "1":
        pytest.skip("memory bound not measurable under AddressSanitizer (shadow memory, quarantine)")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    peak_anon = peak_hwm = 0
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda s=s, acc=acc: acc.append(s.read()))
               for s, acc in ((p.stdout, out_chunks), (p.stderr, err_chunks))]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            peak_anon = max(peak_anon, int(fields["RssAnon"].split()[0]) * 1024)
            peak_hwm = max(peak_hwm, int(fields["VmHWM"].split()[0]) * 1024)
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.001)
    if p.poll() is None:
        p.kill()
    p.wait()
    for t in readers:
        t.join()
    return subprocess.CompletedProcess(cmd, p.returncode, "".join(out_chunks), "".join(err_chunks)), peak_anon, peak_hwm


def _npy_header(shape, dtype):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _sparse_npy(path, shape, dtype=np.float32):
    """A .npy of zeros created sparse (no data written: the holes read as zeros)."""
    header = _npy_header(shape, dtype)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + int(np.prod(shape)) * np.dtype(dtype).itemsize)


def test_predict_sizes_chunks_in_bytes(tmp_path):
    """400 x 128256 float32 (205 MB): 65536-row chunks held the whole output in memory."""
    _sparse_npy(tmp_path / "x.npy", (400, 128256))
    out = tmp_path / "p.npy"
    r, anon, _ = _run_sampling_memory([*CLI, "predict", str(tmp_path / "x.npy"), "--out", str(out), "--proba"])
    assert r.returncode == 0, r.stderr
    try:
        p = np.load(out, mmap_mode="r")
        assert p.shape == (400, 128256) and p[399, 5] == np.float32(1 / 128256)
    finally:
        out.unlink()
    print(f"peak RssAnon {anon / 2**20:.0f} MB")
    assert anon < 150 * 2**20, f"peak RssAnon {anon / 2**20:.0f} MB"


@pytest.mark.slow
def test_predict_3000_by_128256_in_bounded_memory(tmp_path):
    """The issue's target: 3000 x 128256 float32 (1.5 GB), anonymous memory under 300 MB; the
    input's pages are released behind the cursor, so the peak resident size stays low too."""
    _sparse_npy(tmp_path / "x.npy", (3000, 128256))
    out = tmp_path / "p.npy"
    try:
        r, anon, hwm = _run_sampling_memory([*CLI, "predict", str(tmp_path / "x.npy"), "--out", str(out), "--proba"])
        assert r.returncode == 0, r.stderr
        assert os.path.getsize(out) > 1.5e9
    finally:
        for p in (out, tmp_path / "x.npy"):
            with contextlib.suppress(OSError):
                p.unlink()
    print(f"peak RssAnon {anon / 2**20:.0f} MB, peak RSS {hwm / 2**20:.0f} MB")
    assert anon < 300 * 2**20, f"peak RssAnon {anon / 2**20:.0f} MB"
    assert hwm < 600 * 2**20, f"peak RSS {hwm / 2**20:.0f} MB"


def _deflated_zero_npz(path, shape):
    """An .npz whose one member (deflated) is a float32 array of zeros, written in pieces."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("logits.npy", "w", force_zip64=True) as m:
            m.write(_npy_header(shape, np.float32))
            row = bytes(4 * int(np.prod(shape[1:])))
            for _ in range(shape[0]):
                m.write(row)


def test_deflated_npz_member_is_inflated_in_bounded_memory(tmp_path):
    """A 256 MB member in a 0.3 MB file: it was inflated whole into memory."""
    _deflated_zero_npz(tmp_path / "z.npz", (512, 131072))
    assert os.path.getsize(tmp_path / "z.npz") < 2**20
    np.save(tmp_path / "y.npy", np.zeros(512, np.int64))
    r, anon, _ = _run_sampling_memory([*CLI, "score", str(tmp_path / "z.npz"), "--target", str(tmp_path / "y.npy"),
                                       "--json", "--metrics", "count,nll"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nll"] == pytest.approx(np.log(131072))
    print(f"peak RssAnon {anon / 2**20:.0f} MB")
    assert anon < 150 * 2**20, f"peak RssAnon {anon / 2**20:.0f} MB"


def test_parquet_read_in_bounded_batches(tmp_path):
    """One 128 MB row group: memory once grew with the row group. The file is written by a
    child process, so that its 128 MB and the encoder's buffers are not the test process's
    (the default layer's peak memory)."""
    pyarrow()
    n, c = 1024, 32768
    path = tmp_path / "one_group.parquet"
    writer = textwrap.dedent(f"""
        import numpy as np, pyarrow as pa, pyarrow.parquet as pq
        x = np.broadcast_to(np.arange({c}, dtype=np.float32) % 7, ({n}, {c}))
        col = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), {c})
        pq.write_table(pa.table({{"logits": col}}), {str(path)!r}, row_group_size={n},
                       compression="none", use_dictionary=False)
    """)
    subprocess.run([sys.executable, "-c", writer], check=True)
    np.save(tmp_path / "y.npy", np.zeros(n, np.int64))
    r, anon, _ = _run_sampling_memory([*CLI, "score", str(path), "--target", str(tmp_path / "y.npy"), "--json",
                                       "--metrics", "count,accuracy"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == 0.0
    print(f"peak RssAnon {anon / 2**20:.0f} MB")
    assert anon < 200 * 2**20, f"peak RssAnon {anon / 2**20:.0f} MB"


# ------------------------------------------------------------------------------ security

def test_symlink_planted_at_the_temporary_name(tmp_path, monkeypatch):
    """Between mkstemp and the writes an attacker who can write the output directory replaces
    the temporary file by a symlink to a file outside it: that file once received the output."""
    from fastlogits import cli as cli_module

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    work = tmp_path / "shared"
    work.mkdir()
    x = np.random.default_rng(11).normal(size=(20, 3)).astype(np.float32)
    np.save(work / "x.npy", x)
    real_mkstemp = tempfile.mkstemp

    def racing_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.remove(name)  # the attacker's move, at the worst moment
        os.symlink(victim, name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", racing_mkstemp)
    status = cli_module.main(["predict", str(work / "x.npy"), "--out", str(work / "out.npy"), "--proba"])
    assert victim.read_bytes() == b"precious"
    assert status == 2 and not os.path.lexists(work / "out.npy")
    assert sorted(os.listdir(work)) == ["x.npy"]


def test_symlink_planted_by_a_racing_thread(tmp_path):
    """The same attack by a thread watching the directory: whenever it wins the race, the
    victim must stay intact (the output is written through mkstemp's descriptor only)."""
    from fastlogits import cli as cli_module

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    work = tmp_path / "shared"
    work.mkdir()
    np.save(work / "x.npy", np.random.default_rng(12).normal(size=(2000, 50)).astype(np.float32))
    stop = threading.Event()

    def attacker():
        while not stop.is_set():
            for name in os.listdir(work):
                if name.endswith(".part") and not os.path.islink(work / name):
                    with contextlib.suppress(OSError):
                        os.remove(work / name)
                        os.symlink(victim, work / name)

    t = threading.Thread(target=attacker)
    t.start()
    try:
        for _ in range(20):
            cli_module.main(["predict", str(work / "x.npy"), "--out", str(work / "out.npy"), "--proba"])
    finally:
        stop.set()
        t.join()
    assert victim.read_bytes() == b"precious"


def test_plot_is_atomic_and_never_follows_a_symlink(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    np.save(tmp_path / "x.npy", np.random.default_rng(13).normal(size=(100, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(100) % 3)
    png = tmp_path / "rel.png"
    os.symlink(victim, png)
    r = run_main(capsys, "score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--plot", png)
    assert r.returncode == 0, r.stderr
    assert victim.read_bytes() == b"precious"
    assert not png.is_symlink() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    os.symlink(tmp_path / "x.npy", tmp_path / "x.png")
    assert_one_line_error(run_main(capsys, "score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--plot",
                                   tmp_path / "x.png"), "is the input file")


def test_bench_plot_goes_through_the_atomic_writer(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from fastlogits import bench
    from fastlogits import cli as cli_module

    report = {"results": [{"op": "softmax", "shape": [4, 3], "speedup_vs_numpy": 2.0}],
              "fastlogits": fl.__version__, "isa": "scalar", "threads": 1}
    monkeypatch.setattr(bench, "run", lambda **kwargs: report)  # the plot, not the timing
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    png = tmp_path / "bench.png"
    os.symlink(victim, png)
    assert cli_module.main(["bench", "--json", "--plot", str(png)]) == 0
    assert victim.read_bytes() == b"precious"
    assert not png.is_symlink() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["bench.png", "victim.txt"]


def _with_umask(mask):
    def preexec():
        os.umask(mask)
    return preexec


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_output_mode_follows_the_umask(tmp_path, mask):
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    out = tmp_path / "o.npy"
    r = cli("predict", tmp_path / "x.npy", "--out", out, preexec_fn=_with_umask(mask))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~mask


def test_existing_output_keeps_its_mode(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3), np.float32))
    out = tmp_path / "o.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    r = cli("predict", tmp_path / "x.npy", "--out", out, preexec_fn=_with_umask(0o077))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640


# ------------------------------------------------------------------------------ smaller things

def test_score_k_above_the_number_of_classes(tmp_path, capsys):
    x = np.random.default_rng(14).normal(size=(40, 10)).astype(np.float32)
    y = np.arange(40) % 10
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert_one_line_error(run_main(capsys, "score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--k", "20"),
                          "--k", "10 (the number of classes)")
    r = run_main(capsys, "score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--k", "3", "--json")
    got = json.loads(r.stdout)
    assert got["k"] == 3 and got["top_k_accuracy"] == fl.score(x, y, k=3)["top_k_accuracy"]
    np.save(tmp_path / "x3.npy", x[:, :3])
    np.save(tmp_path / "y3.npy", y % 3)
    r = run_main(capsys, "score", tmp_path / "x3.npy", "--target", tmp_path / "y3.npy", "--json")  # default k=5 > 3
    assert r.returncode == 0 and "top_k_accuracy" not in json.loads(r.stdout), r.stderr


def test_json_is_strict(tmp_path):
    x = np.random.default_rng(15).normal(size=(10, 3)).astype(np.float32)
    x[2, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(10) % 3)
    r = cli("score", tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--json")
    assert r.returncode == 0, r.stderr

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    got = json.loads(r.stdout, parse_constant=refuse)
    assert got["nll"] is None and got["count"] == 10


def test_dask_from_npy_keeps_the_graph_small(tmp_path):
    pytest.importorskip("dask.array")
    import pickle

    import fastlogits.dask as fld

    x = np.random.default_rng(16).normal(size=(20000, 200)).astype(np.float32)  # 16 MB
    y = np.random.default_rng(17).integers(0, 200, 20000)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    lx, ly = fld.from_npy(str(tmp_path / "x.npy"), chunks=3000), fld.from_npy(str(tmp_path / "y.npy"), chunks=3000)
    size = len(pickle.dumps(dict(lx.__dask_graph__())))
    assert size < 20_000, f"the graph pickles to {size} bytes"
    assert lx.chunks == ((3000,) * 6 + (2000,), (200,))
    assert fld.score(lx, ly) == fl.score(x, y)
    np.testing.assert_array_equal(fld.predict(lx).compute(), fl.predict(x))
    np.save(tmp_path / "x.npy", np.zeros((5, 200), np.float32))
    with pytest.raises(Exception, match="changed"):
        lx.compute()


def _readme_dask_block():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme[readme.index("### Scaling out with Dask"):]
    return section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 3)]


def test_readme_dask_recipe_runs_and_its_imports_are_in_the_dask_extra(tmp_path):
    """The README's recipe, run as written on small files; every module it imports is one the
    ``dask`` extra installs (or a core dependency)."""
    pytest.importorskip("dask.array")
    import ast
    import re

    code = _readme_dask_block()
    imported = {a.name.split(".")[0] for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Import)
                for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(code))
                 if isinstance(node, ast.ImportFrom) and node.module}
    pyproject = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), encoding="utf-8").read()
    extra = re.search(r'^dask = \[(.*)\]$', pyproject, re.M).group(1)
    provided = {re.match(r'"([A-Za-z0-9_.-]+)', d.strip()).group(1) for d in extra.split(",") if d.strip()}
    assert imported <= provided | {"numpy", "fastlogits"}, (imported, provided)
    assert "zarr" not in code and "h5py" not in code  # not in the extra
    rng = np.random.default_rng(18)
    np.save(tmp_path / "val_logits.npy", rng.normal(size=(500, 7)).astype(np.float32))
    np.save(tmp_path / "val_target.npy", rng.integers(0, 7, 500))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)


def test_dask_unknown_chunk_sizes_suggest_compute_chunk_sizes():
    da = pytest.importorskip("dask.array")
    import fastlogits.dask as fld

    x = da.from_array(np.arange(12.0).reshape(6, 2), chunks=(2, 2))
    unknown = x[x[:, 0] > 3]
    for call in (lambda: fld.softmax(unknown), lambda: fld.predict(unknown), lambda: fld.score(unknown, np.zeros(2))):
        with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
            call()


def test_torch_meta_tensor_is_a_clear_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError) as info:
        fl.softmax(torch.empty(2, 3, device="meta"))
    msg = str(info.value)
    assert "device meta" in msg and "(None" not in msg and "holds no data" in msg


# ------------------------------------------------------------------------------ the malformed corpus

def _raw_npy(header, data=b"", version=b"\x01\x00", magic=b"\x93NUMPY"):
    h = header.encode("latin1")
    h += b" " * (-(len(magic) + 2 + 2 + len(h) + 1) % 64) + b"\n"
    return magic + version + struct.pack("<H", len(h)) + h + data


def _patch_zip(raw, find, replace):
    """Replace every occurrence of ``find`` (a local or central header field run) in a zip."""
    assert find in raw
    return raw.replace(find, replace)


def _good_npz(d, compress):
    x = np.arange(64, dtype=np.float32).reshape(16, 4)
    path = os.path.join(d, "good.npz")
    (np.savez_compressed if compress else np.savez)(path, logits=x)
    return open(path, "rb").read(), x


def _corpus(d):
    """name -> bytes of a malformed file (its extension after the last underscore-free suffix)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (16, 4), }"
    data = np.arange(64, dtype=np.float32).tobytes()
    good_npy = _raw_npy(f4, data)
    c = {
        "empty.npy": b"",
        "truncated_magic.npy": b"\x93NUM",
        "wrong_magic.npy": b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
        "truncated_header.npy": good_npy[:40],
        "header_not_a_dict.npy": _raw_npy("[1, 2, 3]", data),
        "header_too_long.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 20032)
        + (f4 + " " * (20031 - len(f4))).encode() + b"\n" + data,
        "absurd_dimension.npy": _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616, 4), }", data),
        "absurd_product.npy": _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", data),
        "negative_dimension.npy": _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }", data),
        "truncated_data.npy": good_npy[:-100],
        "object_dtype.npy": _raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\0" * 16),
        "structured_dtype.npy": _raw_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (16,), }", data),
        "bad_descr.npy": _raw_npy("{'descr': 'zz9', 'fortran_order': False, 'shape': (16, 4), }", data),
        "bad_fortran_flag.npy": _raw_npy("{'descr': '<f4', 'fortran_order': 'yes', 'shape': (16, 4), }", data),
        "future_version.npy": _raw_npy(f4, data, version=b"\x09\x00"),
        "complex_dtype.npy": _raw_npy("{'descr': '<c8', 'fortran_order': False, 'shape': (16, 2), }", data),
        "python_call_in_header.npy": _raw_npy("{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,), }"),
    }
    stored, _ = _good_npz(d, False)
    deflated, _ = _good_npz(d, True)
    flipped = bytearray(stored)
    flipped[stored.index(data) + 5] ^= 1
    crc = struct.pack("<I", zlib.crc32(_npy_bytes(np.arange(64, dtype=np.float32).reshape(16, 4))))
    c.update({
        "not_a_zip.npz": b"PK\x03\x04" + b"\xff" * 100,
        "truncated.npz": stored[: len(stored) // 2],
        "bad_crc.npz": bytes(flipped),
        "name_mismatch.npz": stored.replace(b"logits.npy", b"logitz.npy", 1),  # the local header only
        "no_arrays.npz": _zip_bytes(d, {"readme.txt": b"hello"}),
        "member_not_npy.npz": _zip_bytes(d, {"logits.npy": b"hello, world"}),
        "encrypted_flag.npz": _set_encrypted(stored),
        "claims_more_rows.npz": _zip_bytes(d, {"logits.npy": _raw_npy(f4.replace("16", "17"), data)}),
        "claims_fewer_rows.npz": _zip_bytes(d, {"logits.npy": _raw_npy(f4.replace("16", "15"), data)}),
        "deflated_bad_crc.npz": _patch_zip(deflated, crc, b"\x00\x11\x22\x33"),
        "deflated_corrupt_stream.npz": _corrupt_deflate(deflated),
        "deflated_claims_more.npz": _zip_bytes(d, {"logits.npy": _raw_npy(f4.replace("16", "1600000"), data)},
                                               zipfile.ZIP_DEFLATED),
        "deflated_truncated.npz": deflated[:-30],
    })
    tables = {
        "struct_column.parquet": pa.table({"s": pa.array([{"a": 1}, {"a": 2}])}),
        "string_column.parquet": pa.table({"s": pa.array(["a", "b"])}),
        "list_of_strings.parquet": pa.table({"l": pa.array([["a", "b"], ["c", "d"]])}),
        "dictionary_column.parquet": pa.table({"d": pa.array(["x", "y"]).dictionary_encode()}),
        "null_list_row.parquet": pa.table({"l": pa.array([[1.0, 2.0], None], pa.list_(pa.float32()))}),
        "uneven_lists.parquet": pa.table({"l": pa.array([[0.0] * 4, [0.0] * 3, [0.0] * 5], pa.list_(pa.float32()))}),
        "null_in_int_column.parquet": pa.table({"a": pa.array([1, None], pa.int32()), "b": pa.array([1, 2], pa.int32())}),
        "null_in_int_lists.parquet": pa.table({"l": pa.array([[1, 2], [None, 4]], pa.list_(pa.int64(), 2))}),
        "decimal_column.parquet": pa.table({"m": pa.array([1, 2], pa.decimal128(5, 2))}),
    }
    for name, table in tables.items():
        pq.write_table(table, os.path.join(d, name))
        c[name] = open(os.path.join(d, name), "rb").read()
    good_pq = c["string_column.parquet"]
    c["truncated.parquet"] = good_pq[: len(good_pq) // 2]
    c["wrong_magic.parquet"] = b"XXXX" + good_pq[4:-4] + b"XXXX"
    c["empty.parquet"] = b""
    return c


def _zip_bytes(d, members, compress=zipfile.ZIP_STORED):
    path = os.path.join(d, "tmp.zip")
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return open(path, "rb").read()


def _set_encrypted(raw):
    raw = bytearray(raw)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(sig)
        while pos >= 0:
            raw[pos + flag_at] |= 1
            pos = raw.find(sig, pos + 1)
    return bytes(raw)


def _corrupt_deflate(raw):
    raw = bytearray(raw)
    start = raw.find(b"PK\x03\x04") + 30 + len("logits.npy") + 20  # inside the deflate stream
    for i in range(start, start + 40):
        raw[i] ^= 0xA5
    return bytes(raw)


_HARNESS = textwrap.dedent("""
    import io, json, sys, traceback, warnings
    warnings.simplefilter("error")
    from fastlogits import cli
    results = {}
    for case in json.loads(sys.argv[1]):
        print(case[0], flush=True)  # the case a crash happened in
        err, real = io.StringIO(), sys.stderr
        sys.stderr = err
        try:
            rc = cli.main(case[1:])
        except SystemExit as exc:
            rc = exc.code
        except BaseException:
            rc = "traceback: " + traceback.format_exc()
        finally:
            sys.stderr = real
        results[case[0]] = [rc, err.getvalue()]
    print(json.dumps(results))
""")


def test_malformed_corpus_every_reader(tmp_path):
    """Every malformed file, as the logits of ``predict`` and ``score`` and as the target of
    ``score``: status 2, exactly one line on stderr, no traceback, nothing left behind. The
    cases run in one child process (each through ``cli.main``) to keep this fast."""
    pyarrow()
    build = tmp_path / "build"
    build.mkdir()
    corpus = _corpus(str(build))
    d = tmp_path / "corpus"
    d.mkdir()
    np.save(tmp_path / "x.npy", np.zeros((16, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(16, np.int64))
    cases = []
    for name, raw in corpus.items():
        path = d / name
        path.write_bytes(raw)
        cases.append([f"predict {name}", "predict", str(path), "--out", str(tmp_path / "o.npy")])
        cases.append([f"score {name}", "score", str(path), "--target", str(tmp_path / "y.npy")])
        cases.append([f"target {name}", "score", str(tmp_path / "x.npy"), "--target", str(path)])
    r = subprocess.run([sys.executable, "-c", _HARNESS, json.dumps(cases)], capture_output=True, text=True, timeout=600)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, f"the child died ({r.returncode}) in case {lines[-1] if lines else '?'}: {r.stderr[-2000:]}"
    results = json.loads(lines[-1])
    bad = {}
    for case, (rc, err) in results.items():
        one = err.splitlines()
        if rc != 2 or len(one) != 1 or not one[0].startswith("fastlogits: error: "):
            bad[case] = (rc, err)
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())
    assert not (tmp_path / "o.npy").exists() and not leftovers(tmp_path) and not leftovers(d)
    assert sorted(os.listdir(d)) == sorted(corpus)
