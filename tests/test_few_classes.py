"""Rows of few classes (at most 64, 112 for entropy and cross-entropy, 128 for logsumexp) go through the SIMD lanes FL_W rows at a
time (csrc/fl_tile.h).
logsumexp computes them in float32 lanes with an error bound per lane and redoes in double the
rows whose bound is not small against their result (near-cancelling rows: a max below 0 and a
log-sum of about its size). These tests hold every such path to the README's bound against the
exact oracle, on rows chosen to land on both sides of that decision, in every layout, and check
that a row's bits depend on the row alone (not on its neighbours, its layout or its place in a
tile)."""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref
from arrays import POST_ULP, assert_ulp_close, at_page_end

CLASSES = [1, 2, 3, 4, 5, 10, 16, 17, 33, 64]
# logsumexp's tiles go to 128 classes, in eight partial sums past 64 (the first row past its
# tiles: 129)
LSE_CLASSES = CLASSES + [65, 100, 128, 129]
# the entropy's to 112 (softmax and log_softmax: the row path past 64)
ENTROPY_CLASSES = CLASSES + [65, 112, 113]
# the cross-entropy's to 112, in four accumulators past 64
CE_CLASSES = [2, 3, 10, 33, 64, 65, 100, 112, 113]


def _cancelling_rows(rng, n, c):
    """Rows whose logsumexp is close to 0 (max < 0, log-sum about -max): one logit a in
    (-3, 0), the others chosen so that the exponentials sum to about 1 - exp(a), each moved
    by a few float32 ULP, so the result is a small difference of two numbers near 0.5."""
    a = -rng.uniform(0.01, 3.0, n)
    rest = np.log1p(-np.exp(a))                          # exp(a) + exp(rest) = 1
    x = np.empty((n, c))
    x[:, 0] = a
    if c > 1:
        w = rng.dirichlet(np.ones(c - 1), n)              # split exp(rest) over c - 1 classes
        x[:, 1:] = rest[:, None] + np.log(w)
    x = x.astype(np.float32)
    x += rng.integers(-8, 9, x.shape) * np.spacing(x)    # a few ULP either way
    return x


def _special_rows(rng, c):
    """Rows of the edges: huge and tiny logits, -inf entries, ties, +inf, NaN, all -inf."""
    rows = []
    base = (rng.standard_normal((12, c)) * 3).astype(np.float32)
    for scale in (1e30, 3e38, 1e-30, 1e-42, 88.0, 200.0):
        rows.append(base[len(rows) % 12] * np.float32(scale) if scale < 1 else np.sign(base[len(rows) % 12]) * np.float32(scale))
    r = base[0].copy(); r[:: 2] = -np.inf; rows.append(r)
    r = base[1].copy(); r[1:] = -np.inf; rows.append(r)
    rows.append(np.full(c, 0.5, np.float32))             # all ties
    rows.append(np.full(c, -0.6931472, np.float32))      # ties whose logsumexp nearly cancels
    r = base[2].copy(); r[0] = np.inf; rows.append(r)
    r = base[3].copy(); r[-1] = np.nan; rows.append(r)
    rows.append(np.full(c, -np.inf, np.float32))
    r = base[4].copy(); r[0] = 0.0; r[1:] = -100.0; rows.append(r)  # a subnormal rest
    rows.append(np.zeros(c, np.float32))
    r = base[5].copy(); r[0] = 20.0; rows.append(r)     # peaked
    return np.array(rows, np.float32).reshape(-1, c)


def _rows(c, seed=0):
    rng = np.random.default_rng(seed + 17 * c)
    parts = [(rng.standard_normal((300, c)) * 3).astype(np.float32),
             (rng.standard_normal((100, c)) * 0.3 - 1.0).astype(np.float32),
             _cancelling_rows(rng, 300, c),
             _special_rows(rng, c)]
    x = np.concatenate(parts)
    return x[rng.permutation(len(x))]


def _layouts(x):
    """The same rows as a C-contiguous array (axis 1), transposed (axis 0), strided, with
    negative row and class strides, and in Fortran order."""
    n, c = x.shape
    yield "C", x, 1
    yield "transposed", np.ascontiguousarray(x.T), 0
    big = np.zeros((n, c * 3 + 1), np.float32)
    big[:, 1:1 + 3 * c:3] = x
    yield "strided", big[:, 1:1 + 3 * c:3], 1
    yield "negative strides", np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1], 1
    yield "fortran", np.asfortranarray(x), 1


