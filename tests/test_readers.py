"""The readers of issue 21 on real files made by their own libraries: safetensors (the
``safetensors`` package writes them, our own parser reads them), HDF5 (h5py), Zarr v2 and v3
(zarr), Parquet read lazily (pyarrow); ``fl.open_logits`` and the array-like it returns for the
lazy formats; malformed-file corpora fed to the command line (status 2, one line, nothing on
the real stderr); resident memory of a pass over an array larger than the memory budget."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastlogits as fl
from fastlogits._chunked import ChunkedRows
from fastlogits._files import FileError

from test_faults import _HARNESS, CLI, _run_sampling_memory, assert_one_line_error, leftovers, run_main


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(21)
    x = (rng.normal(size=(777, 9)) * 3).astype(np.float32)
    y = rng.integers(0, 9, 777)
    return x, y


# ------------------------------------------------------------------------------ safetensors

def save_safetensors(path, tensors):
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(tensors, str(path))


def raw_safetensors(header, data=b"", n=None):
    """A safetensors file from a header (dict or raw bytes) and a byte buffer."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def test_safetensors_made_by_the_library(tmp_path, xy):
    x, y = xy
    path = tmp_path / "out.safetensors"
    f16 = x[:5].astype(np.float16)
    save_safetensors(path, {"logits": x, "y": y, "half": f16, "f64": x.astype(np.float64)[:3],
                            "u8": (y % 2).astype(np.uint8), "empty": np.zeros((0, 4), np.float32)})
    a = fl.open_logits(path, "logits")
    assert isinstance(a, np.memmap) and not a.flags.writeable
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(fl.open_logits(path, "y"), y)
    np.testing.assert_array_equal(fl.open_logits(path, "half"), f16)
    np.testing.assert_array_equal(fl.open_logits(path, "f64"), x.astype(np.float64)[:3])
    assert fl.open_logits(path, "empty").shape == (0, 4)
    assert fl.score(a, fl.open_logits(path, "y")) == fl.score(x, y)
    with pytest.raises(OSError, match="holds tensors .*choose one with --key"):
        fl.open_logits(path)
    with pytest.raises(FileError, match="no tensor named 'nope'"):
        fl.open_logits(path, "nope")


