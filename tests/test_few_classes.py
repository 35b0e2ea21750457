"""Rows of few classes (at most 64) go through the SIMD lanes FL_W rows at a time (csrc/fl_tile.h).
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
from arrays import POST_ULP, assert_ulp_close

CLASSES = [1, 2, 3, 4, 5, 10, 16, 17, 33, 64]


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


@pytest.mark.parametrize("c", CLASSES)
def test_logsumexp_few_classes_against_exact(c, isa, accuracy):
    x = _rows(c)
    want = ref.exact(ref.logsumexp, x, 1)
    for how, xl, axis in _layouts(x):
        got = fl.logsumexp(xl, axis=axis)
        err = assert_ulp_close(got, want, POST_ULP, np.float32,
                               {"function": "logsumexp", "isa": isa, "layout": how, "c": c}, inputs={"row": x})
        accuracy.record("logsumexp", "float32", err, f"few classes c={c} {how} {isa}")


@pytest.mark.parametrize("c", CLASSES)
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
def test_logsumexp_rows_beyond_gather_offsets(c, isa):
    """A row stride beyond int32 gather offsets takes the element-by-element tile load: the
    same bits as the contiguous rows."""
    x = _rows(c, seed=2)[:3]
    far = _far_apart(x)
    np.testing.assert_array_equal(fl.logsumexp(far, axis=1), fl.logsumexp(x, axis=1))


@pytest.mark.parametrize("c", [2, 3, 10, 33])
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