def _far_apart(x):
    """The rows of x (a few) at a row stride beyond the 32-bit offsets of a gather (2^28 + 1
    elements): the tile loads them element by element. The buffer is zeros from calloc, so
    only the pages of the rows are ever touched."""
    n, c = x.shape
    rs = (1 << 28) + 1
    buf = np.zeros((n - 1) * rs + c, np.float32)
    v = np.lib.stride_tricks.as_strided(buf, shape=(n, c), strides=(rs * 4, 4))
    v[...] = x
    return v


@pytest.mark.parametrize("c", LSE_CLASSES)
def test_logsumexp_few_classes_against_exact(c, isa, accuracy):
    x = _rows(c)
    want = ref.exact(ref.logsumexp, x, 1)
    for how, xl, axis in _layouts(x):
        got = fl.logsumexp(xl, axis=axis)
        err = assert_ulp_close(got, want, POST_ULP, np.float32,
                               {"function": "logsumexp", "isa": isa, "layout": how, "c": c}, inputs={"row": x})
        accuracy.record("logsumexp", "float32", err, f"few classes c={c} {how} {isa}")


@pytest.mark.parametrize("c", LSE_CLASSES)
def test_logsumexp_few_classes_row_alone(c, isa):
    """Each row's bits equal those of the row alone, of the rows in any layout, and of the
    rows shifted by one place in their tiles (with a NaN row before them)."""
    x = _rows(c, seed=1)
    full = fl.logsumexp(x, axis=1)
    for how, xl, axis in _layouts(x):
        np.testing.assert_array_equal(fl.logsumexp(xl, axis=axis), full, err_msg=f"{how} c={c}")
    shifted = np.concatenate([np.full((1, c), np.nan, np.float32), x])
    np.testing.assert_array_equal(fl.logsumexp(shifted, axis=1)[1:], full, err_msg=f"shifted c={c}")
    for i in range(0, len(x), 37):
        assert fl.logsumexp(x[i:i + 1], axis=1)[0].tobytes() == full[i].tobytes(), (c, i, x[i])


def test_logsumexp_two_classes_cancelling_rows_are_redone():
    """A float32 log1p cannot give these rows 4 ULP (their result is a small difference of two
    numbers near 0.69): each must come from the double path. The worst of the float32
    formula on them is far above the bound, so this test fails if the redo is lost."""
    rng = np.random.default_rng(5)
    x = _cancelling_rows(rng, 4000, 2)
    want = ref.exact(ref.logsumexp, x, 1)
    got = fl.logsumexp(x, axis=1)
    assert_ulp_close(got, want, POST_ULP, np.float32, "two-class cancelling rows", inputs={"row": x})
    # the float32 formula alone is far off on these rows: the test would see a lost redo
    m = x.max(1)
    naive = m + np.log1p(np.exp(x.min(1) - m))
    from arrays import ulp_distance
    assert float(np.max(ulp_distance(naive.astype(np.float32), want, np.float32))) > 100


