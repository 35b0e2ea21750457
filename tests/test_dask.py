"""fastlogits.dask against the in-memory functions, on a distributed cluster and on the local
schedulers. Reductions must be equal to the in-memory results to 1e-12 relative (issue 7's
criterion); every reduced sum is order-independent (csrc/fl_rsum.h) and each task returns the
state of its block, so they are asserted bitwise equal here, for random chunkings of every row
axis too. Array results are per row, so they are bitwise too."""
import math

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastlogits as fl  # noqa: E402
import fastlogits.dask as fld  # noqa: E402

from arrays import assert_rel_close  # noqa: E402

RNG = np.random.default_rng(7)
N, C = 6000, 12
UNEVEN = (1000, 1733, 2267, 1000)  # chunk boundaries that fall nowhere in particular


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(params=["distributed", "synchronous", "threads"])
def scheduler(request, client):
    """Every test runs on the cluster (the active client) and on the two local schedulers."""
    if request.param == "distributed":
        with dask.config.set(scheduler=client):
            yield request.param
    else:
        with dask.config.set(scheduler=request.param):
            yield request.param


def _multiclass():
    x = (RNG.normal(size=(N, C)) * 3).astype(np.float32)
    x[5, 3] = x[5, 4]  # a tie
    return x, RNG.integers(0, C, N)


def _binary():
    return RNG.normal(size=N) * 2, RNG.random(N) < 0.35


def _multilabel():
    return RNG.normal(size=(N, 5)).astype(np.float32), RNG.random((N, 5)) < 0.3


def _same_result(got, want):
    """Bitwise equal (NaN equal to NaN); on failure the relative error is shown against 1e-12."""
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            _same_result(got[k], want[k])
        return
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
        return
    assert_rel_close(np.float64(got), np.float64(want), 1e-12)
    assert got == want


WEIGHTS = [None, "sample"]


@pytest.mark.parametrize("weighted", WEIGHTS)
def test_score_multiclass(scheduler, weighted):
    x, y = _multiclass()
    w = RNG.random(N) if weighted else None
    got = fld.score(da.from_array(x, chunks=(UNEVEN, C)), da.from_array(y, chunks=1500), sample_weight=w, k=3)
    _same_result(got, fl.score(x, y, sample_weight=w, k=3))


@pytest.mark.parametrize("weighted", WEIGHTS)
def test_score_binary_and_multilabel(scheduler, weighted):
    w = RNG.random(N) if weighted else None
    xb, yb = _binary()
    _same_result(fld.score(da.from_array(xb, chunks=(UNEVEN,)), yb, sample_weight=w),
                 fl.score(xb, yb, sample_weight=w))
    xm, ym = _multilabel()
    _same_result(fld.score(da.from_array(xm, chunks=(UNEVEN, 5)), da.from_array(ym, chunks=(2000, 5)),
                           sample_weight=w, temperature=1.7, bins=10),
                 fl.score(xm, ym, sample_weight=w, temperature=1.7, bins=10))


def test_score_class_axis_1_many_rows_per_lead(scheduler):
    """(N, C, H, W) logits with axis=1: rows per lead index exceed a block (several blocks per
    lead index), chunks along N."""
    x = RNG.normal(size=(7, 4, 40, 120)).astype(np.float32)
    y = RNG.integers(0, 4, (7, 40, 120))
    got = fld.score(da.from_array(x, chunks=(3, 4, 40, 120)), y, axis=1)
    _same_result(got, fl.score(x, y, axis=1))


@pytest.mark.parametrize("weighted", WEIGHTS)
def test_cross_entropy(scheduler, weighted):
    x, y = _multiclass()
    y[::7] = -100
    s = RNG.random(N) if weighted else None
    xd = da.from_array(x, chunks=(UNEVEN, C))
    kw = dict(sample_weight=s, weight=np.linspace(0.5, 2.0, C), label_smoothing=0.1, z_loss=1e-3)
    for reduction in ("mean", "sum"):
        _same_result(fld.cross_entropy(xd, y, reduction=reduction, **kw),
                     fl.cross_entropy(x, y, reduction=reduction, **kw))
    got = fld.cross_entropy(xd, y, reduction="none", **kw)
    assert isinstance(got, da.Array)
    np.testing.assert_array_equal(got.compute(), fl.cross_entropy(x, y, reduction="none", **kw))


