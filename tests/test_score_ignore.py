"""ignore_index for binary and multilabel targets (API section 7): a binary target, or a
multilabel element, equal to ignore_index counts in no metric of ``score``, the Scorer,
``calibration_curve``, ``fit_temperature``, the command line and ``fastlogits.dask``, exactly as
a multiclass row does; any other value that is not 0 or 1 stays an error.

The oracle is the same data with the ignored rows removed (binary: bitwise, the sums are
order-independent) or, for multilabel, every kept element scored as one binary prediction with
its row's weight (the pooled metrics, bitwise), per label for the ranking metrics, and
scikit-learn on the kept elements."""
import json
import math

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _score_check, reference
from arrays import assert_same_result, merge_tree, split_scorers

BINARY = list(_score_check.DEFAULT_METRICS["binary"])
POOLED = [m for m in BINARY if m not in ("count", "roc_auc", "average_precision")]


def _binary(n=700, seed=0, dtype=np.float32, frac=0.3):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=n) * 2).astype(dtype)
    y = rng.integers(0, 2, n)
    w = rng.random(n) * 3
    ign = rng.random(n) < frac
    return x, y, np.where(ign, -100, y), w, ign


def _multilabel(n=400, c=5, seed=0, frac=0.25):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c)) * 2).astype(np.float32)
    y = rng.integers(0, 2, (n, c))
    w = rng.random(n) * 3
    ign = rng.random((n, c)) < frac
    ign[:, c - 1] = False   # a label hardly ignored, one mostly ignored
    ign[: n - 9, 0] = True
    ign[::17] = True        # rows with every element ignored
    return x, y, np.where(ign, -100, y), w, ign


def _flat(x, y, w, ign):
    """The kept elements of multilabel data as binary data, each with its row's weight."""
    keep = ~ign
    ww = None if w is None else np.broadcast_to(w[:, None], x.shape)[keep]
    return x[keep], y[keep], ww


def _per_label_macro(x, y, w, ign, name, auc_bins):
    vals = []
    for j in range(x.shape[1]):
        k = ~ign[:, j]
        r = fl.score(x[k, j], y[k, j], sample_weight=None if w is None else w[k], metrics=[name], auc_bins=auc_bins)
        vals.append(r[name])
    vals = np.array(vals)
    return float(np.mean(vals[~np.isnan(vals)]))


# --------------------------------------------------------------------------- score

@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("auc_bins", [None, 12])
@pytest.mark.parametrize("tdtype", ["int64", "float32", "int8"])
def test_binary_equals_the_rows_removed(weighted, auc_bins, tdtype):
    x, y, yi, w, ign = _binary(seed=1)
    w = w if weighted else None
    keep = ~ign
    got = fl.score(x, yi.astype(tdtype), sample_weight=w, auc_bins=auc_bins, chunk_rows=97)
    exp = fl.score(x[keep], y[keep], sample_weight=None if w is None else w[keep], auc_bins=auc_bins)
    assert got["count"] == int(keep.sum())
    assert_same_result(got, exp)
    # the same rule for a (N, 1) class axis, and for elementwise binary logits of any shape
    assert_same_result(fl.score(x[:, None], yi, sample_weight=w, auc_bins=auc_bins), exp)
    assert_same_result(fl.score(x.reshape(35, 20), yi.reshape(35, 20), task="binary",
                                sample_weight=None if w is None else w.reshape(35, 20), auc_bins=auc_bins), exp)


@pytest.mark.parametrize("weighted", [False, True])
def test_binary_matches_the_reference_on_the_kept_rows(weighted):
    x, y, yi, w, ign = _binary(seed=2, dtype=np.float64)
    w = w if weighted else None
    keep = ~ign
    got = fl.score(x, yi, sample_weight=w)
    ref = reference.score(x[keep], y[keep], sample_weight=None if w is None else w[keep],
                          metrics=["count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc"])
    assert got["count"] == ref["count"]
    for m in ("nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc"):
        assert got[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-15), m


def test_ignored_logits_are_never_read_into_metrics():
    """Padding may hold anything: NaN logits where the target is ignored change nothing."""
    x, y, yi, w, ign = _binary(seed=3)
    xn = np.where(ign, np.nan, x).astype(np.float32)
    assert_same_result(fl.score(xn, yi, sample_weight=w), fl.score(x, yi, sample_weight=w))
    xm, _, ymi, wm, ignm = _multilabel(seed=3)
    xmn = np.where(ignm, np.nan, xm).astype(np.float32)
    for ab in (None, 8):
        assert_same_result(fl.score(xmn, ymi, sample_weight=wm, auc_bins=ab),
                           fl.score(xm, ymi, sample_weight=wm, auc_bins=ab))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("auc_bins", [None, 12])
