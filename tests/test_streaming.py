"""Outputs of 8 MB and more (csrc: FL_STREAM_BYTES) are written with non-temporal stores from
the first 64-byte aligned element of each row on. The arithmetic must not change: every
streamed result is compared bitwise with the same rows computed in small, cached calls, for
an aligned output, an output starting 4 bytes past alignment (a plain-store head in every
row), and in place."""
import numpy as np
import pytest

import fastlogits as fl

SHAPE = (520, 4100)  # 8.5 MB of float32, rows not a multiple of the vector width


def _in_pieces(fn, x):
    return np.concatenate([fn(x[i:i + 64]) for i in range(0, x.shape[0], 64)])


def _misaligned_out(shape):
    raw = np.empty(int(np.prod(shape)) + 16, np.float32)
    base = (-raw.ctypes.data // 4) % 16  # first 64-byte aligned element
    out = raw[base + 1: base + 1 + int(np.prod(shape))].reshape(shape)
    assert out.ctypes.data % 64 == 4
    return out


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "log_sigmoid", "log_softmax"])
@pytest.mark.parametrize("where", ["new", "misaligned", "in_place"])
def test_streamed_output_equals_cached_rows(name, where):
    fn = getattr(fl, name)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(SHAPE) * 6).astype(np.float32)
    x[3, 7] = -np.inf
    x[9, :] = -np.inf
    x[11, 100] = np.nan
    want = _in_pieces(fn, x)
    if where == "new":
        got = fn(x)
    elif where == "misaligned":
        got = fn(x, out=_misaligned_out(SHAPE))
    else:
        got = x.copy()
        fn(got, out=got)
    np.testing.assert_array_equal(got, want)
