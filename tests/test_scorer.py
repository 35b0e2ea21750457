"""fl.Scorer (API section 7): parity of the added metrics with scikit-learn and torchmetrics,
bitwise reproducibility over splits, merge trees and thread counts, ignore_index with
language-model layouts, groups, state_dict/pickle round trips, and the errors."""
import math
import pickle

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _score_check
from arrays import assert_same_result, class_targets, merge_tree, split_scorers

PER_CLASS_KEYS = ("confusion_matrix", "per_class", "macro_f1", "weighted_f1", "micro_f1", "balanced_accuracy",
                  "classwise_ece")


def _data(n=3000, c=6, seed=0, dtype=np.float32, scale=2.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c)) * scale).astype(dtype)
    y = rng.integers(0, c, n)
    w = rng.random(n) * 3
    return x, y, w


def _softmax64(x):
    z = np.asarray(x, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- scikit-learn parity

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("weighted", [False, True])
def test_per_class_block_matches_sklearn(weighted, dtype):
    from arrays import as_dtype
    sk = pytest.importorskip("sklearn.metrics")
    x, y, w = _data()
    x = x.astype(as_dtype(dtype))
    sw = w if weighted else None
    r = fl.score(x, y, per_class=True, sample_weight=sw)
    pred = np.argmax(x.astype(np.float32), axis=1)
    cm = sk.confusion_matrix(y, pred, sample_weight=sw)
    np.testing.assert_allclose(r["confusion_matrix"], cm, rtol=1e-13)
    p, rc, f, s = sk.precision_recall_fscore_support(y, pred, sample_weight=sw, zero_division=0)
    pc = r["per_class"]
    for got, exp in ((pc["precision"], p), (pc["recall"], rc), (pc["f1"], f), (pc["support"], s)):
        np.testing.assert_allclose(got, exp, rtol=1e-12)
    for avg in ("macro", "weighted", "micro"):
        assert r[f"{avg}_f1"] == pytest.approx(sk.f1_score(y, pred, average=avg, sample_weight=sw,
                                                          zero_division=0), rel=1e-12)
    assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred, sample_weight=sw), rel=1e-12)
    assert r["micro_f1"] == pytest.approx(r["accuracy"], rel=1e-12)


def test_macro_f1_over_present_classes_and_zero_division():
    sk = pytest.importorskip("sklearn.metrics")
    # class 3 never occurs (targets nor predictions); class 2 only predicted
    x = np.array([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0], [5, 0, 0, 0], [0, 5, 0, 0]], np.float64)
    y = np.array([0, 1, 0, 1, 1])
    r = fl.score(x, y, per_class=True)
    pred = x.argmax(1)
    assert r["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0), rel=1e-15)
    np.testing.assert_array_equal(r["per_class"]["precision"][2:], [0.0, 0.0])
    assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), rel=1e-15)