@pytest.mark.parametrize("weighted", WEIGHTS)
def test_cross_entropy_probabilities(scheduler, weighted):
    x, _ = _multiclass()
    p = fl.softmax(RNG.normal(size=(N, C)))
    s = RNG.random(N) if weighted else None
    xd = da.from_array(x, chunks=(UNEVEN, C))
    for reduction in ("mean", "sum"):
        _same_result(fld.cross_entropy(xd, p, sample_weight=s, reduction=reduction, label_smoothing=0.05),
                     fl.cross_entropy(x, p, sample_weight=s, reduction=reduction, label_smoothing=0.05))
    np.testing.assert_array_equal(fld.cross_entropy(xd, p, sample_weight=s, reduction="none").compute(),
                                  fl.cross_entropy(x, p, sample_weight=s, reduction="none"))


def test_cross_entropy_axis_1(scheduler):
    x = RNG.normal(size=(9, 5, 30, 7))
    y = RNG.integers(0, 5, (9, 30, 7))
    xd = da.from_array(x, chunks=(4, 5, 30, 7))
    _same_result(fld.cross_entropy(xd, y, axis=1), fl.cross_entropy(x, y, axis=1))
    np.testing.assert_array_equal(fld.cross_entropy(xd.rechunk((4, 5, 11, 3)), y, axis=1, reduction="none").compute(),
                                  fl.cross_entropy(x, y, axis=1, reduction="none"))


@pytest.mark.parametrize("weighted", WEIGHTS)
def test_bce_with_logits(scheduler, weighted):
    xm, ym = _multilabel()
    kw = dict(weight=RNG.random((N, 1)), pos_weight=np.arange(1.0, 6.0)) if weighted else {}
    xd = da.from_array(xm, chunks=(UNEVEN, 5))
    for reduction in ("mean", "sum"):
        _same_result(fld.bce_with_logits(xd, ym, reduction=reduction, **kw),
                     fl.bce_with_logits(xm, ym, reduction=reduction, **kw))
    np.testing.assert_array_equal(fld.bce_with_logits(xd.rechunk((1000, 2)), ym, reduction="none", **kw).compute(),
                                  fl.bce_with_logits(xm, ym, reduction="none", **kw))


def test_bce_with_logits_long_rows(scheduler):
    """1-D logits (one row cut into pieces) and rows longer than a block."""
    x = RNG.normal(size=70000).astype(np.float32)
    y = (RNG.random(70000) < 0.5).astype(np.float32)
    _same_result(fld.bce_with_logits(da.from_array(x, chunks=23000), y), fl.bce_with_logits(x, y))
    x2, y2 = x.reshape(2, 35000), y.reshape(2, 35000)
    _same_result(fld.bce_with_logits(da.from_array(x2, chunks=(1, 35000)), y2, reduction="sum"),
                 fl.bce_with_logits(x2, y2, reduction="sum"))


POST = [
    ("sigmoid", {}), ("log_sigmoid", {}), ("predict_binary", {"threshold": 0.7}),
    ("softmax", {}), ("log_softmax", {}), ("logsumexp", {}), ("logsumexp", {"keepdims": True}),
    ("entropy", {}), ("predict", {}),
]


@pytest.mark.parametrize("name,kw", POST)
def test_postprocessing(scheduler, name, kw):
    x, _ = _multiclass()
    got = getattr(fld, name)(da.from_array(x, chunks=(UNEVEN, C)), **kw)
    assert isinstance(got, da.Array)
    want = getattr(fl, name)(x, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.compute(), want)


def test_postprocessing_axis_and_dtype(scheduler):
    x = RNG.normal(size=(6, 7, 50)).astype(np.float32)
    xd = da.from_array(x, chunks=(2, 7, 20))
    np.testing.assert_array_equal(fld.softmax(xd, axis=1, dtype=np.float64).compute(),
                                  fl.softmax(x, axis=1, dtype=np.float64))
    v, i = fld.topk(xd, 3, axis=1)
    wv, wi = fl.topk(x, 3, axis=1)
    assert v.shape == wv.shape and i.dtype == np.int64
    np.testing.assert_array_equal(v.compute(), wv)
    np.testing.assert_array_equal(i.compute(), wi)


def test_class_axis_must_be_one_chunk():
    x = da.zeros((10, 8), chunks=(5, 4))
    for call in (lambda: fld.softmax(x), lambda: fld.predict(x), lambda: fld.topk(x, 2),
                 lambda: fld.cross_entropy(x, np.zeros(10, np.int64)), lambda: fld.score(x, np.zeros(10, np.int64))):
        with pytest.raises(ValueError, match=r"class axis 1 .*\(4, 4\).*rechunk\(\{1: -1\}\)"):
            call()


