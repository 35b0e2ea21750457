"""The reliability diagram's data (fastlogits._plot.reliability_layout), not its pixels: what
the bars, gap bars, markers, counts, labels and title say for calibrated, over- and
under-confident models, binary tasks drawn on bins of p, and the PNG written by the CLI."""
import io

import numpy as np
import pytest

import fastlogits as fl
from fastlogits._plot import draw_reliability, reliability_kind, reliability_layout


def _model(scale, n=20000, c=10, seed=0):
    """Logits z * scale for labels drawn from softmax(z): calibrated at scale 1, over-confident
    above, under-confident below."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 2.5
    p = np.cumsum(fl.softmax(z), axis=1)
    y = np.argmax(rng.random(n)[:, None] < p, axis=1)
    return z * scale, y


def _layout(x, y, task=None, bins=15):
    task = task or ("binary" if x.ndim == 1 else "multiclass")
    curve = fl.calibration_curve(x, y, bins=bins, kind=reliability_kind(task))
    ece = fl.score(x, y, bins=bins, metrics="ece")["ece"]
    return reliability_layout(curve, task, ece, "logits.npy"), curve, ece


@pytest.mark.parametrize("scale", [1.0, 2.5, 0.4])
def test_bars_gaps_markers_and_counts(scale):
    lay, curve, ece = _layout(*_model(scale))
    f = lay["filled"]
    np.testing.assert_array_equal(f, curve["count"] > 0)
    # the bar is the accuracy, the marker the mean confidence (not the accuracy)
    np.testing.assert_array_equal(lay["accuracy"][f], curve["accuracy"][f])
    np.testing.assert_array_equal(lay["confidence"][f], curve["confidence"][f])
    assert lay["labels"]["marker"] == "mean confidence" and lay["labels"]["bar"] == "accuracy"
    # the gap bar spans accuracy .. confidence
    lo, top = lay["gap_bottom"][f], lay["gap_bottom"][f] + lay["gap_height"][f]
    np.testing.assert_allclose(lo, np.minimum(curve["accuracy"], curve["confidence"])[f], rtol=0, atol=0)
    np.testing.assert_allclose(top, np.maximum(curve["accuracy"], curve["confidence"])[f], rtol=1e-15)
    # counts per bin and N
    assert lay["total"] == 20000 == int(curve["count"].sum())
    np.testing.assert_array_equal(lay["count"], curve["count"])
    assert "N = 20,000" in lay["title"] and f"ECE (top-label) = {ece:.4f}" in lay["title"]
    # weighted gaps: the ece
    w = curve["weight"][f]
    assert np.sum(w * lay["gap_height"][f]) / w.sum() == pytest.approx(ece, rel=1e-12)
    over = curve["confidence"][f] - curve["accuracy"][f]
    heavy = curve["count"][f] > 200
    if scale > 1:
        assert np.all(over[heavy] > 0)    # over-confident: confidence above accuracy
    elif scale < 1:
        assert np.all(over[heavy] < 0)    # under-confident
    else:
        assert ece < 0.02


def test_binary_tasks_bin_p_and_say_so():
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000) * 2
    y = rng.random(5000) < 1 / (1 + np.exp(-x))
    lay, curve, _ = _layout(x, y)
    assert reliability_kind("binary") == "positive"
    assert "bins of p" in lay["title"] and "binary" in lay["title"]
    assert "positive" in lay["xlabel"] and lay["labels"]["marker"] == "mean predicted p"
    # bins of p fill both halves, where top-label bins below 0.5 are always empty
    assert curve["count"][:7].sum() > 1000 and curve["count"][8:].sum() > 1000
    top = fl.calibration_curve(x, y, kind="top_label")
    assert top["count"][:7].sum() == 0
    np.testing.assert_allclose(lay["confidence"][lay["filled"]], curve["confidence"][lay["filled"]])


def test_draws_a_png_for_each_case():
    plt = pytest.importorskip("matplotlib.pyplot")
    for scale in (1.0, 2.5, 0.4):
        buf = io.BytesIO()
        draw_reliability(plt, _layout(*_model(scale, n=1000))[0], buf)
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
