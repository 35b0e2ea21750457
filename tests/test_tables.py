"""``fastlogits predict`` outputs by suffix (issue 21): ``.npy``, ``.csv``, ``.jsonl`` and
``.parquet`` tables with an id column, read back with pandas and pyarrow and compared with
``fl.predict``/``fl.softmax``/``fl.log_softmax``/``fl.topk`` exactly (a float is written in the
shortest form that reads back to the same value of its dtype)."""
import json
import os

import numpy as np
import pytest

import fastlogits as fl

from test_faults import _file_size_limit, assert_one_line_error, cli, leftovers, run_main
from test_readers import raw_safetensors

# ids that need quoting in CSV and escaping in JSON, and ones pandas would read as NaN
IDS = ["ex,1", 'say "hi"', "two\nlines", "naïve ✓", "NA", "null", "", "1e5"]


def pyarrow():
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet  # noqa: F401

    return pa


@pytest.fixture(scope="module")
def preds(tmp_path_factory):
    """A Parquet table of 500 rows: string ids, float32 logits (a list column), labels; in row
    groups of 64, so reads cross them."""
    pa = pyarrow()
    d = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(500, 11)) * 3).astype(np.float32)
    ids = [IDS[i % len(IDS)] + f"#{i}" for i in range(500)]
    table = pa.table({"id": ids, "logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 11),
                      "num": np.arange(500, dtype=np.int64) * 7})
    pa.parquet.write_table(table, d / "preds.parquet", row_group_size=64)
    return d, x, ids


def read_table(path, id_col="id"):
    """The output read back with pandas: (ids, {column: 2-D or 1-D array of values})."""
    pd = pytest.importorskip("pandas")
    ext = os.path.splitext(path)[1]
    if ext == ".csv":
        # string ids stay text (pandas would read "NA", "null" or "" as NaN, "1e5" as a number)
        df = pd.read_csv(path, dtype={id_col: str} if id_col != "row" else None, keep_default_na=False)
    elif ext == ".jsonl":
        df = pd.read_json(path, lines=True, dtype=False, precise_float=True)
    else:
        df = pd.read_parquet(path)
    cols = {}
    for name in df.columns[1:]:
        values = df[name].tolist()
        if values and isinstance(values[0], str):
            values = [json.loads(v) for v in values]
        cols[name] = np.array([np.asarray(v) for v in values]) if values and np.ndim(values[0]) else np.array(values)
    return df[df.columns[0]].tolist(), list(df.columns), cols


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_done_when_topk_round_trips_through_pandas(preds, tmp_path, ext):
    """The issue's example: ids, tokens and probabilities as fl.topk and fl.softmax give them."""
    d, x, ids = preds
    out = tmp_path / f"p{ext}"
    r = cli("predict", d / "preds.parquet", "--column", "logits", "--id-column", "id", "--out", out, "--topk", "3")
    assert r.returncode == 0, r.stderr
    got_ids, columns, cols = read_table(out)
    assert columns == ["id", "topk_index", "topk_proba"]
    assert got_ids == ids
    index = fl.topk(x, 3)[1]
    np.testing.assert_array_equal(cols["topk_index"], index)
    want = np.take_along_axis(fl.softmax(x), index, axis=1)
    np.testing.assert_array_equal(cols["topk_proba"].astype(np.float32), want)
    assert sorted(os.listdir(tmp_path)) == [out.name]


MODES = {"label": ([], lambda x: {"label": fl.predict(x)}),
         "proba": (["--proba"], lambda x: {"proba": fl.softmax(x)}),
         "log-proba": (["--log-proba"], lambda x: {"log_proba": fl.log_softmax(x)}),
         "topk": (["--topk", "4"], lambda x: {"topk_index": fl.topk(x, 4)[1],
                                               "topk_proba": np.take_along_axis(fl.softmax(x), fl.topk(x, 4)[1], 1)})}


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_round_trips(preds, tmp_path, capsys, ext, mode):
    d, x, ids = preds
    args, expected = MODES[mode]
    out = tmp_path / f"p{ext}"
    r = run_main(capsys, "predict", d / "preds.parquet", "--column", "logits", "--id-column", "id", "--out", out,
                 "--chunk-rows", "37", *args)
    assert r.returncode == 0, r.stderr
    got_ids, columns, cols = read_table(out)
    want = expected(x)
    assert got_ids == ids and columns == ["id", *want]
    for name, values in want.items():
        np.testing.assert_array_equal(cols[name].astype(values.dtype), values, err_msg=name)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_row_numbers_without_an_id_column(tmp_path, capsys, ext):
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"p{ext}"
    assert run_main(capsys, "predict", tmp_path / "x.npy", "--out", out, "--proba").returncode == 0
    rows, columns, cols = read_table(out, id_col="row")
    assert columns == ["row", "proba"] and rows == list(range(300))
    np.testing.assert_array_equal(cols["proba"], fl.softmax(x))  # float64: the shortest repr round-trips