def test_multilabel_drops_the_ignored_elements(weighted, auc_bins):
    x, y, yi, w, ign = _multilabel(seed=4)
    w = w if weighted else None
    got = fl.score(x, yi, sample_weight=w, auc_bins=auc_bins, chunk_rows=31)
    # count: the rows with at least one element not ignored
    assert got["count"] == int((~ign).any(axis=1).sum()) < x.shape[0]
    # every pooled metric: the kept elements as binary predictions, each with its row's weight
    xf, yf, wf = _flat(x, y, w, ign)
    flat = fl.score(xf, yf, sample_weight=wf, metrics=POOLED)
    assert_same_result({m: got[m] for m in POOLED}, flat)
    # the ranking metrics: the macro mean over labels of each label's kept elements
    for name in ("roc_auc", "average_precision"):
        assert got[name] == _per_label_macro(x, y, w, ign, name, auc_bins), name


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_matches_sklearn_on_the_kept_elements(weighted):
    sk = pytest.importorskip("sklearn.metrics")
    x, y, yi, w, ign = _multilabel(seed=5)
    w = w if weighted else None
    got = fl.score(x.astype(np.float64), yi, sample_weight=w)
    xf, yf, wf = _flat(x.astype(np.float64), y, w, ign)
    p = 1.0 / (1.0 + np.exp(-xf))
    pred = (xf > 0).astype(int)
    exp = {
        "nll": sk.log_loss(yf, p, sample_weight=wf, labels=[0, 1]),
        "accuracy": sk.accuracy_score(yf, pred, sample_weight=wf),
        "brier": sk.brier_score_loss(yf, p, sample_weight=wf),
        "f1": sk.f1_score(yf, pred, sample_weight=wf, zero_division=0),
        "precision": sk.precision_score(yf, pred, sample_weight=wf, zero_division=0),
        "recall": sk.recall_score(yf, pred, sample_weight=wf, zero_division=0),
    }
    for name, fn in (("roc_auc", sk.roc_auc_score), ("average_precision", sk.average_precision_score)):
        vals = []
        for j in range(x.shape[1]):
            k = ~ign[:, j]
            if len(np.unique(y[k, j])) == 2:
                vals.append(fn(y[k, j], x[k, j].astype(np.float64), sample_weight=None if w is None else w[k]))
        exp[name] = float(np.mean(vals))
    for m, v in exp.items():
        assert got[m] == pytest.approx(v, rel=1e-10), (m, got[m], v)


def test_an_ignored_label_gives_a_nan_ranking_metric_and_is_left_out_of_the_macro_mean():
    x, y, yi, _, ign = _multilabel(seed=6)
    yi[:, 1] = -100
    r = fl.score(x, yi, metrics=["roc_auc"])
    keep = ign.copy()
    keep[:, 1] = True
    assert r["roc_auc"] == _per_label_macro(x, y, None, keep, "roc_auc", None)
    every = fl.score(x, np.full_like(yi, -100))
    assert every["count"] == 0 and all(math.isnan(every[m]) for m in ("nll", "accuracy", "roc_auc", "ece"))


def test_other_ignore_index_values_and_dtypes():
    x, y, yi, w, ign = _binary(seed=7)
    exp = fl.score(x, yi, sample_weight=w)
    assert_same_result(fl.score(x, np.where(ign, 255, y).astype(np.uint8), sample_weight=w, ignore_index=255), exp)
    assert_same_result(fl.score(x, np.where(ign, 7.0, y), sample_weight=w, ignore_index=7), exp)
    # a value the target's dtype cannot hold ignores nothing (and is no error)
    assert_same_result(fl.score(x, y.astype(np.uint8), ignore_index=-100), fl.score(x, y))
    t = y.astype(np.float32)
    t[3] = 2.0**62  # float32(2**62 + 1) == 2**62, but the value is not ignore_index
    with pytest.raises(ValueError, match=r"got 4.6\d*e\+18 at position \(3,\)"):
        fl.score(x, t, ignore_index=2**62 + 1)
    # the rule is literal: ignore_index=0 leaves out the negatives, also of a bool target
    pos = y == 1
    assert_same_result(fl.score(x, y.astype(bool), ignore_index=0), fl.score(x[pos], y[pos]))


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", [2, -1, 0.5, np.nan])
def test_other_values_are_errors_naming_the_value_and_its_position(bad):
    x, y, yi, _, _ = _binary(n=300, seed=8)
    t = yi.astype(np.float64 if isinstance(bad, float) else np.int64)
    t[123] = bad
    with pytest.raises(ValueError, match=rf"target: .*must be 0 or 1 \(or ignore_index, -100\), got {bad!r} "
                                         r"at position \(123,\)"):
        fl.score(x, t, chunk_rows=50)
    xm, _, ymi, _, _ = _multilabel(n=60, seed=8)
    tm = ymi.astype(t.dtype)
    tm[41, 3] = bad
    with pytest.raises(ValueError, match=rf"got {bad!r} at position \(41, 3\)"):
        fl.score(xm, tm, chunk_rows=8)