def test_classwise_ece_from_the_definition():
    x, y, w = _data(n=2000, c=4, seed=3)
    bins = 10
    r = fl.score(x, y, metrics=["classwise_ece"], bins=bins, sample_weight=w)
    p = _softmax64(x)
    eces = []
    for c in range(4):
        b = np.minimum((p[:, c] * bins).astype(int), bins - 1)
        gap = sum(abs(np.sum(w[b == j] * (y[b == j] == c)) - np.sum(w[b == j] * p[b == j, c])) for j in range(bins))
        eces.append(gap / w.sum())
    assert r["classwise_ece"] == pytest.approx(np.mean(eces), rel=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_ovr_exact_matches_sklearn(weighted):
    sk = pytest.importorskip("sklearn.metrics")
    x, y, w = _data(n=1500, c=5, seed=4)
    sw = w if weighted else None
    r = fl.score(x, y, metrics=["roc_auc_ovr", "average_precision_ovr"], sample_weight=sw, temperature=1.3)
    p = _softmax64(np.asarray(x, np.float64) / 1.3)
    assert r["roc_auc_ovr"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr", average="macro",
                                                              sample_weight=sw), rel=1e-6)
    onehot = np.eye(5)[y]
    ap = np.mean([sk.average_precision_score(onehot[:, c], p[:, c], sample_weight=sw) for c in range(5)])
    assert r["average_precision_ovr"] == pytest.approx(ap, rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_binary_metrics_match_sklearn(weighted):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    x = rng.normal(size=2000)
    x[::50] = x[1::50]  # ties
    y = (rng.random(2000) < 1 / (1 + np.exp(-x))).astype(int)
    sw = rng.random(2000) if weighted else None
    r = fl.score(x, y, sample_weight=sw)
    pred = (x > 0).astype(int)
    assert r["f1"] == pytest.approx(sk.f1_score(y, pred, sample_weight=sw), rel=1e-12)
    assert r["precision"] == pytest.approx(sk.precision_score(y, pred, sample_weight=sw), rel=1e-12)
    assert r["recall"] == pytest.approx(sk.recall_score(y, pred, sample_weight=sw), rel=1e-12)
    assert r["average_precision"] == pytest.approx(sk.average_precision_score(y, x, sample_weight=sw), rel=1e-12)
    assert r["roc_auc"] == pytest.approx(sk.roc_auc_score(y, x, sample_weight=sw), rel=1e-12)


def test_multilabel_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(800, 4))
    y = (rng.random((800, 4)) < 1 / (1 + np.exp(-2 * x))).astype(int)
    r = fl.score(x, y)
    pred = (x > 0).astype(int)
    assert r["f1"] == pytest.approx(sk.f1_score(y, pred, average="micro"), rel=1e-12)
    assert r["average_precision"] == pytest.approx(sk.average_precision_score(y, x, average="macro"), rel=1e-12)


# --------------------------------------------------------------------------- torchmetrics parity (binned)

@pytest.mark.parametrize("bins", [5, 100])
def test_binned_ovr_matches_torchmetrics(bins):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    x, y, _ = _data(n=2000, c=4, seed=7)
    r = fl.score(x, y, metrics=["roc_auc_ovr", "average_precision_ovr"], auc_bins=bins)
    p = torch.from_numpy(_softmax64(x).astype(np.float32))
    t = torch.from_numpy(y)
    auc = tmf.multiclass_auroc(p, t, num_classes=4, thresholds=bins).item()
    ap = tmf.multiclass_average_precision(p, t, num_classes=4, thresholds=bins).item()
    assert r["roc_auc_ovr"] == pytest.approx(auc, abs=1e-6)
    assert r["average_precision_ovr"] == pytest.approx(ap, abs=1e-6)


def test_binned_binary_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(8)
    x = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-x))).astype(int)
    r = fl.score(x, y, metrics=["roc_auc", "average_precision"], auc_bins=50)
    p = torch.from_numpy(1 / (1 + np.exp(-x))).float()
    t = torch.from_numpy(y)
    assert r["roc_auc"] == pytest.approx(tmf.binary_auroc(p, t, thresholds=50).item(), abs=1e-6)
    assert r["average_precision"] == pytest.approx(tmf.binary_average_precision(p, t, thresholds=50).item(), abs=1e-6)


# --------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("auc_bins", [None, 20])
def test_bitwise_over_splits_merge_trees_and_threads(weighted, auc_bins):
    x, y, w = _data(n=1200, c=7, seed=9)
    y[::13] = -100
    w = w if weighted else None
    g = np.random.default_rng(1).integers(0, 3, 1200)
    kw = dict(per_class=True, auc_bins=auc_bins,
              metrics=list(_score_check.DEFAULT_METRICS["multiclass"]) + ["roc_auc_ovr", "average_precision_ovr"])
    whole = fl.Scorer(**kw)
    whole.update(x, y, sample_weight=w, group=g)
    expected = whole.compute()
    rng = np.random.default_rng(2)
    old = fl.get_num_threads()
    try:
        for trial in range(4):
            fl.set_num_threads(1 + trial % 3)
            cuts = np.unique(np.concatenate(([0, 1200], rng.integers(0, 1200, rng.integers(1, 12)))))
            assert_same_result(merge_tree(split_scorers(x, y, w, cuts, kw, g), rng).compute(), expected)
    finally:
        fl.set_num_threads(old)