def test_npy_output_keeps_one_array(preds, tmp_path, capsys):
    d, x, _ = preds
    out = tmp_path / "top.npy"
    assert run_main(capsys, "predict", d / "preds.parquet", "--column", "logits", "--out", out, "--topk", "3").returncode == 0
    np.testing.assert_array_equal(np.load(out), fl.topk(x, 3)[1])


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_text_output_does_not_depend_on_the_chunks(preds, tmp_path, capsys, ext):
    d, _, _ = preds
    outs = []
    for chunk in ("1", "37", None):
        out = tmp_path / f"p{chunk}{ext}"
        extra = ["--chunk-rows", chunk] if chunk else []
        r = run_main(capsys, "predict", d / "preds.parquet", "--column", "logits", "--id-column", "id", "--out", out,
                     "--topk", "2", *extra)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_text_formats(tmp_path, capsys):
    """NaN and infinities: JSON null (in .jsonl, and in the JSON arrays of .csv), nan/inf as a
    plain CSV value; booleans true/false; the shortest float for each dtype."""
    x = np.array([[0.0, -np.inf, 1.0], [np.nan, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    for ext in (".csv", ".jsonl"):
        assert run_main(capsys, "predict", tmp_path / "x.npy", "--out", tmp_path / f"lp{ext}", "--log-proba").returncode == 0
    csv_lines = (tmp_path / "lp.csv").read_text().splitlines()
    assert csv_lines[0] == "row,log_proba"
    lp = fl.log_softmax(x)
    assert csv_lines[1] == f'0,"[{str(lp[0, 0])},null,{str(lp[0, 2])}]"'
    assert csv_lines[2] == '1,"[null,null,null]"'
    jl = [json.loads(line) for line in (tmp_path / "lp.jsonl").read_text().splitlines()]
    assert jl[1] == {"row": 1, "log_proba": [None, None, None]}
    assert [np.float32(v) for v in jl[2]["log_proba"]] == list(lp[2])
    xb = np.array([0.0, np.nan, -np.inf, 3.0], np.float32)
    np.save(tmp_path / "xb.npy", xb)
    assert run_main(capsys, "predict", tmp_path / "xb.npy", "--out", tmp_path / "pb.csv", "--proba").returncode == 0
    assert (tmp_path / "pb.csv").read_text() == "row,proba\n0,0.5\n1,nan\n2,0.0\n3,0.95257413\n"
    assert run_main(capsys, "predict", tmp_path / "xb.npy", "--out", tmp_path / "lb.jsonl").returncode == 0
    assert (tmp_path / "lb.jsonl").read_text().splitlines()[3] == '{"row": 3, "label": true}'
    assert run_main(capsys, "predict", tmp_path / "x.npy", "--out", tmp_path / "t.csv", "--threshold", "0.6").returncode == 0
    assert (tmp_path / "t.csv").read_text().splitlines()[3] == '2,"[true,true,true]"'


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet", ".npy"])
def test_half_precision_and_float64_values(tmp_path, capsys, dtype, ext):
    """bfloat16 logits (from safetensors: a .npy cannot hold bfloat16) give float32
    probabilities in .npy and .parquet (exact: every bfloat16 is a float32), and the shortest
    float32 form in text."""
    import ml_dtypes

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    x = np.random.default_rng(2).normal(size=(50, 7)).astype(dt)
    if dtype == "bfloat16":
        path = tmp_path / "x.safetensors"
        path.write_bytes(raw_safetensors({"x": {"dtype": "BF16", "shape": [50, 7], "data_offsets": [0, x.nbytes]}},
                                         x.tobytes()))
    else:
        path = tmp_path / "x.npy"
        np.save(path, x)
    out = tmp_path / f"p{ext}"
    assert run_main(capsys, "predict", path, "--out", out, "--proba").returncode == 0
    want = fl.softmax(x)
    if ext == ".npy":
        got = np.load(out)
        assert got.dtype == (np.float32 if dtype == "bfloat16" else dt)
    else:
        got = read_table(out, id_col="row")[2]["proba"]
    np.testing.assert_array_equal(got.astype(np.float64).astype(dt), want)
    if ext == ".parquet":
        stored = pyarrow().parquet.read_schema(out).field("proba").type.value_type
        assert str(stored) == {"float16": "halffloat", "bfloat16": "float", "float64": "double"}[dtype]


def test_id_types(tmp_path, capsys):
    """Integer ids with a null, dictionary-encoded strings, floats, booleans pass through to
    text; a struct passes through to Parquet only."""
    pa = pyarrow()
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    logits = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 3)
    path = tmp_path / "t.parquet"
    pa.parquet.write_table(pa.table({
        "logits": logits, "int": pa.array([5, None, -7, 2**62], pa.int64()),
        "dict": pa.array(["a", "b", "a", "c"]).dictionary_encode(), "float": [0.5, np.nan, 1e300, -2.0],
        "flag": [True, False, None, True], "s": pa.array([{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}])}), path)
    expect_csv = {"int": ["5", "", "-7", str(2**62)], "dict": ["a", "b", "a", "c"],
                  "float": ["0.5", "nan", "1e+300", "-2.0"], "flag": ["true", "false", "", "true"]}
    expect_json = {"int": [5, None, -7, 2**62], "dict": ["a", "b", "a", "c"], "float": [0.5, None, 1e300, -2.0],
                   "flag": [True, False, None, True]}
    for col in expect_csv:
        for ext in (".csv", ".jsonl", ".parquet"):
            out = tmp_path / f"{col}{ext}"
            r = run_main(capsys, "predict", path, "--column", "logits", "--id-column", col, "--out", out)
            assert r.returncode == 0, r.stderr
            if ext == ".csv":
                assert [line.split(",")[0] for line in out.read_text().splitlines()] == [col] + expect_csv[col]
            elif ext == ".jsonl":
                assert [json.loads(line)[col] for line in out.read_text().splitlines()] == expect_json[col]
            else:
                t = pa.parquet.read_table(out)
                assert t.column(col).to_pylist()[:1] == pa.parquet.read_table(path).column(col).to_pylist()[:1]
    out = tmp_path / "s.parquet"
    assert run_main(capsys, "predict", path, "--column", "logits", "--id-column", "s", "--out", out).returncode == 0
    assert pa.parquet.read_table(out).column("s").to_pylist() == [{"a": i} for i in range(1, 5)]
    assert_one_line_error(run_main(capsys, "predict", path, "--column", "logits", "--id-column", "s",
                                   "--out", tmp_path / "s.csv"), "'s' has type struct", ".parquet output")


def test_option_errors(preds, tmp_path, capsys):
    pa = pyarrow()
    d, x, _ = preds
    p = d / "preds.parquet"
    np.save(tmp_path / "x.npy", x)
    cases = [
        (["predict", tmp_path / "x.npy", "--id-column", "id", "--out", tmp_path / "o.csv"], "Parquet LOGITS"),
        (["predict", p, "--column", "logits", "--id-column", "id", "--out", tmp_path / "o.npy"], "needs a table output"),
        (["predict", p, "--column", "logits", "--id-column", "nope", "--out", tmp_path / "o.csv"], "no column 'nope'"),
        (["predict", p, "--column", "logits", "--out", tmp_path / "o.txt"], "unsupported output type '.txt'"),
        (["predict", p, "--column", "logits", "--out", p], "is the input file"),
        (["predict", p, "--column", "logits", "--id-column", "id", "--axis", "0", "--out", tmp_path / "o.csv"],
         "the column has 500 rows, the predictions 11"),
        (["predict", p, "--key", "logits", "--out", tmp_path / "o.csv"], "name Parquet columns with --column"),
        (["predict", tmp_path / "x.npy", "--column", "logits", "--out", tmp_path / "o.csv"], "a .npy file holds one array"),
        (["score", p, "--column", "logits", "--target-key", "y"], "--target-key names an array"),
    ]
    for args, words in cases:
        assert_one_line_error(run_main(capsys, *args), words)
    clash = tmp_path / "clash.parquet"
    pa.parquet.write_table(pa.table({"label": ["a"], "l": pa.array([[1.0, 2.0]], pa.list_(pa.float64(), 2))}), clash)
    assert_one_line_error(run_main(capsys, "predict", clash, "--column", "l", "--id-column", "label",
                                   "--out", tmp_path / "o.csv"), "the id column 'label' has the name of a prediction")
    np.save(tmp_path / "x3.npy", np.zeros((2, 3, 4), np.float32))
    assert_one_line_error(run_main(capsys, "predict", tmp_path / "x3.npy", "--threshold", "0.5", "--out",
                                   tmp_path / "o.csv"), "one value or one list per row")
    assert not leftovers(tmp_path) and not (tmp_path / "o.csv").exists()


def test_bad_row_after_chunks_were_written_leaves_the_previous_file(tmp_path, capsys):
    """Lazy inputs report a bad row when they reach it, after earlier chunks were written: the
    output stays the previous file and no temporary is left."""
    pa = pyarrow()
    values = [[float(i), 1.0] for i in range(1000)]
    values[900] = [1.0, None]
    path = tmp_path / "bad.parquet"
    pa.parquet.write_table(pa.table({"l": pa.array(values, pa.list_(pa.int64())), "id": np.arange(1000)}), path,
                           row_group_size=100)
    for ext in (".csv", ".jsonl", ".parquet", ".npy"):
        out = tmp_path / f"o{ext}"
        out.write_bytes(b"previous")
        extra = ["--id-column", "id"] if ext != ".npy" else []
        r = run_main(capsys, "predict", path, "--column", "l", "--out", out, "--chunk-rows", "50", *extra)
        assert_one_line_error(r, "row 900 holds a null value")
        assert out.read_bytes() == b"previous"
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_file_size_limit_text_output(tmp_path, ext):
    x = np.random.default_rng(5).normal(size=(2000, 100)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"out{ext}"
    out.write_bytes(b"previous")
    r = cli("predict", tmp_path / "x.npy", "--out", out, "--proba", preexec_fn=_file_size_limit(1 << 20))
    assert_one_line_error(r, str(out), "File too large")
    assert out.read_bytes() == b"previous" and not leftovers(tmp_path)
