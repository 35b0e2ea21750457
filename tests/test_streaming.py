"""Outputs of 8 MB and more (csrc: fl_stream_policy) in float32, float16 or bfloat16, the
cross-entropy gradient and the softmax and log_softmax rows (and float32 sigmoid and
log_sigmoid outputs that are one contiguous run, csrc/fl_sigmoid.c), are written with non-temporal
stores of whole vectors, plain stores where a row does not start or end on a vector boundary
(up to the next or from the last cache line: csrc/fl_pend.h), and a row is written while the
next row is read (csrc/fl_rowmath.h, fl_pend; half-precision rows are narrowed as they are
stored). The arithmetic must not change: every streamed output is
compared bitwise with the same rows computed in small, cached calls (reduction="sum" scales
each row alike whatever the batch), for a fresh output, an output starting 4 bytes past
alignment (a plain-store head in every row), in place, and from logits that are not
contiguous (rows gathered into the scratch rows a pending row may still read). The policy is
set to stream every reused output of 8 MB here, so that the streamed paths run on every CPU
(AMD's default streams only rows of 64 KB and more, by 64-byte stores, and not the rows that
softmax and the cross-entropy gradient compute in place); the policy itself is tested at the
end."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlogits as fl
from arrays import as_dtype
from conftest import cpu_vendor
from fastlogits import _core

MIB = 1 << 20


@pytest.fixture(autouse=True)
def streaming_on_every_cpu():
    before = _core.stream_policy()
    _core.set_stream_policy(8 * MIB, 0, 0, True)
    yield
    _core.set_stream_policy(*before)

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


def _policy_in_fresh_process():
    """(stream_policy, stderr) of a new process without FASTLOGITS_STREAM_BYTES"""
    env = {k: v for k, v in os.environ.items() if k != "FASTLOGITS_STREAM_BYTES"}
    code = "import fastlogits as fl; from fastlogits import _core; print(repr(_core.stream_policy()))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return ast.literal_eval(r.stdout.strip()), r.stderr


def test_default_policy_is_the_vendors():
    """8 MB outputs stream; on AMD, rows only when of 64 KB and more, by 64-byte stores, and not
    computed in place (csrc/fl_dispatch.c: there log_softmax rows of 4 KB and 16 KB were
    1.07-1.11x slower streamed, of 128 KB 0.9x by 64-byte stores, 1.06-1.12x by 32-byte ones;
    rows computed in place were faster plain at every length)."""
    vendor = cpu_vendor()
    default = _core.stream_default_policy()
    if vendor in ("AuthenticAMD", "HygonGenuine"):
        assert default == (8 * MIB, 64 << 10, 64, False)
    elif vendor is not None:
        assert default == (8 * MIB, 0, 0, True)
    assert default[0] == 8 * MIB
    assert _policy_in_fresh_process() == (default, "")


@pytest.mark.parametrize("value, policy", [("never", (-1, 0, 0, True)), ("0", (0, 0, 0, True)),
                                           (" 1048576 ", (1 << 20, 0, 0, True))])
def test_environment_sets_the_policy(monkeypatch, value, policy):
    from fastlogits._config import _stream_from_env

    monkeypatch.setenv("FASTLOGITS_STREAM_BYTES", value)
    _stream_from_env()
    assert _core.stream_policy() == policy


@pytest.mark.parametrize("value", ["8MB", "-1", "1e6", "always"])
def test_environment_value_that_is_not_a_size_warns_and_keeps_the_policy(monkeypatch, value):
    from fastlogits._config import _stream_from_env

    monkeypatch.setenv("FASTLOGITS_STREAM_BYTES", value)
    before = _core.stream_policy()
    with pytest.warns(RuntimeWarning, match=f"FASTLOGITS_STREAM_BYTES='{value.lower()}' is not a count of bytes"):
        _stream_from_env()
    assert _core.stream_policy() == before


def test_policy_set_and_read_back():
    _core.set_stream_policy(-7, 5, 64, False)
    assert _core.stream_policy() == (-1, 5, 64, False)
    _core.set_stream_policy(12345, -3, -1, True)
    assert _core.stream_policy() == (12345, 0, 0, True)


def test_show_config_reports_the_policy(capsys):
    _core.set_stream_policy(8 * MIB, 64 << 10, 64, False)
    fl.show_config()
    assert ("  non-temporal stores: reused outputs of 8388608 bytes or more; rows of 65536 bytes or more, "
            "in vector stores of 64 bytes or more; not rows computed in place" in capsys.readouterr().out.splitlines())
    _core.set_stream_policy(8 * MIB, 0, 0, True)
    fl.show_config()
    assert "  non-temporal stores: reused outputs of 8388608 bytes or more" in capsys.readouterr().out.splitlines()
    _core.set_stream_policy(-1, 0, 0, True)
    fl.show_config()
    assert "  non-temporal stores: never" in capsys.readouterr().out.splitlines()
    info = fl.show_config(mode="dicts")["fastlogits"]["stream_policy"]
    assert info == {"min_bytes_row_bytes_store_bytes_in_place": [-1, 0, 0, True], "default": list(_core.stream_default_policy())}


# rows of 16 KB (below AMD's row bound) and of 64 KB + 4 bytes (above it), 8.4 MB each
POLICY_SHAPES = [(512, 4100), (128, 16385)]
POLICIES = [(-1, 0, 0, True), (8 * MIB, 64 << 10, 64, True), (8 * MIB, 64 << 10, 64, False), (0, 0, 0, True)]


@pytest.mark.parametrize("shape", POLICY_SHAPES)
def test_every_policy_writes_the_same_bits(isa, shape):
    """softmax, log_softmax, the cross-entropy gradient, sigmoid and a bfloat16 softmax of reused
    outputs, written under each policy (nothing streamed, AMD's row bounds with and without the
    rows computed in place, every output: the 4 MB bfloat16 one too): the same bits (the
    module's other tests stream every 8 MB output)."""
    rng = np.random.default_rng(16)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[1, 3:9] = -300.0
    t = rng.integers(0, shape[1], shape[0])
    xb = x.astype(as_dtype("bfloat16"))
    calls = [lambda out: fl.softmax(x, out=out), lambda out: fl.log_softmax(x, out=out),
             lambda out: fl.cross_entropy_and_grad(x, t, grad_out=out), lambda out: fl.sigmoid(x, out=out)]
    results = []
    for policy in POLICIES:
        _core.set_stream_policy(*policy)
        outs = [np.empty_like(x) for _ in calls]
        for call, out in zip(calls, outs):
            call(out)
        half = np.empty_like(xb)
        fl.softmax(xb, out=half)
        results.append(outs + [half.view(np.uint16)])
    for policy, got in zip(POLICIES[1:], results[1:]):
        for i, (a, b) in enumerate(zip(results[0], got)):
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}, policy {policy}")
