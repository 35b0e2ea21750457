"""calibration_curve (both kinds) against the reference, score's ece and scikit-learn;
fit_temperature's ignore_index, its warnings on a search bound, and its Dask version.

Tolerances (the reference in long double): bin weights are within 1e-15 relative (the
order-independent sums round once) and counts exact; accuracy and confidence are weighted means, held to 1e-12 relative
for float64 logits and 1e-6 for float32 (the confidences are computed in float32 there).
"""
import warnings

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref

from arrays import assert_rel_close


def _data(task, n=600, c=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        x = (rng.standard_normal((n, c)) * 2).astype(dtype)
        # labels drawn from softmax(x / 1.5): a model over-confident by a factor 1.5
        p = np.cumsum(ref.softmax(x.astype(np.float64) / 1.5), axis=1)
        return x, np.argmax(rng.random(n)[:, None] < p, axis=1)
    if task == "binary":
        x = (rng.standard_normal(n) * 2).astype(dtype)
        return x, (rng.random(n) < 1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.int64)
    x = (rng.standard_normal((n, c)) * 2).astype(dtype)
    return x, rng.random((n, c)) < 0.4


def _compare(got, want, rtol, context):
    for key in ("edges_low", "edges_high", "count"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{context} {key}")
    assert got["count"].dtype == np.int64
    assert_rel_close(got["weight"], want["weight"], 1e-15, context=f"{context} weight")
    for key in ("accuracy", "confidence"):
        assert_rel_close(got[key], want[key], rtol, atol=1e-300, context=f"{context} {key}")


CASES = [("multiclass", "top_label"), ("binary", "top_label"), ("multilabel", "top_label"),
         ("binary", "positive"), ("multilabel", "positive")]


@pytest.mark.parametrize("task,kind", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_parity_with_reference(task, kind, dtype, weighted):
    x, y = _data(task, dtype=dtype, seed=len(task) + len(kind))
    w = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if weighted else None
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for bins, temperature in [(15, 1.0), (7, 1.7), (1, 0.5)]:
        got = fl.calibration_curve(x, y, bins=bins, sample_weight=w, temperature=temperature, kind=kind)
        want = ref.calibration_curve(x.astype(np.longdouble), y, bins=bins, sample_weight=w,
                                     temperature=temperature, kind=kind)
        _compare(got, want, rtol, f"{task} {kind} {dtype.__name__} w={weighted} B={bins} T={temperature}")
        assert got["count"].sum() == y.size  # rows, or elements of a multilabel target


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
def test_top_label_is_the_ece_binning(task, weighted):
    """The curve's bins are the ece metric's: the ece recomputed from the curve is score's."""
    x, y = _data(task, n=3000, seed=3, dtype=np.float32)
    w = np.random.default_rng(2).uniform(0.1, 2.0, len(y)) if weighted else None
    for bins in (15, 10, 3):
        c = fl.calibration_curve(x, y, bins=bins, sample_weight=w)
        ece = fl.score(x, y, bins=bins, sample_weight=w, metrics="ece")["ece"]
        filled = c["count"] > 0
        mine = np.sum(c["weight"][filled] * np.abs(c["accuracy"] - c["confidence"])[filled]) / np.sum(c["weight"])
        assert mine == pytest.approx(ece, rel=1e-13, abs=0), (bins, mine, ece)
        if not weighted:
            np.testing.assert_array_equal(c["weight"], c["count"])


def test_ignore_index_rows_are_not_read():
    """Ignored rows count nowhere, whatever their logits (NaN padding included), and the
    result is the one of the kept rows alone; the same for fit_temperature."""
    x, y = _data("multiclass", n=900, seed=4)
    y = y.copy()
    y[::4] = -100
    xn = x.copy()
    xn[::4] = np.nan
    keep = y != -100
    for kw in ({}, {"temperature": 1.3, "bins": 9}):
        got = fl.calibration_curve(xn, y, **kw)
        want = fl.calibration_curve(x[keep], y[keep], **kw)
        for key, v in want.items():
            np.testing.assert_array_equal(got[key], v, err_msg=key)
    assert fl.fit_temperature(xn, y) == fl.fit_temperature(x[keep], y[keep])
    assert fl.fit_temperature(xn, np.where(y == -100, 7, y), ignore_index=7) == fl.fit_temperature(x[keep], y[keep])
    # (B, T, V) language-model layout and its axis=1 form, a binary task
    x3 = x.reshape(30, 30, 5)
    y3 = y.reshape(30, 30)
    want = fl.calibration_curve(x[keep], y[keep])
    got = fl.calibration_curve(np.ascontiguousarray(np.moveaxis(x3, 2, 1)), y3, axis=1)
    np.testing.assert_array_equal(got["weight"], want["weight"])
    xb, yb = _data("binary", n=500, seed=5)
    yb = np.where(np.arange(500) % 3 == 0, -100, yb)
    kb = yb != -100
    for kind in ("top_label", "positive"):
        got = fl.calibration_curve(xb, yb, kind=kind)
        want = ref.calibration_curve(xb[kb].astype(np.longdouble), yb[kb], kind=kind)
        _compare(got, want, 1e-12, f"binary ignore {kind}")
    with pytest.raises(IndexError, match=r"class index 5 at position \(7,\)"):
        bad = y.copy()
        bad[7] = 5
        fl.calibration_curve(xn, bad)


def test_positive_matches_sklearn():
    sk = pytest.importorskip("sklearn.calibration")
    x, y = _data("binary", n=5000, seed=6)
    c = fl.calibration_curve(x, y, bins=10, kind="positive")
    prob_true, prob_pred = sk.calibration_curve(y, 1 / (1 + np.exp(-x)), n_bins=10, strategy="uniform")
    filled = c["count"] > 0
    np.testing.assert_allclose(c["accuracy"][filled], prob_true, rtol=1e-12)
    np.testing.assert_allclose(c["confidence"][filled], prob_pred, rtol=1e-12)


def test_threads_bitwise_and_empty():
    x, y = _data("multiclass", n=20000, c=7, seed=7, dtype=np.float32)
    w = np.random.default_rng(3).random(len(y))
    before = fl.get_num_threads()
    try:
        fl.set_num_threads(1)
        one = fl.calibration_curve(x, y, sample_weight=w)
        fl.set_num_threads(3)
        three = fl.calibration_curve(x, y, sample_weight=w)
    finally:
        fl.set_num_threads(before)
    for key in one:
        assert one[key].tobytes() == three[key].tobytes(), key
    e = fl.calibration_curve(np.zeros((0, 3)), np.zeros(0, np.int64), bins=4)
    assert e["count"].tolist() == [0] * 4 and np.isnan(e["accuracy"]).all() and np.isnan(e["confidence"]).all()


def test_errors():
    x, y = _data("multiclass", n=10)
    with pytest.raises(ValueError, match="kind: 'positive' applies to the binary and multilabel"):
        fl.calibration_curve(x, y, kind="positive")
    with pytest.raises(ValueError, match="kind: expected 'top_label' or 'positive'"):
        fl.calibration_curve(x, y, kind="top")
    for bins in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="bins"):
            fl.calibration_curve(x, y, bins=bins)
    with pytest.raises(ValueError, match="temperature"):
        fl.calibration_curve(x, y, temperature=0)
    with pytest.raises(TypeError, match="ignore_index"):
        fl.calibration_curve(x, y, ignore_index="x")
    with pytest.raises(TypeError, match="ignore_index"):
        fl.fit_temperature(x, y, ignore_index=None)


# --------------------------------------------------------------------------- fit_temperature

def _separable(n=400, c=4, seed=8):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c))
    return x, np.argmax(x, axis=1)