def test_score_equals_one_scorer_for_every_chunk_rows():
    x, y, w = _data(n=900, c=5, seed=10)
    s = fl.Scorer(per_class=True)
    s.update(x, y, sample_weight=w)
    for chunk_rows in (1, 77, 10**6):
        assert_same_result(fl.score(x, y, per_class=True, sample_weight=w, chunk_rows=chunk_rows), s.compute())


# --------------------------------------------------------------------------- language-model layouts

@pytest.mark.parametrize("layout", ["btv", "bvt"])
def test_ignore_index_with_lm_layouts(layout):
    rng = np.random.default_rng(11)
    b, t, v = 3, 17, 50
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    labels = class_targets((b, t, v), axis=-1, seed=3, ignore_frac=0.3)
    keep = labels != -100
    flat = fl.score(logits[keep], labels[keep], per_class=True)
    if layout == "btv":
        got = fl.score(logits, labels, per_class=True)
    else:
        got = fl.score(np.moveaxis(logits, -1, 1), labels, axis=1, per_class=True)
    assert got["count"] == int(keep.sum())
    for key in ("nll", "perplexity", "accuracy", "brier", "ece", "macro_f1"):
        assert got[key] == pytest.approx(flat[key], rel=1e-12), key
    np.testing.assert_array_equal(got["confusion_matrix"], flat["confusion_matrix"])
    ce = fl.cross_entropy(logits, labels)
    assert got["nll"] == pytest.approx(ce, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(ce), rel=1e-6)


def test_padding_logits_are_never_read_into_metrics():
    x, y, _ = _data(n=50, c=4)
    y[::2] = -100
    x2 = x.copy()
    x2[::2] = np.nan  # padding rows may hold anything
    assert_same_result(fl.score(x2, y, per_class=True), fl.score(x, y, per_class=True))


# --------------------------------------------------------------------------- groups

def test_groups_equal_scoring_each_slice():
    x, y, w = _data(n=600, c=4, seed=12)
    g = np.random.default_rng(0).integers(0, 4, 600)
    g[y == 3] = 7
    y[g == 2] = -100  # group 2 has no counted row: left out
    r = fl.score(x, y, sample_weight=w, group=g, per_class=True)
    assert sorted(r["groups"]) == [0, 1, 3, 7]
    for key, sub in r["groups"].items():
        m = g == key
        exp = fl.score(x[m], y[m], sample_weight=w[m], per_class=True)
        assert_same_result(sub, exp)
    assert "groups" not in fl.score(x, y)


def test_group_on_every_update_or_none():
    x, y, _ = _data(n=10, c=3)
    s = fl.Scorer()
    s.update(x, y, group=np.zeros(10, int))
    with pytest.raises(ValueError, match="group"):
        s.update(x, y)
    with pytest.raises(ValueError, match="group: expected shape"):
        fl.Scorer().update(x, y, group=np.zeros(9, int))
    with pytest.raises(TypeError, match="group: expected an integer"):
        fl.Scorer().update(x, y, group=np.zeros(10))


# --------------------------------------------------------------------------- state

def test_state_dict_and_pickle_round_trips():
    x, y, w = _data(n=300, c=5)
    for kw in (dict(per_class=True), dict(metrics=["count", "roc_auc_ovr"]),
               dict(auc_bins=10, metrics=["count", "roc_auc_ovr"])):
        s = fl.Scorer(**kw)
        s.update(x[:100], y[:100])
        s.update(x[100:], y[100:], sample_weight=w[100:])
        assert_same_result(fl.Scorer.from_state_dict(s.state_dict()).compute(), s.compute())
        assert_same_result(pickle.loads(pickle.dumps(s)).compute(), s.compute())
        t = pickle.loads(pickle.dumps(s))
        t.update(x[:5], y[:5])  # the copy is independent
        assert s.compute()["count"] == 300
    bad = fl.Scorer(per_class=True)
    bad.update(x, y)
    d = bad.state_dict()
    d["state"]["sums"] = d["state"]["sums"][:3]
    with pytest.raises(ValueError, match="sums"):
        fl.Scorer.from_state_dict(d)
    with pytest.raises(ValueError, match="state_dict"):
        fl.Scorer.from_state_dict({"format": "x"})


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_state_dict_keeps_half_precision_scores(dtype):
    """Regression: the exact ranking metrics keep the logits in their own dtype, and a state
    holding bfloat16 scores was refused by from_state_dict (and so by pickle, and by
    fastlogits.dask on a distributed cluster): 'expected (rows, C) float scores'."""
    dt = pytest.importorskip("ml_dtypes").bfloat16 if dtype == "bfloat16" else np.float16
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, 3)).astype(dt)
    y = rng.random((200, 3)) < 0.4
    s = fl.Scorer(metrics=["count", "roc_auc", "average_precision"])
    s.update(x, y)
    assert_same_result(fl.Scorer.from_state_dict(s.state_dict()).compute(), s.compute())
    assert_same_result(pickle.loads(pickle.dumps(s)).compute(), fl.score(x, y, metrics=["count", "roc_auc", "average_precision"]))