def test_errors_name_global_positions(scheduler):
    x, y = _multiclass()
    y[4321] = C
    xd = da.from_array(x, chunks=(UNEVEN, C))
    with pytest.raises(IndexError, match=r"position \(4321,\)"):
        fld.cross_entropy(xd, y)
    with pytest.raises(IndexError, match=r"position \(4321,\)"):
        fld.cross_entropy(xd, y, reduction="none").compute()
    with pytest.raises(IndexError, match=r"position \(4321,\)"):
        fld.score(xd, y)
    with pytest.raises(ValueError, match="threshold"):
        fld.predict_binary(xd, threshold=1.5)
    with pytest.raises(ValueError, match="target"):
        fld.score(xd, y[:-1])


def test_readme_example_npy_or_zarr(tmp_path, scheduler):
    """The README's example: score a stack of logits stored on disk, chunk by chunk."""
    x, y = _multiclass()
    try:
        import zarr
    except ImportError:
        zarr = None
    if zarr is not None:
        z = zarr.open_array(str(tmp_path / "logits.zarr"), mode="w", shape=x.shape, chunks=(1500, C), dtype=x.dtype)
        z[:] = x
        logits = da.from_zarr(str(tmp_path / "logits.zarr"))
    else:
        np.save(tmp_path / "logits.npy", x)
        logits = da.from_array(np.load(tmp_path / "logits.npy", mmap_mode="r"), chunks=(1500, C))
    np.save(tmp_path / "target.npy", y)
    target = da.from_array(np.load(tmp_path / "target.npy", mmap_mode="r"), chunks=1500)
    _same_result(fld.score(logits, target), fl.score(x, y))
    _same_result(fld.cross_entropy(logits, target), fl.cross_entropy(x, y))


def _random_chunks(n, rng):
    """Uneven chunk lengths summing to n (some of length 1)."""
    if n < 2:
        return (n,)
    inner = np.sort(rng.choice(np.arange(1, n), int(rng.integers(1, min(9, n - 1) + 1)), replace=False))
    return tuple(int(d) for d in np.diff(np.concatenate(([0], inner, [n]))))


def test_random_chunkings_of_every_row_axis_are_bitwise_equal():
    """Chunks along every axis but the class axis, drawn at random: the reductions do not move
    by one bit (the states of the blocks merge into the in-memory sums)."""
    rng = np.random.default_rng(18)
    x = (rng.normal(size=(13, 6, 41)) * 3).astype(np.float32)
    y = rng.integers(0, 6, (13, 41))
    s = rng.random((13, 41))
    p = fl.softmax(rng.normal(size=x.shape), axis=1)
    ce_kw = dict(axis=1, sample_weight=s, label_smoothing=0.05, z_loss=1e-4, weight=np.linspace(0.5, 2, 6))
    yi = y.copy()
    yi[::3, ::5] = -100
    xb = rng.normal(size=(37, 29)).astype(np.float32)
    yb = rng.random((37, 29)) < 0.4
    x1, y1 = xb.reshape(-1), yb.reshape(-1)
    with dask.config.set(scheduler="synchronous"):
        for _ in range(4):
            xd = da.from_array(x, chunks=(_random_chunks(13, rng), 6, _random_chunks(41, rng)))
            yd = da.from_array(yi, chunks=(_random_chunks(13, rng), _random_chunks(41, rng)))
            for reduction in ("mean", "sum"):
                _same_result(fld.cross_entropy(xd, yd, reduction=reduction, **ce_kw),
                             fl.cross_entropy(x, yi, reduction=reduction, **ce_kw))
                _same_result(fld.cross_entropy(xd, p, axis=1, sample_weight=s, reduction=reduction),
                             fl.cross_entropy(x, p, axis=1, sample_weight=s, reduction=reduction))
            _same_result(fld.score(xd, y, axis=1, sample_weight=s, k=2), fl.score(x, y, axis=1, sample_weight=s, k=2))
            xbd = da.from_array(xb, chunks=(_random_chunks(37, rng), _random_chunks(29, rng)))
            for reduction in ("mean", "sum"):
                _same_result(fld.bce_with_logits(xbd, yb, reduction=reduction),
                             fl.bce_with_logits(xb, yb, reduction=reduction))
            _same_result(fld.score(xbd.rechunk({1: -1}), yb, bins=5), fl.score(xb, yb, bins=5))
            _same_result(fld.bce_with_logits(da.from_array(x1, chunks=(_random_chunks(x1.size, rng),)), y1),
                         fl.bce_with_logits(x1, y1))