@pytest.mark.parametrize("c", [2, 3, 10])
def test_logsumexp_queue_across_the_grid(c, isa):
    """The rows a tile queues for the double path are counted from the queue's first row in
    grid order: with (N, C, d) logits along axis 1 (tiles of d < FL_W rows, a queue spanning
    many outer indices) each row keeps the bits it has in a 2-D array."""
    x = _rows(c, seed=7)
    n = len(x) - len(x) % 15
    x = x[:n]
    want = fl.logsumexp(x, axis=1)
    for d in (1, 3, 5, 15):
        y = np.ascontiguousarray(x.reshape(n // d, d, c).transpose(0, 2, 1))
        np.testing.assert_array_equal(fl.logsumexp(y, axis=1).reshape(-1), want, err_msg=f"d={d} c={c}")


def test_logsumexp_queued_rows_far_apart(isa, threads):
    """A queue counts its rows by float32 offsets, exact below 2^24: rows queued more than 2^24
    rows after the queue's first one (one thread: one task walks them all) must still land in
    their own places, at odd offsets too."""
    if isa == "scalar":
        pytest.skip("one lane: no tiles, no queue")
    fl.set_num_threads(1)
    n = (1 << 24) + 102
    x = np.full((n, 2), 20.0, np.float32)  # logsumexp far from 0: never queued
    at = np.array([0, 5, n - 77, n - 40, n - 1])
    x[at] = _cancelling_rows(np.random.default_rng(9), len(at), 2)
    want = np.full(n, fl.logsumexp(x[1:2], axis=1)[0], np.float32)
    want[at] = [fl.logsumexp(x[i:i + 1], axis=1)[0] for i in at]
    got = fl.logsumexp(x, axis=1)
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"rows {bad[:8]}: got {got[bad[:8]]}, want {want[bad[:8]]}"


@pytest.mark.parametrize("c", [2, 3, 10])
def test_logsumexp_rows_beyond_gather_offsets(c, isa):
    """A row stride beyond int32 gather offsets takes the element-by-element tile load: the
    same bits as the contiguous rows."""
    x = _rows(c, seed=2)[:3]
    far = _far_apart(x)
    np.testing.assert_array_equal(fl.logsumexp(far, axis=1), fl.logsumexp(x, axis=1))


@pytest.mark.parametrize("c", CE_CLASSES)
def test_cross_entropy_row_does_not_depend_on_a_nan_neighbour(c, isa):
    """Rows of few classes go through the lanes FL_W at a time; a tile holding a row whose max
    is not finite (NaN, +inf) must not change the other rows' losses and gradients."""
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((53, c)) * 3).astype(np.float32)
    t = rng.integers(0, c, 53)
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none")
    x2 = x.copy()
    x2[1::7, 0] = np.nan
    x2[3::11, -1] = np.inf
    loss2, grad2 = fl.cross_entropy_and_grad(x2, t, reduction="none")
    ok = np.isfinite(x2).all(axis=1)
    np.testing.assert_array_equal(loss2[ok], loss[ok])
    np.testing.assert_array_equal(grad2[ok], grad[ok])
    assert np.all(np.isnan(loss2[~ok]))
    alone = np.array([fl.cross_entropy(x[i:i + 1], t[i:i + 1], reduction="none")[0] for i in range(53)])
    np.testing.assert_array_equal(alone, loss)


def _softmax_family():
    return [("softmax", fl.softmax, ref.softmax), ("log_softmax", fl.log_softmax, ref.log_softmax),
            ("entropy", fl.entropy, ref.entropy)]


@pytest.mark.parametrize("c", ENTROPY_CLASSES)
def test_softmax_family_few_classes_against_exact(c, isa, accuracy):
    """softmax, log_softmax and entropy of the tiles (and of the rows they hand back) within
    the README's bound of the exact result, in every layout, special rows included."""
    x = _rows(c, seed=3)
    for name, f, r in _softmax_family():
        want = ref.exact(r, x, 1)
        for how, xl, axis in _layouts(x):
            got = f(xl, axis=axis)
            got = np.moveaxis(got, 0, 1) if axis == 0 and got.ndim == 2 else got
            err = assert_ulp_close(got, want, POST_ULP, np.float32,
                                   {"function": name, "isa": isa, "layout": how, "c": c}, inputs={"row": x})
            accuracy.record(name, "float32", err, f"few classes c={c} {how} {isa}")


@pytest.mark.parametrize("c", ENTROPY_CLASSES)
def test_softmax_family_row_alone(c, isa):
    """A row's softmax, log_softmax and entropy bits are the row's alone: the same in every
    layout, alone, and beside NaN, +inf and all -inf rows at any place in its tile (a tile
    holding such a row hands its rows to the one-row path, which must give the same bits)."""
    x = _rows(c, seed=4)
    x = x[np.isfinite(x.max(axis=1))]
    for name, f, _ in _softmax_family():
        full = f(x, axis=1)
        for how, xl, axis in _layouts(x):
            got = f(xl, axis=axis)
            got = np.moveaxis(got, 0, 1) if axis == 0 and got.ndim == 2 else got
            np.testing.assert_array_equal(got, full, err_msg=f"{name} {how} c={c}")
        for bad in (np.nan, np.inf, -np.inf):
            for shift in (1, 5):
                x2 = np.concatenate([np.full((shift, c), bad, np.float32), x])
                x2[shift + 3::13] = bad
                got = f(x2, axis=1)[shift:]
                ok = np.isfinite(x2[shift:].max(axis=1))
                np.testing.assert_array_equal(got[ok], full[ok], err_msg=f"{name} beside {bad} c={c}")
                assert np.all(np.isnan(got[~ok])), (name, bad, c)
        for i in range(0, len(x), 41):
            assert f(x[i:i + 1], axis=1)[0].tobytes() == full[i].tobytes(), (name, c, i, x[i])


@pytest.mark.parametrize("c", CE_CLASSES)
def test_cross_entropy_few_classes_against_exact(c, isa, accuracy):
    """Per-row losses and gradients of the cross-entropy tiles within their bounds of the exact
    result (tests/test_cross_entropy.py: LOSS_ULP plus the row's spread for float32), on the
    rows of every kind but the non-finite ones (their semantics are the one-row path's, held by
    test_cross_entropy)."""
    from arrays import ce_grad_scale, ce_grad_ulp, ce_loss_ulp
    x = _rows(c, seed=5)
    x = x[np.isfinite(x).all(axis=1)]
    t = np.random.default_rng(c).integers(0, c, len(x))
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none")
    wl, wg = ref.exact(ref.cross_entropy_and_grad, x, t, reduction="none")
    ctx = {"function": "cross_entropy", "isa": isa, "c": c}
    err = assert_ulp_close(loss, wl, ce_loss_ulp(x, 1, np.float32), np.float32, ctx, inputs={"row": x})
    accuracy.record("cross_entropy", "float32", err, f"few classes c={c} {isa}")
    err = assert_ulp_close(grad, wg, ce_grad_ulp(x, 1, np.float32), np.float32, dict(ctx, output="grad"),
                           inputs={"x": x}, scale=ce_grad_scale(x, t, axis=1, reduction="none"))
    accuracy.record("cross_entropy_and_grad", "float32", err, f"few classes c={c} {isa}")
    np.testing.assert_array_equal(fl.cross_entropy(x, t, reduction="none"), loss)


@pytest.mark.parametrize("c", [2, 10])
def test_few_classes_bitwise_over_threads_and_splits(c, isa, threads):
    """The tiles start where the thread pool's blocks start: one thread or two, and the rows
    cut in two at any place, give the same bits."""
    x = _rows(c, seed=6)
    x = np.concatenate([x] * 8)
    t = np.random.default_rng(c).integers(0, c, len(x))
    calls = [lambda a, b: fl.softmax(a), lambda a, b: fl.log_softmax(a), lambda a, b: fl.entropy(a),
             lambda a, b: fl.logsumexp(a), lambda a, b: fl.cross_entropy_and_grad(a, b, reduction="none")]
    for call in calls:
        fl.set_num_threads(1)
        one = call(x, t)
        fl.set_num_threads(2)
        two = call(x, t)
        for cut in (7, len(x) // 2 + 3):
            parts = [call(x[:cut], t[:cut]), call(x[cut:], t[cut:])]
            if isinstance(one, tuple):
                np.testing.assert_array_equal(two[0], one[0])
                np.testing.assert_array_equal(two[1], one[1])
                np.testing.assert_array_equal(np.concatenate([parts[0][0], parts[1][0]]), one[0])
                np.testing.assert_array_equal(np.concatenate([parts[0][1], parts[1][1]]), one[1])
            else:
                np.testing.assert_array_equal(two, one)
                np.testing.assert_array_equal(np.concatenate(parts), one)


@pytest.mark.parametrize("c", [2, 10, 33, 64, 65, 1000])
def test_log_softmax_of_a_subnormal_log_sum(c, isa):
    """A row with one max and the other logits 88-104 below it: log_softmax's largest output
    is -log1p(rest), a subnormal or tiny float32 made of exponentials that float32 rounds to
    multiples of 2^-149 (main gave up to 28 ULP at c=64: 0.5 ULP from each of c - 1 terms). The
    rows go through the tiles (c <= 64), the rows path (c > 64) and beside a NaN row."""
    rng = np.random.default_rng(c)
    x = np.zeros((40, c), np.float32)
    x[:, 1:] = -rng.uniform(88.0, 104.0, (40, c - 1)).astype(np.float32)
    x[::3, 1:] = -100.0
    x[1::5, 1:] -= np.float32(30.0)          # the rest underflows to 0 in float32 and below
    want = ref.exact(ref.log_softmax, x, 1)
    got = fl.log_softmax(x, axis=1)
    assert_ulp_close(got, want, POST_ULP, np.float32, {"function": "log_softmax", "isa": isa, "c": c},
                     inputs={"row": x})
    beside = np.concatenate([np.full((1, c), np.nan, np.float32), x])
    np.testing.assert_array_equal(fl.log_softmax(beside, axis=1)[1:], got)


def _two_class_rows(seed):
    """Rows [a, b] over the whole range of b - a: differences log-uniform from 1e-9 to 110 (p_min
    down to subnormal and 0) either way round, ties (+0 and -0 too), -inf beside a finite logit,
    huge logits whose difference overflows, and logits far from 0. 1000 + 13 rows: the last
    tile is partial on every ISA."""
    rng = np.random.default_rng(seed)
    n = 1000
    a = rng.uniform(-60.0, 60.0, n)
    d = np.exp(rng.uniform(np.log(1e-9), np.log(110.0), n)) * rng.choice([-1.0, 1.0], n)
    x = np.stack([a, a + d], axis=1).astype(np.float32)
    x[::7] *= np.float32(1e6)
    edges = [[0.0, 0.0], [0.0, -0.0], [-0.0, 0.0], [1.5, 1.5], [0.0, -np.inf], [-np.inf, 2.0],
             [3e38, -3e38], [-3e38, 3e38], [3e38, 3e38], [-3e38, -3e38], [0.0, -103.0],
             [-87.5, 0.0], [1e-42, -1e-42]]
    return np.concatenate([x, np.array(edges, np.float32)])


def test_two_class_tiles_against_exact(isa, accuracy):
    """Two classes take their own tiles (softmax: [1, t] / (1 + t) in float32 lanes; log_softmax
    and entropy: the sums from one exponential a row): within the README's bound of the exact
    result in every layout, and each row's bits its own: alone, beside NaN, +inf and all -inf
    rows at every place of a tile, and in every layout."""
    x = _two_class_rows(7)
    for name, f, r in _softmax_family():
        want = ref.exact(r, x, 1)
        full = f(x, axis=1)
        for how, xl, axis in _layouts(x):
            got = f(xl, axis=axis)
            got = np.moveaxis(got, 0, 1) if axis == 0 and got.ndim == 2 else got
            err = assert_ulp_close(got, want, POST_ULP, np.float32,
                                   {"function": name, "isa": isa, "layout": how, "c": 2}, inputs={"row": x})
            accuracy.record(name, "float32", err, f"two classes {how} {isa}")
            np.testing.assert_array_equal(got, full, err_msg=f"{name} {how}")
        for bad in ([np.nan, 0.0], [0.0, np.nan], [np.inf, 0.0], [-np.inf, -np.inf], [np.inf, -np.inf]):
            for shift in range(16):  # every place in a tile of up to 16 lanes
                x2 = np.concatenate([np.zeros((shift, 2), np.float32), x])
                x2[shift + 3::11] = bad
                got = f(x2, axis=1)[shift:]
                ok = np.ones(len(x), bool)
                ok[3::11] = False
                np.testing.assert_array_equal(got[ok], full[ok], err_msg=f"{name} beside {bad} shift {shift}")
                assert np.all(np.isnan(got[~ok])), (name, bad, shift)
        for i in range(0, len(x), 37):
            assert f(x[i:i + 1], axis=1)[0].tobytes() == full[i].tobytes(), (name, i, x[i])


@pytest.mark.parametrize("c", [2, 5])
def test_cross_entropy_tile_classes_fast_and_lane_by_lane(c, isa):
    """A tile whose int64 classes are all in range reads them in one step; one ignored row or
    out-of-range class sends the tile lane by lane. Both give the same bits (int32 classes
    always go lane by lane), an ignored row at any lane changes only its own loss and the
    mean's denominator, and an out-of-range class at any lane raises."""
    rng = np.random.default_rng(40 + c)
    n = 64 + 5  # whole tiles of every width, then a partial one
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    t = rng.integers(0, c, n)
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none")
    loss32, grad32 = fl.cross_entropy_and_grad(x, t.astype(np.int32), reduction="none")
    np.testing.assert_array_equal(loss32, loss)
    np.testing.assert_array_equal(grad32, grad)
    ctx = {"function": "cross_entropy", "isa": isa, "c": c, "reduction": "mean"}
    assert_ulp_close(fl.cross_entropy(x, t, reduction="mean"),
                     ref.exact(ref.cross_entropy, x, t, reduction="mean"), 8, np.float32, ctx)
    for j in range(16):
        ti = t.copy()
        ti[j] = -100
        li, gi = fl.cross_entropy_and_grad(x, ti, reduction="none")
        keep = np.arange(n) != j
        np.testing.assert_array_equal(li[keep], loss[keep])
        np.testing.assert_array_equal(gi[keep], grad[keep])
        assert li[j] == 0 and not gi[j].any()
        assert_ulp_close(fl.cross_entropy(x, ti, reduction="mean"),
                         ref.exact(ref.cross_entropy, x[keep], t[keep], reduction="mean"), 8, np.float32,
                         dict(ctx, ignored_lane=j))
        ti[j] = c
        with pytest.raises(IndexError):
            fl.cross_entropy(x, ti)
    # an ignore_index that is a class: its rows are ignored in a tile of valid classes too
    k = int(t[3])
    li = fl.cross_entropy(x, t, reduction="none", ignore_index=k)
    np.testing.assert_array_equal(li[t != k], loss[t != k])
    assert (li[t == k] == 0).all()


def test_contiguous_tiles_stay_inside_the_arrays(isa):
    """Contiguous rows of 2 to 64 classes (entropy's and cross-entropy's to 112, logsumexp's to
    128, predict's to 96, topk's to 256):
    whole tiles of 9 or more move by row loads and a
    transposition (fl_tile_load_rows, fl_tile_store_rows), whose loads and stores run on into
    the next row; 3 to 8 by shuffles on AVX-512 (flv_tile_from_rows, flv_tile_to_rows); the
    rest by gathers.
    With the logits and every output ending at a page that faults when touched, each result
    equals, bit for bit, the same rows read from and written to a strided layout (element by
    element); a softmax computed in place too. 48 rows (whole tiles of 16 and 8 lanes, the last one at
    the arrays' end) and 53 (a partial tile after them)."""
    probe = at_page_end(np.zeros(1, np.float32))
    if probe is None:
        pytest.skip("no guard pages on this platform")
    rng = np.random.default_rng(77)
    def strided_like(a):
        """a's values in a layout of row stride 2c, class stride 2 (tiles gather and scatter)"""
        wide = np.zeros((a.shape[0], 2 * a.shape[1]), np.float32)
        wide[:, ::2] = a
        return wide[:, ::2]

    for n, c in ((n, c) for n in (48, 53) for c in range(2, 65)):
        x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
        x[7, c // 2] = 40.0                                  # a peaked row
        t = rng.integers(0, c, n)
        strided = strided_like(x)
        xe = at_page_end(x)
        for name, f in (("softmax", fl.softmax), ("log_softmax", fl.log_softmax)):
            out = at_page_end(np.zeros_like(x))
            f(xe, out=out)
            want = f(strided, out=strided_like(np.zeros_like(x)))
            np.testing.assert_array_equal(out, want, err_msg=f"{name} c={c}")
            inplace = at_page_end(x)
            f(inplace, out=inplace)
            np.testing.assert_array_equal(inplace, out, err_msg=f"{name} in place c={c}")
        for name, f in (("logsumexp", lambda a: fl.logsumexp(a, axis=-1)), ("entropy", fl.entropy),
                        ("predict", fl.predict), ("topk", lambda a: fl.topk(a, min(3, c))[1])):
            np.testing.assert_array_equal(f(xe), f(strided), err_msg=f"{name} c={c}")
        grad = at_page_end(np.zeros_like(x))
        loss, _ = fl.cross_entropy_and_grad(xe, t, reduction="none", grad_out=grad)
        want_grad = strided_like(np.zeros_like(x))
        want_loss, _ = fl.cross_entropy_and_grad(strided, t, reduction="none", grad_out=want_grad)
        np.testing.assert_array_equal(loss, want_loss, err_msg=f"cross-entropy c={c}")
        np.testing.assert_array_equal(grad, want_grad, err_msg=f"cross-entropy gradient c={c}")
    for n, c in ((n, c) for n in (48, 53) for c in (65, 96, 100, 127, 128, 255, 256)):  # wider tiles
        x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
        xe = at_page_end(x)
        for name, f in (("logsumexp", lambda a: fl.logsumexp(a, axis=-1)), ("predict", fl.predict),
                        ("topk", lambda a: fl.topk(a, 8)[1]), ("entropy", fl.entropy)):
            np.testing.assert_array_equal(f(xe), f(strided_like(x)), err_msg=f"{name} c={c}")
        t = rng.integers(0, c, n)
        grad = at_page_end(np.zeros_like(x))
        loss, _ = fl.cross_entropy_and_grad(xe, t, reduction="none", grad_out=grad)
        want_grad = strided_like(np.zeros_like(x))
        want_loss, _ = fl.cross_entropy_and_grad(strided_like(x), t, reduction="none", grad_out=want_grad)
        np.testing.assert_array_equal(loss, want_loss, err_msg=f"cross-entropy c={c}")
        np.testing.assert_array_equal(grad, want_grad, err_msg=f"cross-entropy gradient c={c}")