def test_empty_reset_and_inference():
    s = fl.Scorer()
    assert s.compute() == {"count": 0}
    r = fl.Scorer("multiclass", num_classes=3).compute()
    assert r["count"] == 0 and math.isnan(r["nll"])
    x, y, _ = _data(n=20, c=3)
    s.update(x, y)
    assert s.task == "multiclass" and s.num_classes == 3
    with pytest.raises(ValueError, match="expected 3 classes"):
        s.update(np.zeros((2, 4)), [0, 1])
    s.reset()
    assert s.task is None and s.compute() == {"count": 0}
    s.update(np.zeros((2, 4)), [0, 1])
    assert s.num_classes == 4


def test_rejected_update_leaves_state_unchanged():
    x, y, w = _data(n=40, c=3)
    s = fl.Scorer(per_class=True)
    s.update(x, y, sample_weight=w)
    before = s.state_dict()
    bad = y.copy()
    bad[7] = 3
    with pytest.raises(IndexError, match=r"position \(7,\)"):
        s.update(x, bad)
    with pytest.raises(ValueError):
        s.update(x, y, sample_weight=w[:3])
    assert_same_result(s.state_dict()["state"], before["state"])


def test_merge_checks_the_configuration():
    a, b = fl.Scorer(bins=10), fl.Scorer(bins=15)
    with pytest.raises(ValueError, match="bins"):
        a.merge(b)
    with pytest.raises(TypeError, match="Scorer"):
        a.merge({})
    x, y, _ = _data(n=10, c=3)
    a.update(x, y)
    c = fl.Scorer(bins=10)
    assert c.merge(a) is c and c.compute()["count"] == 10
    d = fl.Scorer(bins=10)
    d.update(np.zeros((3, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="num_classes"):
        d.merge(a)


class _CountingNumpy:
    """NumPy as ``fastlogits._auc`` sees it, adding up the elements of every array its
    array-making functions return: what keeping the scores costs in copies."""

    MAKERS = ("array", "asarray", "ascontiguousarray", "concatenate", "copy", "empty", "zeros", "ones", "full",
              "resize", "append", "stack", "vstack", "hstack")

    def __init__(self):
        self.elements = 0

    def __getattr__(self, name):
        f = getattr(np, name)
        if name not in self.MAKERS:
            return f

        def counted(*args, **kwargs):
            out = f(*args, **kwargs)
            self.elements += int(np.size(out))
            return out
        return counted


def test_kept_scores_grow_in_linear_work(monkeypatch):
    """Regression: the exact ranking metrics kept their scores as lists of chunks, joined into
    one array every 64 chunks, so N rows streamed in chunks of m rows were copied about
    N / (128 m) times each: quadratic in the number of updates and of merges (fl.score over a
    memmap with a small chunk_rows, fastlogits.dask's driver merging the blocks' Scorers).
    They now grow in place: every kept row is copied a bounded number of times. Counted: the
    elements of the arrays NumPy makes for the kept scores (a score and a label per row here;
    the old code made about 48 per row over these 2000 updates, and as many over 2000 merges)."""
    from fastlogits import _auc
    rng = np.random.default_rng(12)
    n, m = 20000, 10
    x = rng.normal(size=n)
    y = rng.random(n) < 0.3
    kw = dict(metrics=["roc_auc", "average_precision"])
    want = fl.score(x, y, **kw)
    parts = []
    for lo in range(0, n, m):
        part = fl.Scorer(**kw)
        part.update(x[lo:lo + m], y[lo:lo + m])
        parts.append(part)
    counting = _CountingNumpy()
    monkeypatch.setattr(_auc, "np", counting)
    streamed = fl.Scorer(**kw)
    for lo in range(0, n, m):
        streamed.update(x[lo:lo + m], y[lo:lo + m])
    assert counting.elements <= 16 * n, f"{counting.elements / n:.1f} elements per row over {n // m} updates"
    counting.elements = 0
    merged = fl.Scorer(**kw)
    for part in parts:
        merged.merge(part)
    assert counting.elements <= 16 * n, f"{counting.elements / n:.1f} elements per row over {n // m} merges"
    monkeypatch.undo()
    assert streamed.compute() == want and merged.compute() == want


def test_merge_shares_no_array_with_the_other_scorer():
    """Regression: merging a Scorer that had weighted rows into one that had none took the
    other's weighted confusion states as they were (the same array), so the next weighted
    update of the first added its rows to the second Scorer too."""
    x, y, w = _data(n=60, c=4, seed=21)
    a = fl.Scorer(per_class=True)
    a.update(x[:20], y[:20])
    b = fl.Scorer(per_class=True)
    b.update(x[20:40], y[20:40], sample_weight=w[20:40])
    before = b.compute()
    a.merge(b)
    a.update(x[40:], y[40:], sample_weight=w[40:])
    assert_same_result(b.compute(), before)
    one = fl.Scorer(per_class=True)
    one.update(x[:20], y[:20])
    one.update(x[20:40], y[20:40], sample_weight=w[20:40])
    one.update(x[40:], y[40:], sample_weight=w[40:])
    assert_same_result(a.compute(), one.compute())


def test_argument_errors():
    with pytest.raises(ValueError, match="auc_bins"):
        fl.Scorer(auc_bins=1)
    with pytest.raises(ValueError, match="num_classes"):
        fl.Scorer("binary", num_classes=2)
    with pytest.raises(ValueError, match="metrics: unknown metric"):
        fl.Scorer(metrics=["f2"])
    with pytest.raises(TypeError, match="ignore_index"):
        fl.Scorer(ignore_index=1.5)
    with pytest.raises(ValueError, match="does not apply"):
        fl.Scorer(metrics=["f1"]).update(np.zeros((2, 3)), [0, 1])


@pytest.mark.slow
def test_dask_distributed_uneven_chunks():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    import fastlogits.dask as fld
    x, y, w = _data(n=2000, c=6, seed=13)
    y[::9] = -100
    g = np.random.default_rng(3).integers(0, 3, 2000)
    kw = dict(per_class=True, auc_bins=16, metrics=list(_score_check.DEFAULT_METRICS["multiclass"]) + ["roc_auc_ovr"])
    expected = fl.score(x, y, sample_weight=w, group=g, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl):
        got = fld.score(da.from_array(x, chunks=((700, 13, 1287), 6)), da.from_array(y, chunks=500),
                        sample_weight=da.from_array(w, chunks=333), group=g, **kw)
    assert_same_result(got, expected)


def test_dask_any_chunking():
    da = pytest.importorskip("dask.array")
    import fastlogits.dask as fld
    x, y, w = _data(n=500, c=5, seed=14)
    y[::7] = -100
    kw = dict(per_class=True, metrics=list(_score_check.DEFAULT_METRICS["multiclass"]) + ["roc_auc_ovr"])
    expected = fl.score(x, y, sample_weight=w, **kw)
    got = fld.score(da.from_array(x, chunks=((3, 250, 247), 5)), y, sample_weight=w, **kw)
    assert_same_result(got, expected)


# --------------------------------------------------------------------------- command line

def test_cli_per_class_groups_ignore_index_and_strict_json(tmp_path, capsys):
    import json

    from fastlogits import cli
    x, y, w = _data(n=300, c=4, seed=15)
    y[::5] = -100
    g = np.random.default_rng(4).integers(0, 3, 300)
    x[0] = np.nan  # a NaN metric must come out as null
    y[0] = 1
    for name, a in (("x", x), ("y", y), ("g", g)):
        np.save(tmp_path / f"{name}.npy", a)
    args = ["score", str(tmp_path / "x.npy"), "--target", str(tmp_path / "y.npy"), "--per-class",
            "--group", str(tmp_path / "g.npy")]
    assert cli.main(args + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    exp = fl.score(x, y, per_class=True, group=g)
    assert got["count"] == exp["count"] and got["nll"] is None
    assert got["confusion_matrix"] == exp["confusion_matrix"].tolist()
    assert sorted(got["groups"]) == ["0", "1", "2"]
    assert got["groups"]["1"]["macro_f1"] == exp["groups"][1]["macro_f1"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "per class" in text and "confusion matrix" in text and "groups" in text
    np.save(tmp_path / "y7.npy", np.where(y == -100, 7, y))
    assert cli.main(["score", str(tmp_path / "x.npy"), "--target", str(tmp_path / "y7.npy"), "--ignore-index", "7",
                     "--json", "--metrics", "count"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == exp["count"]


# --------------------------------------------------------------------------- special values, weighted paths

def test_special_rows_in_the_per_class_block():
    x, y, _ = _data(n=200, c=4, seed=16, dtype=np.float64)
    x[3, 1] = np.nan
    x[5] = -np.inf
    x[9, 2] = np.inf
    r = fl.score(x, y, per_class=True, metrics=["count", "roc_auc_ovr"], auc_bins=11)
    pred = fl.predict(x)
    cm = np.zeros((4, 4))
    np.add.at(cm, (y, pred), 1)
    np.testing.assert_array_equal(r["confusion_matrix"], cm)  # NaN rows predicted as predict does
    assert math.isnan(r["classwise_ece"])                     # their softmax is NaN
    assert 0.0 <= r["roc_auc_ovr"] <= 1.0                     # NaN scores are never positive


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_weights_equal_no_weights(dtype):
    """The weighted path (order-independent states per value) against the unweighted one
    (exact counts and fixed-point sums, first bins derived)."""
    x, y, _ = _data(n=700, c=6, seed=17, dtype=dtype)
    y[::11] = -100
    kw = dict(per_class=True, auc_bins=25, metrics=["count", "roc_auc_ovr", "average_precision_ovr"])
    a = fl.score(x, y, **kw)
    b = fl.score(x, y, sample_weight=np.ones(700), **kw)
    np.testing.assert_array_equal(a["confusion_matrix"], b["confusion_matrix"])
    for key in ("classwise_ece", "roc_auc_ovr", "average_precision_ovr", "macro_f1", "balanced_accuracy"):
        assert a[key] == pytest.approx(b[key], rel=1e-14, abs=1e-17), key
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(300, 3))
    yb = rng.random((300, 3)) < 0.4
    kb = dict(auc_bins=9, metrics=["roc_auc", "average_precision"])
    ra, rb = fl.score(xb, yb, **kb), fl.score(xb, yb, sample_weight=np.ones(300), **kb)
    assert ra == pytest.approx(rb, rel=1e-14)


def test_a_confusion_matrix_too_large_is_refused_up_front():
    with pytest.raises(ValueError, match="per_class: the confusion matrix of 128256 classes"):
        fl.score(np.zeros((2, 128256), np.float32), [0, 1], per_class=True)


def test_cli_group_and_target_columns_of_a_parquet_table(tmp_path, capsys):
    import json

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from fastlogits import cli
    x, y, _ = _data(n=120, c=3, seed=18)
    y[::4] = -100
    g = np.arange(120) % 2
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 3), "y": y,
                             "slice": g}), path)
    assert cli.main(["score", str(path), "--column", "logits", "--target-column", "y", "--group-column", "slice",
                     "--metrics", "count,roc_auc_ovr", "--auc-bins", "8", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    exp = fl.score(x, y, group=g, metrics="count,roc_auc_ovr", auc_bins=8)
    assert got["roc_auc_ovr"] == exp["roc_auc_ovr"] and got["groups"]["1"]["count"] == exp["groups"][1]["count"]