def test_safetensors_bfloat16_and_unaligned_tensors(tmp_path):
    """torch writes bfloat16 (read as ml_dtypes.bfloat16, bit for bit); a float64 tensor after
    an odd number of float16 bytes is not 8-aligned, so it is read from an aligned scratch copy."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    import ml_dtypes

    t = torch.randn(33, 5).to(torch.bfloat16)
    odd = torch.randn(3, dtype=torch.float16)  # 6 bytes
    d = torch.randn(4, 4, dtype=torch.float64)
    path = tmp_path / "bf.safetensors"
    st.save_file({"a_odd": odd, "b_double": d, "c_bf16": t}, str(path))
    bf = fl.open_logits(path, "c_bf16")
    assert bf.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(bf.view(np.int16), t.view(torch.int16).numpy())
    dd = fl.open_logits(path, "b_double")
    assert dd.ctypes.data % 8 == 0
    np.testing.assert_array_equal(dd, d.numpy())
    np.testing.assert_array_equal(fl.softmax(dd), fl.softmax(d.numpy()))


def test_safetensors_bool_is_read_as_bytes_and_checked_as_a_target(tmp_path, capsys, xy):
    x, _ = xy
    yb = np.zeros(777, bool)
    path = tmp_path / "b.safetensors"
    save_safetensors(path, {"x": x[:, 0].copy(), "y": yb})
    assert fl.open_logits(path, "y").dtype == np.uint8
    r = run_main(capsys, "score", path, "--key", "x", "--target-key", "y", "--json", "--metrics", "count")
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == 777
    raw = bytearray(path.read_bytes())
    raw[-3] = 2  # a BOOL byte that is neither 0 nor 1
    path.write_bytes(bytes(raw))
    assert_one_line_error(run_main(capsys, "score", path, "--key", "x", "--target-key", "y"), "must be 0 or 1", "2")


# ------------------------------------------------------------------------------ HDF5

def h5py():
    return pytest.importorskip("h5py")


def test_hdf5_made_by_h5py(tmp_path, xy):
    h5 = h5py()
    x, y = xy
    path = tmp_path / "eval.h5"
    with h5.File(path, "w") as f:
        f.create_dataset("eval/logits", data=x, chunks=(50, 9), compression="gzip")
        f.create_dataset("eval/big_endian", data=x.astype(">f8"))
        f.create_dataset("eval/half", data=x.astype(np.float16), chunks=(100, 3), shuffle=True, compression="lzf")
        f.create_dataset("y", data=y)
        f.create_dataset("bool", data=y % 2 == 0)
    a = fl.open_logits(path, "eval/logits")
    assert isinstance(a, ChunkedRows) and a.shape == x.shape and a.dtype == np.float32
    assert a.chunk_rows % 50 == 0
    np.testing.assert_array_equal(a[:], x)
    be = fl.open_logits(path, "eval/big_endian")
    assert be.dtype == np.dtype(np.float64) and be.dtype.isnative
    np.testing.assert_array_equal(be[100:200], x[100:200].astype(np.float64))
    np.testing.assert_array_equal(fl.open_logits(path, "eval/half")[7:777:5], x.astype(np.float16)[7:777:5])
    np.testing.assert_array_equal(fl.open_logits(path, "bool")[:], y % 2 == 0)
    assert fl.score(a, fl.open_logits(path, "y")) == fl.score(x, y)
    with pytest.raises(FileError, match="'eval' is a group, not a dataset"):
        fl.open_logits(path, "eval")
    with pytest.raises(FileError, match="choose one with --key"):
        fl.open_logits(path)


def test_hdf5_writer_that_stopped_early_is_refused(tmp_path, capsys):
    """A preallocated dataset whose writer died half-way: HDF5 reads the unwritten chunks as the
    fill value (zeros), so scoring it would quietly count them as predictions of class 0."""
    h5 = h5py()
    path = tmp_path / "partial.h5"
    with h5.File(path, "w") as f:
        ds = f.create_dataset("logits", shape=(1000, 4), dtype="f4", chunks=(100, 4))
        ds[:300] = 1.0
        f.create_dataset("contiguous", shape=(10, 4), dtype="f4")  # never written
        f.create_dataset("y", data=np.zeros(1000, np.int64))
    np.testing.assert_array_equal(h5.File(path, "r")["logits"][999], 0)  # what h5py itself reads
    r = run_main(capsys, "score", path, "--key", "logits", "--target-key", "y")
    assert_one_line_error(r, "only 3 of its 10 chunks were ever written")
    assert_one_line_error(run_main(capsys, "predict", path, "--key", "contiguous", "--out", tmp_path / "o.npy"),
                          "never written")


def test_hdf5_corrupt_chunk_is_an_error_when_read(tmp_path, capsys, xy):
    h5 = h5py()
    x, _ = xy
    path = tmp_path / "c.h5"
    with h5.File(path, "w") as f:
        f.create_dataset("logits", data=x, chunks=(100, 9), compression="gzip")
        offset = f["logits"].id.get_chunk_info(5).byte_offset
    raw = bytearray(path.read_bytes())
    for i in range(offset + 10, offset + 60):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    a = fl.open_logits(path)
    np.testing.assert_array_equal(a[:500], x[:500])  # the rows before the bad chunk read fine
    with pytest.raises(FileError, match=r"cannot read rows 500:600"):
        a[500:600]
    out = tmp_path / "o.csv"
    assert_one_line_error(run_main(capsys, "predict", path, "--out", out, "--chunk-rows", "100"), "rows 500:600")
    assert not out.exists() and not leftovers(tmp_path)


# ------------------------------------------------------------------------------ Zarr

def zarr():
    return pytest.importorskip("zarr")


def _zarr_array(zr, path, data, chunks, zarr_format, **kwargs):
    z = zr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format,
                        **kwargs)
    z[:] = data
    return z


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_made_by_zarr(tmp_path, xy, zarr_format):
    zr = zarr()
    x, y = xy
    store = tmp_path / "a.zarr"
    _zarr_array(zr, store, x, (64, 9), zarr_format)
    a = fl.open_logits(store)
    assert isinstance(a, ChunkedRows) and a.shape == x.shape and a.chunk_rows % 64 == 0
    np.testing.assert_array_equal(a[:], x)
    np.testing.assert_array_equal(a[-1], x[-1])
    assert fl.score(a, y) == fl.score(x, y)
    g = zr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    g.create_array("eval/logits", shape=x.shape, chunks=(100, 3), dtype="f8")[:] = x
    g.create_array("y", shape=y.shape, chunks=(200,), dtype="i8")[:] = y
    np.testing.assert_array_equal(fl.open_logits(tmp_path / "g.zarr", "eval/logits")[:], x.astype(np.float64))
    with pytest.raises(FileError, match="holds arrays 'eval/logits', 'y'; choose one"):
        fl.open_logits(tmp_path / "g.zarr")
    with pytest.raises(FileError, match="'eval' is a group"):
        fl.open_logits(tmp_path / "g.zarr", "eval")
    if zarr_format == 2:  # a big-endian array is read in native byte order
        _zarr_array(zr, tmp_path / "be.zarr", x.astype(">f8"), (100, 9), 2)
        be = fl.open_logits(tmp_path / "be.zarr")
        assert be.dtype == np.float64 and be.dtype.isnative and be[:].dtype.isnative
        np.testing.assert_array_equal(be[:], x.astype(np.float64))


def test_zarr_sharded_v3(tmp_path, xy):
    zr = zarr()
    x, _ = xy
    _zarr_array(zr, tmp_path / "s.zarr", x, (16, 9), 3, shards=(128, 9))
    np.testing.assert_array_equal(fl.open_logits(tmp_path / "s.zarr")[:], x)


def test_zarr_missing_chunks(tmp_path, capsys):
    """Format 3 leaves out chunks that hold only the fill value: they read as it (zarr's rule).
    A format-2 array with a null fill value defines no value for them: refused."""
    zr = zarr()
    data = np.ones((300, 4), np.float32)
    data[100:200] = 0.0
    _zarr_array(zr, tmp_path / "v3.zarr", data, (100, 4), 3, fill_value=0.0)
    np.testing.assert_array_equal(fl.open_logits(tmp_path / "v3.zarr")[:], data)
    z = zr.create_array(store=str(tmp_path / "v2.zarr"), shape=(300, 4), chunks=(100, 4), dtype="f4", zarr_format=2,
                        fill_value=None)
    z[:100] = 1.0
    assert_one_line_error(run_main(capsys, "predict", tmp_path / "v2.zarr", "--out", tmp_path / "o.npy"),
                          "only 1 of its 3 chunks are stored", "fill value is null")


# ------------------------------------------------------------------------------ Parquet, lazily

def pyarrow():
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet  # noqa: F401

    return pa


def test_parquet_reads_rows_lazily_and_in_any_order(tmp_path, xy):
    pa = pyarrow()
    x, y = xy
    path = tmp_path / "p.parquet"
    pa.parquet.write_table(pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 9), "y": y}),
                           path, row_group_size=100)
    a = fl.open_logits(path, "logits")
    assert isinstance(a, ChunkedRows)
    np.testing.assert_array_equal(a[650:777], x[650:777])  # a seek into the 7th row group
    np.testing.assert_array_equal(a[3:250], x[3:250])       # back to the start
    np.testing.assert_array_equal(a[250:260], x[250:260])   # continues where it was
    got = np.concatenate([b for _, b in a.iter_chunks(rows=33)])
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(fl.open_logits(path, "y")[:], y)
    cols = tmp_path / "cols.parquet"
    pa.parquet.write_table(pa.table({f"c{i}": x[:, i] for i in range(9)} | {"id": np.arange(777)}), cols)
    np.testing.assert_array_equal(fl.open_logits(cols, [f"c{i}" for i in range(9)])[:], x)
    np.testing.assert_array_equal(fl.open_logits(cols, ",".join(f"c{i}" for i in range(9)))[:], x)


@pytest.mark.parametrize("where", ["first", "all"])
def test_parquet_metadata_announcing_more_rows_than_stored(tmp_path, capsys, where):
    """A footer whose row counts were raised: the file's alone (the row groups disagree with
    it), or every one (the reader runs dry before the announced end)."""
    pa = pyarrow()
    path = tmp_path / "p.parquet"
    pa.parquet.write_table(pa.table({"v": np.arange(10, dtype=np.float64)}), path)
    raw = path.read_bytes()
    footer_len = struct.unpack("<I", raw[-8:-4])[0]
    footer = raw[-8 - footer_len:-8]
    # thrift compact: num_rows (field 3, i64) is zigzag varint 20 (10 rows) after field header 0x16
    assert footer.count(b"\x16\x14") >= 1
    footer = footer.replace(b"\x16\x14", b"\x16\x28", 1 if where == "first" else -1)
    path.write_bytes(raw[:-8 - footer_len] + footer + raw[-8:])
    with pytest.raises(FileError):
        np.asarray(fl.open_logits(path)[:])
    assert_one_line_error(run_main(capsys, "predict", path, "--out", tmp_path / "o.npy"))
    assert not (tmp_path / "o.npy").exists()


# ------------------------------------------------------------------------------ open_logits

def test_open_logits_npy_npz_and_errors(tmp_path, xy):
    x, _ = xy
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", logits=x)
    for a in (fl.open_logits(tmp_path / "x.npy"), fl.open_logits(str(tmp_path / "x.npz"), key="logits")):
        assert isinstance(a, np.memmap) and not a.flags.writeable
        np.testing.assert_array_equal(a, x)
    with pytest.raises(FileNotFoundError):
        fl.open_logits(tmp_path / "missing.npy")
    with pytest.raises(TypeError, match="path"):
        fl.open_logits(b"x.npy")
    with pytest.raises(OSError, match="a .npy file holds one array"):
        fl.open_logits(tmp_path / "x.npy", "logits")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(OSError, match="unsupported file type '.txt'"):
        fl.open_logits(tmp_path / "x.txt")
    (tmp_path / "plain").mkdir()
    with pytest.raises(OSError, match="directory without Zarr metadata"):
        fl.open_logits(tmp_path / "plain")


def test_chunked_rows_interface(tmp_path, xy):
    h5 = h5py()
    x, _ = xy
    with h5.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(10, 9))
    a = fl.open_logits(tmp_path / "x.h5")
    assert (a.ndim, a.size, a.nbytes, a.itemsize, len(a)) == (2, x.size, x.nbytes, 4, 777)
    for key in (5, -1, np.int64(3), slice(None), slice(10, 20), slice(-5, None), slice(None, None, -7),
                slice(700, 10, -3), slice(5, 5), (slice(3, 9), 2), (4, slice(1, 3)), Ellipsis, (Ellipsis, 0),
                (slice(0, 4), None)):
        np.testing.assert_array_equal(a[key], x[key], err_msg=repr(key))
    for bad in ([1, 2], np.array([0, 1]), None, True, 1.5):
        with pytest.raises(TypeError):
            a[bad]
    with pytest.raises(IndexError):
        a[777]
    starts = [s for s, _ in a.iter_chunks(rows=100)]
    assert starts == list(range(0, 777, 100))
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(a, copy=False)
    m = np.asarray(a)
    assert np.shares_memory(m, np.asarray(a))  # copied once
    np.testing.assert_array_equal(m, x)
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), x.astype(np.float64))
    assert "x.h5" in repr(a) and "(777, 9)" in repr(a)


def test_missing_optional_dependency_names_the_extra(tmp_path, capsys, monkeypatch):
    pyarrow()
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    for module, path, extra in (("h5py", "x.h5", "hdf5"), ("zarr", "x.zarr", "zarr"), ("pyarrow", "x.parquet", "parquet")):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # import fails as if not installed
            r = run_main(capsys, "predict", tmp_path / path, "--out", tmp_path / "o.npy")
            assert_one_line_error(r, f"pip install 'fastlogits[{extra}]'")


# ------------------------------------------------------------------------------ malformed corpora

def _safetensors_corpus():
    f4 = {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}
    data = np.arange(16, dtype=np.float32).tobytes()
    deep = b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
    return {
        "empty": b"",
        "four_bytes": b"\x08\x00\x00\x00",
        "header_past_end": raw_safetensors({"x": f4}, data, n=10_000),
        "header_length_2_64": raw_safetensors({"x": f4}, data, n=2**64 - 1),
        "header_over_limit": raw_safetensors({"x": f4}, data, n=100_000_001),
        "not_an_object": raw_safetensors(b'["x"]', data),
        "bad_utf8": raw_safetensors(b'{"\xff\xfe": 1}', data),
        "bad_json": raw_safetensors(b'{"x": {"dtype": "F32",', data),
        "deep_nesting": raw_safetensors(deep, data),
        "duplicate_name": raw_safetensors(b'{"x": ' + json.dumps(f4).encode() + b', "x": '
                                          + json.dumps(f4).encode() + b"}", data),
        "nan_in_shape": raw_safetensors(b'{"x": {"dtype": "F32", "shape": [NaN, 4], "data_offsets": [0, 64]}}', data),
        "negative_dim": raw_safetensors({"x": {**f4, "shape": [-4, -4]}}, data),
        "float_dim": raw_safetensors({"x": {**f4, "shape": [4.0, 4]}}, data),
        "bool_dim": raw_safetensors({"x": {**f4, "shape": [True, 16]}}, data),
        "shape_string": raw_safetensors({"x": {**f4, "shape": "4,4"}}, data),
        "unknown_dtype": raw_safetensors({"x": {**f4, "dtype": "F7"}}, data),
        "dtype_not_string": raw_safetensors({"x": {**f4, "dtype": 32}}, data),
        "fp8_dtype": raw_safetensors({"x": {**f4, "dtype": "F8_E4M3", "shape": [64]}}, data),
        "three_offsets": raw_safetensors({"x": {**f4, "data_offsets": [0, 32, 64]}}, data),
        "begin_after_end": raw_safetensors({"x": {**f4, "data_offsets": [64, 0]}}, data),
        "truncated_data": raw_safetensors({"x": f4}, data[:40]),
        "trailing_bytes": raw_safetensors({"x": f4}, data + b"\0" * 8),
        "size_mismatch": raw_safetensors({"x": {**f4, "shape": [4, 5]}}, data),
        "absurd_shape": raw_safetensors({"x": {**f4, "shape": [2**40, 2**40]}}, data),
        "overlap": raw_safetensors({"x": f4, "y": {**f4, "shape": [2, 4], "data_offsets": [32, 64]}}, data),
        "hole": raw_safetensors({"x": {**f4, "shape": [2, 4], "data_offsets": [0, 32]},
                                 "y": {**f4, "shape": [1, 4], "data_offsets": [48, 64]}}, data),
        "offset_past_end": raw_safetensors({"x": {**f4, "data_offsets": [64, 128]}}, data),
        "metadata_not_strings": raw_safetensors({"__metadata__": {"a": 1}, "x": f4}, data),
        "entry_not_object": raw_safetensors({"x": [1, 2]}, data),
        "no_dtype": raw_safetensors({"x": {"shape": [4, 4], "data_offsets": [0, 64]}}, data),
        "two_tensors_no_key": raw_safetensors({"x": {**f4, "shape": [2, 4], "data_offsets": [0, 32]},
                                               "y": {**f4, "shape": [2, 4], "data_offsets": [32, 64]}}, data),
        "no_tensors": raw_safetensors({}, b""),
    }


def _hdf5_corpus(d):
    h5 = h5py()
    x = np.arange(64, dtype=np.float32).reshape(16, 4)
    files = {}

    def make(name, build):
        path = os.path.join(d, name + ".h5")
        with h5.File(path, "w") as f:
            build(f)
        files[name] = path

    make("strings", lambda f: f.create_dataset("x", data=np.array([b"ab", b"cd"])))
    make("vlen_strings", lambda f: f.create_dataset("x", data=["a", "bb"], dtype=h5.string_dtype()))
    make("compound", lambda f: f.create_dataset("x", data=np.zeros(4, [("a", "f4"), ("b", "i4")])))
    make("complex", lambda f: f.create_dataset("x", data=np.zeros(4, np.complex64)))
    make("scalar", lambda f: f.create_dataset("x", data=1.0))
    make("empty_file", lambda f: None)
    make("two_datasets", lambda f: (f.create_dataset("a", data=x), f.create_dataset("b", data=x)))
    make("unwritten_chunks", lambda f: f.create_dataset("x", shape=(16, 4), dtype="f4", chunks=(4, 4)))
    make("unwritten_contiguous", lambda f: f.create_dataset("x", shape=(16, 4), dtype="f4"))
    make("external", lambda f: f.create_dataset("x", shape=(16, 4), dtype="f4",
                                                external=[(os.path.join(d, "ext.bin"), 0, h5.h5f.UNLIMITED)]))
    with open(os.path.join(d, "ext.bin"), "wb") as f:
        f.write(x.tobytes())
    src = os.path.join(d, "vsrc.h5")
    with h5.File(src, "w") as f:
        f.create_dataset("x", data=x)

    def virtual(f):
        layout = h5.VirtualLayout(shape=(16, 4), dtype="f4")
        layout[:] = h5.VirtualSource(src, "x", shape=(16, 4))
        f.create_virtual_dataset("x", layout)
    make("virtual", virtual)
    make("good_gzip", lambda f: f.create_dataset("x", data=np.random.default_rng(0).normal(size=(64, 4)),
                                                 chunks=(16, 4), compression="gzip"))
    raws = {n: open(p, "rb").read() for n, p in files.items()}
    good = raws.pop("good_gzip")
    with h5.File(files["good_gzip"], "r") as f:
        off = f["x"].id.get_chunk_info(2).byte_offset
    corrupt = bytearray(good)
    for i in range(off + 4, off + 40):
        corrupt[i] ^= 0xFF
    raws["corrupt_chunk"] = bytes(corrupt)
    raws["truncated"] = good[: len(good) // 2]
    raws["not_hdf5"] = b"\x89HDF\r\n\x1a\n" + b"\xff" * 600
    raws["empty"] = b""
    return raws


def _zarr_corpus(d):
    """name -> directory of a malformed store."""
    zr = zarr()
    x = np.arange(64, dtype=np.float32).reshape(16, 4)
    stores = {}

    def good(name, fmt, data=x, **kw):
        path = os.path.join(d, name + ".zarr")
        chunks = (4,) + data.shape[1:] if data.ndim else ()
        z = zr.create_array(store=path, shape=data.shape, chunks=chunks, dtype=data.dtype,
                            zarr_format=fmt, **kw)
        z[:] = data
        stores[name] = path
        return path

    def edit(path, meta, change):
        p = os.path.join(path, meta)
        with open(p) as f:
            doc = json.load(f)
        change(doc)
        with open(p, "w") as f:
            json.dump(doc, f)

    p = good("v3_bad_json", 3)
    with open(os.path.join(p, "zarr.json"), "w") as f:
        f.write('{"zarr_format": 3, "node_type": "array", ')
    p = good("v2_bad_json", 2)
    with open(os.path.join(p, ".zarray"), "w") as f:
        f.write("{")
    edit(good("v3_negative_shape", 3), "zarr.json", lambda m: m.update(shape=[-16, 4]))
    edit(good("v2_negative_shape", 2), ".zarray", lambda m: m.update(shape=[-16, 4]))
    edit(good("v3_unknown_codec", 3), "zarr.json", lambda m: m.update(codecs=[{"name": "no_such_codec"}]))
    edit(good("v2_unknown_compressor", 2), ".zarray", lambda m: m.update(compressor={"id": "no_such_codec"}))
    edit(good("v2_zero_chunk", 2), ".zarray", lambda m: m.update(chunks=[0, 4]))
    edit(good("v3_dtype_string", 3), "zarr.json", lambda m: m.update(data_type="no_such_type"))
    good("complex", 3, data=np.zeros((4, 2), np.complex64))
    good("structured_v2", 2, data=np.zeros(4, [("a", "f4"), ("b", "i4")]))
    zd = zr.create_array(store=os.path.join(d, "zero_d.zarr"), shape=(), dtype="f4")
    zd[...] = 1.0
    stores["zero_d"] = os.path.join(d, "zero_d.zarr")
    p = good("corrupt_chunk", 3)
    with open(os.path.join(p, "c", "1", "0"), "wb") as f:
        f.write(b"\x00garbage that is not zstd\xff" * 3)
    p = good("truncated_chunk_v2", 2)
    with open(os.path.join(p, "2.0"), "r+b") as f:
        f.truncate(5)
    g = zr.open_group(os.path.join(d, "group_two.zarr"), mode="w")
    g.create_array("a", shape=(16, 4), dtype="f4")
    g.create_array("b", shape=(16, 4), dtype="f4")
    stores["group_two"] = os.path.join(d, "group_two.zarr")
    os.makedirs(os.path.join(d, "no_metadata.zarr"))
    stores["no_metadata"] = os.path.join(d, "no_metadata.zarr")
    return stores


def _run_corpus(tmp_path, files):
    """Every file as the logits of ``predict`` (to .npy and .csv) and ``score`` and as the
    target of ``score``, in one child process: status 2, one line, nothing written, and nothing
    printed on the real stderr (HDF5's C library would write its diagnostics there)."""
    np.save(tmp_path / "x.npy", np.zeros((16, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(16, np.int64))
    cases = []
    for name, path in files.items():
        for out in ("o.npy", "o.csv"):
            cases.append([f"predict {out} {name}", "predict", str(path), "--out", str(tmp_path / out)])
        cases.append([f"score {name}", "score", str(path), "--target", str(tmp_path / "y.npy")])
        cases.append([f"target {name}", "score", str(tmp_path / "x.npy"), "--target", str(path)])
    r = subprocess.run([sys.executable, "-c", _HARNESS, json.dumps(cases)], capture_output=True, text=True, timeout=600)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, f"the child died ({r.returncode}) in case {lines[-1] if lines else '?'}: {r.stderr[-2000:]}"
    assert r.stderr == "", r.stderr[-3000:]
    bad = {}
    for case, (rc, err) in json.loads(lines[-1]).items():
        one = err.splitlines()
        if rc != 2 or len(one) != 1 or not one[0].startswith("fastlogits: error: "):
            bad[case] = (rc, err)
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.csv").exists() and not leftovers(tmp_path)


def test_malformed_safetensors_corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    files = {}
    for name, raw in _safetensors_corpus().items():
        files[name] = d / f"{name}.safetensors"
        files[name].write_bytes(raw)
    _run_corpus(tmp_path, files)


def test_malformed_hdf5_corpus(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    d = tmp_path / "corpus"
    d.mkdir()
    files = {}
    for name, raw in _hdf5_corpus(str(build)).items():
        files[name] = d / f"{name}.h5"
        files[name].write_bytes(raw)
    _run_corpus(tmp_path, files)


def test_malformed_zarr_corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    _run_corpus(tmp_path, _zarr_corpus(str(d)))


# ------------------------------------------------------------------------------ bounded memory

# 512 x 131072 float32: a 256 MiB array, twice the 128 MiB of anonymous memory allowed (the
# interpreter with NumPy, h5py, zarr and pyarrow imported holds about 45 MiB of it)
_BIG = (512, 131072)


def _assert_bounded(cmd, limit_mb=128):
    r, anon, _ = _run_sampling_memory(cmd)
    assert r.returncode == 0, r.stderr
    print(f"peak RssAnon {anon / 2**20:.0f} MB")
    assert anon < limit_mb * 2**20, f"peak RssAnon {anon / 2**20:.0f} MB"
    return r


def test_safetensors_larger_than_the_memory_budget(tmp_path):
    """A sparse 256 MiB tensor (the holes read as zeros), mapped in place, labels predicted."""
    n, c = _BIG
    header = json.dumps({"logits": {"dtype": "F32", "shape": [n, c], "data_offsets": [0, n * c * 4]}}).encode()
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n * c * 4)
    _assert_bounded([*CLI, "predict", str(path), "--out", str(tmp_path / "labels.npy")])
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), np.zeros(n, np.int64))


def _constant_rows(c):
    """64 rows of ones: they compress to almost nothing, and zarr stores them (not the fill value)."""
    return np.ones((64, c), np.float32)


def test_hdf5_larger_than_the_memory_budget(tmp_path):
    """256 MiB of logits compressed to a small file, read in chunks, labels and scores."""
    h5 = h5py()
    n, c = _BIG
    path = tmp_path / "big.h5"
    with h5.File(path, "w") as f:
        ds = f.create_dataset("logits", shape=(n, c), dtype="f4", chunks=(16, c), compression="gzip",
                              compression_opts=1)
        block = _constant_rows(c)
        for lo in range(0, n, 64):
            ds[lo:lo + 64] = block
    assert os.path.getsize(path) < 16 * 2**20
    _assert_bounded([*CLI, "predict", str(path), "--out", str(tmp_path / "labels.csv")])
    assert (tmp_path / "labels.csv").read_text().count("\n") == n + 1


def test_zarr_larger_than_the_memory_budget(tmp_path):
    zr = zarr()
    n, c = _BIG
    z = zr.create_array(store=str(tmp_path / "big.zarr"), shape=(n, c), chunks=(16, c), dtype="f4")
    block = _constant_rows(c)
    for lo in range(0, n, 64):
        z[lo:lo + 64] = block
    _assert_bounded([*CLI, "predict", str(tmp_path / "big.zarr"), "--out", str(tmp_path / "labels.jsonl")])
    assert (tmp_path / "labels.jsonl").read_text().count("\n") == n


@pytest.mark.slow
def test_parquet_predict_streams_larger_than_the_memory_budget(tmp_path):
    """Parquet predictions stream (no scratch copy): ids and top-k of 1 GiB of logits to a
    Parquet table. pyarrow's decoding of a list column holds about 70 MiB by itself."""
    pa = pyarrow()
    n, c = 4 * _BIG[0], _BIG[1]
    schema = pa.schema([("id", pa.int64()), ("logits", pa.list_(pa.float32(), c))])
    path = tmp_path / "big.parquet"
    with pa.parquet.ParquetWriter(path, schema, compression="zstd") as w:
        block = _constant_rows(c).ravel()
        for lo in range(0, n, 64):
            w.write_batch(pa.record_batch([pa.array(np.arange(lo, lo + 64)),
                                           pa.FixedSizeListArray.from_arrays(pa.array(block), c)], schema=schema),
                          row_group_size=256)
    out = tmp_path / "top.parquet"
    _assert_bounded([*CLI, "predict", str(path), "--column", "logits", "--id-column", "id", "--topk", "2",
                     "--out", str(out)], limit_mb=200)
    t = pa.parquet.read_table(out)
    assert t.column_names == ["id", "topk_index", "topk_proba"] and t.num_rows == n