def test_the_default_ignore_index_is_an_error_when_another_is_given():
    x, y, yi, _, _ = _binary(n=100, seed=9)
    with pytest.raises(ValueError, match=r"must be 0 or 1 \(or ignore_index, -1\), got -100 at position"):
        fl.score(x, yi, ignore_index=-1)
    ok = np.where(yi == -100, -1, yi)
    assert_same_result(fl.score(x, ok, ignore_index=-1), fl.score(x, yi))
    with pytest.raises(TypeError, match="ignore_index"):
        fl.score(x, yi, ignore_index=None)


def test_a_rejected_update_leaves_the_scorer_unchanged():
    x, y, yi, w, _ = _multilabel(n=80, seed=10)
    s = fl.Scorer()
    s.update(x[:40], yi[:40], sample_weight=w[:40])
    before = s.compute()
    bad = yi[40:].copy()
    bad[5, 2] = 3
    with pytest.raises(ValueError, match=r"got 3 at position \(5, 2\)"):
        s.update(x[40:], bad, sample_weight=w[40:])
    assert_same_result(s.compute(), before)


# --------------------------------------------------------------------------- Scorer

@pytest.mark.parametrize("task", ["binary", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("auc_bins", [None, 9])
def test_scorer_bitwise_over_splits_merges_and_threads(task, weighted, auc_bins):
    x, _, t, w, _ = _binary(n=900, seed=11) if task == "binary" else _multilabel(n=500, seed=11)
    w = w if weighted else None
    kw = dict(auc_bins=auc_bins)
    exp = fl.score(x, t, sample_weight=w, **kw)
    rng = np.random.default_rng(12)
    old = fl.get_num_threads()
    try:
        for trial in range(4):
            fl.set_num_threads(1 + trial % 2)
            n = x.shape[0]
            cuts = np.unique(np.concatenate(([0, n], rng.integers(0, n, rng.integers(1, 10)))))
            assert_same_result(merge_tree(split_scorers(x, t, w, cuts, kw), rng).compute(), exp)
    finally:
        fl.set_num_threads(old)


def test_state_dict_keeps_the_ignored_elements_out_and_reads_version_1():
    x, _, t, w, _ = _multilabel(n=120, seed=13)
    s = fl.Scorer()
    s.update(x, t, sample_weight=w)
    d = s.state_dict()
    assert d["version"] == 2 and d["state"]["auc"]["kept"] is not None
    assert_same_result(fl.Scorer.from_state_dict(d).compute(), s.compute())
    # a state of version 1 (no kept flags: every element kept) still loads
    full = fl.Scorer()
    full.update(x, np.where(t == -100, 0, t))
    d1 = full.state_dict()
    assert d1["state"]["auc"]["kept"] is None
    d1["version"] = 1
    del d1["state"]["auc"]["kept"]
    assert_same_result(fl.Scorer.from_state_dict(d1).compute(), full.compute())
    bad = s.state_dict()
    bad["state"]["auc"]["kept"] = bad["state"]["auc"]["kept"][:, :2]
    with pytest.raises(ValueError, match="kept flags"):
        fl.Scorer.from_state_dict(bad)


def test_groups_leave_out_a_group_with_every_element_ignored():
    x, y, t, w, ign = _multilabel(n=300, seed=14)
    g = np.random.default_rng(5).integers(0, 4, 300)
    t[g == 2] = -100
    r = fl.score(x, t, sample_weight=w, group=g)
    assert sorted(r["groups"]) == [0, 1, 3]
    for key, sub in r["groups"].items():
        m = g == key
        assert_same_result(sub, fl.score(x[m], t[m], sample_weight=w[m]))
    assert r["count"] == int((t != -100).any(axis=1).sum())


# --------------------------------------------------------------------------- calibration_curve, fit_temperature

@pytest.mark.parametrize("kind", ["top_label", "positive"])
@pytest.mark.parametrize("weighted", [False, True])
def test_calibration_curve_drops_ignored_rows_and_elements(kind, weighted):
    x, y, yi, w, ign = _binary(seed=15)
    w = w if weighted else None
    keep = ~ign
    assert_same_result(fl.calibration_curve(x, yi, sample_weight=w, kind=kind, bins=10),
                       fl.calibration_curve(x[keep], y[keep], sample_weight=None if w is None else w[keep],
                                            kind=kind, bins=10))
    xm, ym, ymi, wm, ignm = _multilabel(seed=15)
    wm = wm if weighted else None
    xf, yf, wf = _flat(xm, ym, wm, ignm)
    assert_same_result(fl.calibration_curve(xm, ymi, sample_weight=wm, kind=kind, bins=10),
                       fl.calibration_curve(xf, yf, sample_weight=wf, kind=kind, bins=10))


def _informative(x, seed):
    """0/1 targets drawn from sigmoid(x / 2): the fitted temperature is about 2, inside the search."""
    return (np.random.default_rng(seed).random(x.shape) < 1.0 / (1.0 + np.exp(-x / 2.0))).astype(np.int64)


def test_fit_temperature_drops_ignored_rows_and_elements():
    x, _, _, w, ign = _binary(n=2000, seed=16)
    y = _informative(x, 1)
    keep = ~ign
    t = fl.fit_temperature(x, np.where(ign, -100, y), sample_weight=w)
    assert t == fl.fit_temperature(x[keep], y[keep], sample_weight=w[keep]) and 1.5 < t < 2.5
    xm, _, _, wm, ignm = _multilabel(n=600, seed=16)
    ym = _informative(xm, 2)
    xf, yf, wf = _flat(xm, ym, wm, ignm)
    t = fl.fit_temperature(xm, np.where(ignm, -100, ym), sample_weight=wm)
    assert t == fl.fit_temperature(xf, yf, sample_weight=wf) and 1.5 < t < 2.5


# --------------------------------------------------------------------------- command line, Dask

def test_cli_follows_the_rule(tmp_path, capsys):
    from fastlogits import cli
    from fastlogits._scorer import nan_to_none
    from test_faults import assert_one_line_error, run_main
    for name, (x, _, t, _, _) in (("b", _binary(n=400, seed=17)), ("m", _multilabel(n=200, seed=17))):
        np.save(tmp_path / f"x{name}.npy", x)
        np.save(tmp_path / f"t{name}.npy", t)
        assert cli.main(["score", str(tmp_path / f"x{name}.npy"), "--target", str(tmp_path / f"t{name}.npy"),
                         "--json", "--chunk-rows", "33"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got == {"task": "binary" if name == "b" else "multilabel", **nan_to_none(fl.score(x, t))}
        np.save(tmp_path / f"t7{name}.npy", np.where(t == -100, 7, t))
        assert cli.main(["score", str(tmp_path / f"x{name}.npy"), "--target", str(tmp_path / f"t7{name}.npy"),
                         "--ignore-index", "7", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == got
    bad = np.load(tmp_path / "tm.npy")
    bad[150, 1] = 2
    np.save(tmp_path / "bad.npy", bad)
    r = run_main(capsys, "score", tmp_path / "xm.npy", "--target", tmp_path / "bad.npy", "--chunk-rows", "16")
    assert_one_line_error(r, "target", "must be 0 or 1", "got 2 at position (150, 1)")


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_dask_follows_the_rule_for_any_chunking(task):
    da = pytest.importorskip("dask.array")
    import fastlogits.dask as fld
    if task == "binary":
        x, _, t, w, _ = _binary(n=600, seed=18)
        chunks = ((5, 300, 295),)
    else:
        x, _, t, w, _ = _multilabel(n=300, seed=18)
        chunks = ((7, 150, 143), 5)
    kw = dict(metrics=BINARY)
    for ab in (None, 10):
        got = fld.score(da.from_array(x, chunks=chunks), t, sample_weight=w, auc_bins=ab, **kw)
        assert_same_result(got, fl.score(x, t, sample_weight=w, auc_bins=ab, **kw))
    assert fld.fit_temperature(da.from_array(x, chunks=chunks), t, sample_weight=w) == \
        fl.fit_temperature(x, t, sample_weight=w)
