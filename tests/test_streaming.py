"""Outputs of 8 MB and more (csrc: FL_STREAM_BYTES) in float32, float16 or bfloat16, the
cross-entropy gradient and the softmax and log_softmax rows (and float32 sigmoid and
log_sigmoid outputs that are one contiguous run, csrc/fl_sigmoid.c), are written with non-temporal
stores of whole vectors, plain stores where a row does not start or end on a vector boundary
(up to the next or from the last cache line: csrc/fl_pend.h), and a row is written while the
next row is read (csrc/fl_rowmath.h, fl_pend; half-precision rows are narrowed as they are
stored). The arithmetic must not change: every streamed output is
compared bitwise with the same rows computed in small, cached calls (reduction="sum" scales
each row alike whatever the batch), for a fresh output, an output starting 4 bytes past
alignment (a plain-store head in every row), in place, and from logits that are not
contiguous (rows gathered into the scratch rows a pending row may still read)."""
import numpy as np
import pytest

import fastlogits as fl
from arrays import as_dtype

SHAPE = (520, 4100)  # 8.5 MB of float32, rows not a multiple of the vector width
HALF_SHAPE = (1040, 4100)  # 8.5 MB of float16 or bfloat16


def _in_pieces(x, t, **kw):
    parts = [fl.cross_entropy_and_grad(x[i:i + 64], t[i:i + 64], reduction="sum", **kw)
             for i in range(0, x.shape[0], 64)]
    return sum(p[0] for p in parts), np.concatenate([p[1] for p in parts])


def _misaligned(shape, dtype=np.float32):
    """an output whose rows start one element past a 64-byte boundary"""
    dtype = np.dtype(dtype)
    n, size = int(np.prod(shape)), dtype.itemsize
    raw = np.empty(n + 64, dtype)
    base = (-raw.ctypes.data // size) % (64 // size)  # first 64-byte aligned element
    out = raw[base + 1: base + 1 + n].reshape(shape)
    assert out.ctypes.data % 64 == size
    return out


def _streamed(fn, x, where):
    """fn(x) into a fresh output, a misaligned one, in place, or from Fortran-ordered logits"""
    if where == "fresh":
        return fn(x)
    if where == "in_place":
        got = x.copy()
        fn(got, out=got)
        return got
    if where == "misaligned":
        got = _misaligned(x.shape, x.dtype)
        fn(x, out=got)
        return got
    got = np.empty(x.shape, x.dtype)
    fn(np.asfortranarray(x), out=got)
    return got


@pytest.mark.parametrize("where", ["fresh", "misaligned", "in_place"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "ignore_index": 7},
                                     {"weight": "classes", "z_loss": 1e-3}])
def test_streamed_gradient_equals_cached_rows(where, options):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(SHAPE) * 4).astype(np.float32)
    x[5, :] = -np.inf
    x[5, 3] = 1.0
    x[6, 100:2000] = -np.inf
    t = rng.integers(0, SHAPE[1], SHAPE[0])
    t[::9] = 7
    t[1] = 0          # the target in the plain-store head of a misaligned row
    t[2] = SHAPE[1] - 1  # and in its tail
    kw = dict(options)
    if kw.get("weight") == "classes":
        kw["weight"] = 0.5 + rng.random(SHAPE[1])
    want_loss, want = _in_pieces(x, t, **kw)
    if where == "fresh":
        loss, got = fl.cross_entropy_and_grad(x, t, reduction="sum", **kw)
    elif where == "misaligned":
        loss, got = fl.cross_entropy_and_grad(x, t, reduction="sum", grad_out=_misaligned(SHAPE), **kw)
    else:
        got = x.copy()
        loss, _ = fl.cross_entropy_and_grad(got, t, reduction="sum", grad_out=got, **kw)
    np.testing.assert_array_equal(got, want)
    assert loss == pytest.approx(want_loss, rel=1e-6)


def _rows_with_specials(rng):
    x = (rng.standard_normal(SHAPE) * 4).astype(np.float32)
    x[5, :] = -np.inf
    x[5, 3] = 1.0
    x[6, 100:2000] = -np.inf
    x[7, 9] = np.nan          # a NaN row between two ordinary rows
    x[9, :] = -np.inf         # all -inf: NaN
    x[10, 4099] = np.inf      # +inf: NaN
    x[11, :] = 1e30           # ties of a large max
    return x


@pytest.mark.parametrize("fn", [fl.softmax, fl.log_softmax])
@pytest.mark.parametrize("where", ["fresh", "misaligned", "in_place", "fortran_input"])
def test_streamed_softmax_equals_cached_rows(fn, where):
    x = _rows_with_specials(np.random.default_rng(10))
    want = np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)])
    np.testing.assert_array_equal(_streamed(fn, x, where), want)


