"""The common-case fast paths of the argument checks (C-contiguous native float arrays, int64/int32
indices, float/int options) give the same bits and the same errors as the general path.

Each case feeds the same values once as the fast path takes them and once in forms that go the
general way: a byte-swapped copy, a non-contiguous view, a Fortran-ordered copy, an ndarray
subclass, NumPy scalar options. Outputs are compared bit for bit, errors by type and message.
"""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _input

rng = np.random.default_rng(26)


class _Sub(np.ndarray):
    """An ndarray subclass: read through ``as_array``'s view, never the fast path."""


def _variants(a):
    """(name, array with a's values) for the general path."""
    swapped = a.astype(a.dtype.newbyteorder())
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return [
        ("byteswapped", swapped),
        ("strided", wide[..., ::2]),
        ("fortran", np.asfortranarray(a)),
        ("subclass", a.copy().view(_Sub)),
    ]


def _bits(v):
    if isinstance(v, tuple):
        return tuple(_bits(u) for u in v)
    if isinstance(v, float):
        return np.float64(v).tobytes()
    a = np.asarray(v)
    return (a.shape, a.dtype.str, np.ascontiguousarray(a).tobytes())


def _outcome(f):
    try:
        return ("ok", _bits(f()))
    except Exception as exc:  # the error is the outcome compared
        return ("error", type(exc), str(exc))


X32 = rng.standard_normal((7, 5)).astype(np.float32) * 4
X64 = rng.standard_normal((6, 3)) * 4
Y = rng.integers(0, 5, 7)
B = (rng.random((7, 5)) < 0.5).astype(np.float32)

ROW_FUNCS = {
    "softmax": fl.softmax,
    "log_softmax": fl.log_softmax,
    "logsumexp": fl.logsumexp,
    "entropy": fl.entropy,
    "predict": fl.predict,
    "sigmoid": fl.sigmoid,
    "log_sigmoid": fl.log_sigmoid,
    "predict_binary": fl.predict_binary,
}


@pytest.mark.parametrize("x", [X32, X64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ROW_FUNCS))
def test_postprocessing_fast_and_general_paths_agree(name, x):
    f = ROW_FUNCS[name]
    fast = _outcome(lambda: f(x))
    assert fast[0] == "ok"
    for how, v in _variants(x):
        assert _outcome(lambda: f(v)) == fast, how


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid"])
def test_out_fast_and_general_paths_agree(name):
    f = getattr(fl, name)
    out = np.empty_like(X32)
    expect = _bits(f(X32, out=out))
    for how, v in _variants(X32):
        out2 = np.empty_like(X32)
        f(v, out=out2)
        assert _bits(out2) == expect, how


@pytest.mark.parametrize("axis", [-1, 1, np.int64(-1), np.int32(1), 2, -3, True, 1.0, "1"])
def test_axis_fast_and_general_paths_agree(axis):
    """An int axis takes the fast check, a NumPy integer the general one: same results; an
    axis out of range or of another type raises the same error either way."""
    for f in (fl.softmax, fl.logsumexp, fl.predict):
        got = _outcome(lambda: f(X32, axis=axis))
        general = _outcome(lambda: f(X32.view(_Sub), axis=np.int64(axis) if type(axis) is int else axis))
        assert got == general, (f.__name__, axis)


@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_fast_and_general_paths_agree(tdtype, reduction):
    t = Y.astype(tdtype)
    for f in (fl.cross_entropy, fl.cross_entropy_and_grad):
        fast = _outcome(lambda: f(X32, t, reduction=reduction))
        assert fast[0] == "ok"
        general_targets = [t.astype(t.dtype.newbyteorder()), np.repeat(t, 2)[::2], t.view(_Sub), t.tolist()]
        for tt in general_targets:
            assert _outcome(lambda: f(X32, tt, reduction=reduction)) == fast, (f.__name__, type(tt))
        for how, v in _variants(X32):
            assert _outcome(lambda: f(v, t, reduction=reduction)) == fast, (f.__name__, how)
        options = dict(ignore_index=np.int64(-100), label_smoothing=np.float64(0.0), z_loss=np.float32(0.0))
        assert _outcome(lambda: f(X32, t, reduction=reduction, **options)) == fast, f.__name__