def test_fit_temperature_warns_on_a_search_bound():
    x, y = _separable()
    with pytest.warns(RuntimeWarning, match=r"separable.*T = 1e-06"):
        assert fl.fit_temperature(x, y) == 1e-6
    wrong = (y + 1) % 4
    with pytest.warns(RuntimeWarning, match=r"no usable information.*T = 1e\+06"):
        assert fl.fit_temperature(x, wrong) == 1e6
    xb = np.linspace(-3, 3, 100)
    with pytest.warns(RuntimeWarning, match="separable"):
        assert fl.fit_temperature(xb, xb > 0) == 1e-6
    # an interior optimum: no warning, and the reference's
    rng = np.random.default_rng(9)
    y2 = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 4, len(y)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = fl.fit_temperature(x, y2)
    assert t == pytest.approx(ref.fit_temperature(x, y2), rel=1e-6)


def test_only_the_given_ignore_index_is_ignored():
    """Regression: with ignore_index=7, a target of -100 (the default ignore_index) was
    silently left out instead of being an out-of-range class index, as cross_entropy says."""
    x, y = _data("multiclass", n=300, seed=6)
    bad = y.copy()
    bad[11] = -100
    bad[::5] = 7
    with pytest.raises(IndexError, match=r"class index -100 at position \(11,\)"):
        fl.cross_entropy(x, bad, ignore_index=7)
    with pytest.raises(IndexError, match=r"class index -100 at position \(11,\)"):
        fl.calibration_curve(x, bad, ignore_index=7)
    with pytest.raises(IndexError, match=r"class index -100 at position \(11,\)"):
        fl.fit_temperature(x, bad, ignore_index=7)
    keep = bad != 7
    ok = np.where(keep, y, 7)
    want = fl.calibration_curve(x[keep], y[keep])
    for key, v in fl.calibration_curve(x, ok, ignore_index=7).items():
        np.testing.assert_array_equal(v, want[key], err_msg=key)
    assert fl.fit_temperature(x, ok, ignore_index=7) == fl.fit_temperature(x[keep], y[keep])


def test_fit_temperature_ignore_index_matches_reference():
    x, y = _data("multiclass", n=800, seed=10)
    y = np.where(np.arange(800) % 5 == 0, -100, y)
    assert fl.fit_temperature(x, y) == pytest.approx(ref.fit_temperature(x, y), rel=1e-6)
    w = np.random.default_rng(4).random(800)
    assert fl.fit_temperature(x, y, sample_weight=w) == pytest.approx(
        ref.fit_temperature(x, y, sample_weight=w), rel=1e-6)


def test_fit_temperature_dask_bitwise():
    da = pytest.importorskip("dask.array")
    import fastlogits.dask as fld

    x, y = _data("multiclass", n=1200, seed=11, dtype=np.float32)
    y = np.where(np.arange(1200) % 7 == 0, -100, y)
    want = fl.fit_temperature(x, y)
    for chunks in [(1200, 5), (100, 5), (333, 5)]:
        assert fld.fit_temperature(da.from_array(x, chunks=chunks), y) == want, chunks
    w = np.random.default_rng(5).random(1200)
    assert fld.fit_temperature(da.from_array(x, chunks=(250, 5)), da.from_array(y, chunks=300),
                               sample_weight=w) == fl.fit_temperature(x, y, sample_weight=w)
    xb, yb = _data("binary", n=900, seed=12)
    assert fld.fit_temperature(da.from_array(xb, chunks=200), yb) == fl.fit_temperature(xb, yb)
    xs, ys = _separable()
    with pytest.warns(RuntimeWarning, match="separable"):
        assert fld.fit_temperature(da.from_array(xs, chunks=(100, 4)), ys) == 1e-6