def _half_rows(dtype, rng):
    x = (rng.standard_normal(HALF_SHAPE) * 4).astype(np.float32)
    x[5, :] = -np.inf
    x[5, 3] = 1.0
    x[7, 9] = np.nan
    x[10, 4099] = np.inf
    return x.astype(as_dtype(dtype))


@pytest.mark.parametrize("fn", [fl.softmax, fl.log_softmax])
@pytest.mark.parametrize("where", ["fresh", "misaligned", "in_place", "fortran_input"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_streamed_half_softmax_equals_cached_rows(dtype, where, fn):
    x = _half_rows(dtype, np.random.default_rng(11))
    want = np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)])
    got = _streamed(fn, x, where)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("where", ["fresh", "misaligned", "in_place"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_streamed_half_gradient_equals_cached_rows(dtype, where):
    rng = np.random.default_rng(12)
    x = _half_rows(dtype, rng)
    t = rng.integers(0, HALF_SHAPE[1], HALF_SHAPE[0])
    t[1] = 0
    t[2] = HALF_SHAPE[1] - 1
    parts = [fl.cross_entropy_and_grad(x[i:i + 64], t[i:i + 64], reduction="sum", label_smoothing=0.1)
             for i in range(0, x.shape[0], 64)]
    want = np.concatenate([p[1] for p in parts])
    if where == "fresh":
        _, got = fl.cross_entropy_and_grad(x, t, reduction="sum", label_smoothing=0.1)
    elif where == "misaligned":
        _, got = fl.cross_entropy_and_grad(x, t, reduction="sum", label_smoothing=0.1,
                                           grad_out=_misaligned(HALF_SHAPE, x.dtype))
    else:
        got = x.copy()
        fl.cross_entropy_and_grad(got, t, reduction="sum", label_smoothing=0.1, grad_out=got)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def _plain_and_fresh(kernel, x, op, make_out):
    """A same-shape kernel's output of the rows of x (axis 1) into an output of make_out(), first
    as a reused buffer, then marked fresh (_layout.fresh)"""
    from fastlogits._layout import fresh, make_grid

    outs = []
    for hint in (False, True):
        y = make_out()
        g = make_grid([x, y], 1, x.shape[1], n_outputs=1)
        kernel(g.specs[0], fresh(g.specs[1]) if hint else g.specs[1], g.grid, op)
        outs.append(y)
    return outs


@pytest.mark.parametrize("mode", [0, 1])
def test_fresh_output_hint_changes_no_bit(isa, mode):
    """An output the API has just allocated is marked fresh (_layout.fresh) and written with
    plain stores, a reused one of this size with non-temporal stores: the same bits either way,
    on every SIMD path (mode 0 softmax, 1 log_softmax as in _core.softmax)."""
    from fastlogits import _core

    x = _rows_with_specials(np.random.default_rng(13))
    outs = _plain_and_fresh(_core.softmax, x, mode, lambda: np.empty_like(x))
    np.testing.assert_array_equal(outs[0], outs[1])
    fn = fl.log_softmax if mode else fl.softmax
    np.testing.assert_array_equal(outs[0], np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)]))


def _elementwise_specials(rng):
    """float32 logits over the sigmoid's ranges: ordinary, saturated, tiny-lane (below the
    plain forms' bound), infinite and NaN, in runs that do not fill a vector"""
    x = (rng.standard_normal(SHAPE) * 8).astype(np.float32)
    x[3, 7:20] = -200.0
    x[4, 1:4] = np.array([np.inf, -np.inf, np.nan], np.float32)
    x[8, :] = rng.uniform(-120.0, 120.0, SHAPE[1]).astype(np.float32)
    return x


@pytest.mark.parametrize("fn", [fl.sigmoid, fl.log_sigmoid])
@pytest.mark.parametrize("where", ["fresh", "misaligned", "in_place"])
def test_streamed_elementwise_equals_cached_rows(fn, where):
    """A reused float32 output of 8 MB is streamed (its first elements up to a vector boundary
    in each block with plain stores); the same bits as small cached calls."""
    x = _elementwise_specials(np.random.default_rng(14))
    want = np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)])
    np.testing.assert_array_equal(_streamed(fn, x, where), want)


@pytest.mark.parametrize("op", [0, 1])
def test_elementwise_fresh_hint_changes_no_bit(isa, op):
    """The float32 sigmoid (op 0) and log_sigmoid (op 1) of a contiguous run, into an output
    marked fresh (plain stores) and one not (non-temporal stores, from a misaligned start):
    the same bits on every SIMD path."""
    from fastlogits import _core

    x = _elementwise_specials(np.random.default_rng(15))
    outs = _plain_and_fresh(_core.elementwise, x, op, lambda: _misaligned(SHAPE))
    np.testing.assert_array_equal(outs[0], outs[1])
    fn = fl.log_sigmoid if op else fl.sigmoid
    np.testing.assert_array_equal(outs[0], np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)]))