@pytest.mark.parametrize("options", [
    dict(ignore_index=2**63), dict(ignore_index=np.uint64(2**63)), dict(ignore_index=True), dict(ignore_index=1.0),
    dict(label_smoothing=1.5), dict(label_smoothing=np.float64(1.5)), dict(label_smoothing="0.1"),
    dict(z_loss=float("inf")), dict(z_loss=np.float64("nan")), dict(z_loss=-1.0), dict(z_loss=True),
])
def test_cross_entropy_option_errors(options):
    """The fast checks of the options fall through to the general ones, messages and all."""
    (key, value), = options.items()
    with pytest.raises((TypeError, ValueError)) as info:
        fl.cross_entropy(X32, Y, **options)
    assert key in str(info.value)


def test_cross_entropy_bad_index_same_error_on_both_paths():
    t = Y.copy()
    t[3] = 9
    fast = _outcome(lambda: fl.cross_entropy(X32, t))
    assert fast[0] == "error" and fast[1] is IndexError
    for tt in (t.astype(">i8"), t.astype(np.int32), np.repeat(t, 2)[::2]):
        assert _outcome(lambda: fl.cross_entropy(X32, tt)) == fast
        assert _outcome(lambda: fl.cross_entropy_and_grad(X32, tt)) == fast


@pytest.mark.parametrize("tdtype", [np.float32, np.float64, np.float16, np.bool_, np.int8, np.int32, np.int64])
def test_binary_target_fast_and_general_paths_agree(tdtype):
    t = B.astype(tdtype)
    for f in (fl.bce_with_logits, fl.bce_with_logits_and_grad, fl.sigmoid_focal_loss):
        fast = _outcome(lambda: f(X32, t))
        assert fast[0] == "ok"
        for how, tt in _variants(t):
            assert _outcome(lambda: f(X32, tt)) == fast, (f.__name__, how)


@pytest.mark.parametrize("tdtype", [np.float32, np.int64])
def test_binary_target_errors_same_on_both_paths(tdtype):
    t = B.astype(tdtype)
    t[2, 3] = 2
    fast = _outcome(lambda: fl.bce_with_logits(X32, t))
    assert fast[0] == "error" and "position (2, 3)" in fast[2]
    for how, tt in _variants(t):
        assert _outcome(lambda: fl.bce_with_logits(X32, tt)) == fast, how
    wrong_shape = _outcome(lambda: fl.bce_with_logits(X32, t[:, :4]))
    assert wrong_shape[0] == "error" and wrong_shape[1] is ValueError
    assert _outcome(lambda: fl.bce_with_logits(X32, t[:, :4].astype(t.dtype.newbyteorder()))) == wrong_shape


def test_as_logits_fast_path_returns_what_the_general_path_does():
    for a in (X32, X64, X32.astype(np.float16)):
        assert _input.as_logits(a) is a
    swapped = X32.astype(">f4")
    got = _input.as_logits(swapped)
    assert got.dtype == np.float32 and got.dtype.isnative and np.array_equal(got, X32)
    raw = np.zeros(X32.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(X32.shape)  # misaligned
    raw[...] = X32
    got = _input.as_logits(raw)
    assert got.flags.aligned and np.array_equal(got, X32)


def test_same_memory_is_the_address_test():
    a = np.zeros((4, 4), np.float32)
    assert _input.same_memory(a, a[:])
    assert not _input.same_memory(a, a[1:])
    assert not _input.same_memory(a, a.T)
    assert not _input.same_memory(a, a.view(np.int32))
