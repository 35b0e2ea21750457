"""Masked logits (classes set to -inf, -1e9, float32's min or -1e4, as decoders and constrained
classifiers mask them) on every SIMD path: the softmax family against the exact oracle within
its ULP bounds and against PyTorch, the cross-entropy within its bounds, results bitwise the same
for every thread count, and whole masked rows NaN as in PyTorch.

The kernels take masked rows into the exact-reduction sums with exponentials that give 0 below
the "gap" (logits more than 104 below the max, whose exponential is below 2^-150) and fall back to
the TwoSum sums where a logit lies in the gap (86 to 104 below the max); tests/arrays.py's
masked_arrays holds rows on both sides of it.
"""
import functools

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref
from arrays import (as_dtype, assert_reduced_close, assert_ulp_close, ce_loss_ulp, class_targets,
                    masked_arrays, reduced_ulp)

POST = ("softmax", "log_softmax", "logsumexp", "entropy")
DTYPES = ("float32", "float16", "bfloat16")


# float32 rows of 4099 classes (four blocks) are three quarters of the exact oracle's work, some
# 10 s of long double arithmetic: they run in the slow layer; 1031 classes cross a block here
LONG_CLASSES = (4099,)


@functools.lru_cache(maxsize=None)
def _cases(dname, long_rows=False):
    if long_rows:
        return list(masked_arrays((dname,), seed=4, classes=LONG_CLASSES))
    # the half types: fewer shapes (their results are float32 ones rounded once)
    if dname == "float32":
        return list(masked_arrays((dname,), seed=3, classes=(100, 1031)))
    return list(masked_arrays((dname,), seed=3, classes=(1031,), centres=(0.0, 70.0)))


@functools.lru_cache(maxsize=None)
def _wants(name, dname, long_rows=False):
    return [ref.exact(getattr(ref, name), x, -1) for _, x in _cases(dname, long_rows)]


def _check_bounds(name, dname, isa, accuracy, long_rows):
    out = as_dtype(dname)
    bound = 1 if out.itemsize == 2 else 4
    for (desc, x), want in zip(_cases(dname, long_rows), _wants(name, dname, long_rows)):
        got = getattr(fl, name)(x)
        err = assert_ulp_close(got, want, bound, out, {"function": name, "isa": isa, "case": desc},
                               inputs={"row": x})
        accuracy.record(name, dname, err, f"{isa} masked {desc}")


@pytest.mark.parametrize("dname", DTYPES)
@pytest.mark.parametrize("name", POST)
def test_softmax_family_on_masked_rows_keeps_its_bounds(name, dname, isa, accuracy):
    _check_bounds(name, dname, isa, accuracy, long_rows=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", POST)
def test_softmax_family_on_long_masked_rows_keeps_its_bounds(name, isa, accuracy):
    _check_bounds(name, "float32", isa, accuracy, long_rows=True)


def test_masked_softmax_is_zero_and_log_softmax_minus_inf_where_masked(isa):
    """A class masked with -inf: probability exactly 0, log-probability -inf; the finite logits
    of the row keep the softmax of the unmasked classes alone (masked classes add nothing)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 5000)).astype(np.float32) * 3
    mask = rng.random(x.shape) < 0.75
    mask[:, 0] = False
    x[mask] = -np.inf
    p, lp = fl.softmax(x), fl.log_softmax(x)
    assert (p[mask] == 0).all() and (lp[mask] == -np.inf).all()
    for r in range(x.shape[0]):
        kept = x[r][~mask[r]]
        assert_ulp_close(p[r][~mask[r]], ref.exact(ref.softmax, kept), 4, np.float32, f"row {r} vs kept")
        assert_ulp_close(fl.logsumexp(x[r]), ref.exact(ref.logsumexp, kept), 4, np.float32, f"lse row {r}")
        assert_ulp_close(fl.entropy(x[r]), ref.exact(ref.entropy, kept), 4, np.float32, f"entropy row {r}")


def test_masked_rows_match_pytorch(isa):
    torch = pytest.importorskip("torch")
    for desc, x in masked_arrays(("float32",), seed=7, classes=(1031,), centres=(0.0,), fills=(-np.inf,)):
        t = torch.from_numpy(x)
        pairs = {"softmax": (fl.softmax(x), torch.softmax(t, -1)),
                 "log_softmax": (fl.log_softmax(x), torch.log_softmax(t, -1)),
                 "logsumexp": (fl.logsumexp(x), torch.logsumexp(t, -1))}
        for name, (got, want) in pairs.items():
            want = want.numpy()
            # NaN exactly where PyTorch has NaN (whole masked rows), -inf where it has -inf
            assert np.array_equal(np.isnan(got), np.isnan(want)), (isa, name, desc)
            assert np.array_equal(np.isneginf(got), np.isneginf(want)), (isa, name, desc)
            ok = np.isfinite(want)
            # (PyTorch's log_softmax near 0 is good to about 1e-7 absolute: x - lse cancels)
            np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=1e-6, err_msg=f"{isa} {name} {desc}")


@pytest.mark.parametrize("fill", [-np.inf, -1e9])
def test_whole_masked_rows(fill, isa):
    """A row of nothing but -inf has no softmax (NaN everywhere, as PyTorch); a row of -1e9 is
    an ordinary row of ties."""
    x = np.full((3, 4099), fill, np.float32)
    x[1, 17] = 2.0
    p, lp, lse, h = fl.softmax(x), fl.log_softmax(x), fl.logsumexp(x), fl.entropy(x)
    if fill == -np.inf:
        assert np.isnan(p[[0, 2]]).all() and np.isnan(lp[[0, 2]]).all() and np.isnan(h[[0, 2]]).all()
        assert (lse[[0, 2]] == -np.inf).all()
        assert p[1, 17] == 1.0 and (np.delete(p[1], 17) == 0).all() and h[1] == 0.0
    else:
        assert_ulp_close(p[0], np.full(4099, 1 / 4099), 4, np.float32, "ties")
        assert_ulp_close(h[0], np.log(4099.0), 4, np.float32, "ties entropy")
        assert p[1, 17] == 1.0 and h[1] == 0.0


def test_masked_results_bitwise_for_every_thread_count(threads):
    x = np.concatenate([a for _, a in masked_arrays(("float32",), seed=11, classes=(4099,), centres=(0.0, 70.0),
                                                    fills=(-np.inf,))])
    y = class_targets(x.shape, seed=2, ignore_frac=0.0)
    y = np.where(np.isfinite(x[np.arange(len(y)), y]), y, np.argmax(x, axis=1))
    results = []
    for n in (1, 2, 3):
        fl.set_num_threads(n)
        r = {name: getattr(fl, name)(x) for name in POST}
        r["ce"], r["ce_grad"] = fl.cross_entropy_and_grad(x, y)
        r["ce_none"] = fl.cross_entropy(x, y, reduction="none")
        results.append(r)
    for r in results[1:]:
        for key in r:
            a, b = np.asarray(results[0][key]), np.asarray(r[key])
            assert a.tobytes() == b.tobytes(), key


def test_minus_inf_and_far_fills_give_the_same_bits(isa):
    """Every fill far below the gap contributes exactly nothing: -inf, -1e9 and float32's min
    give the softmax family and the cross-entropy the same bits on the finite classes."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 3000)).astype(np.float32) * 3
    mask = rng.random(x.shape) < 0.75
    mask[:, 7] = False
    y = np.full(6, 7)
    res = []
    for fill in (-np.inf, -1e9, np.finfo(np.float32).min):
        xm = np.where(mask, np.float32(fill), x)
        res.append({"softmax": fl.softmax(xm), "log_softmax": np.where(mask, 0, fl.log_softmax(xm)),
                    "logsumexp": fl.logsumexp(xm), "entropy": fl.entropy(xm),
                    "ce": fl.cross_entropy(xm, y, reduction="none"),
                    "grad": fl.cross_entropy_and_grad(xm, y)[1]})
    for r in res[1:]:
        for key in r:
            assert r[key].tobytes() == res[0][key].tobytes(), key


@pytest.mark.parametrize("dname", ["float32", "bfloat16"])
def test_cross_entropy_on_masked_rows_keeps_its_bounds(dname, isa):
    """Targets among the finite classes (a masked target's loss is inf, as in PyTorch)."""
    for i, (desc, x) in enumerate(masked_arrays((dname,), seed=17, classes=(1031, 4099), centres=(0.0, 70.0),
                                                fractions=(0.5, 0.999), fills=(-np.inf, -1e9))):
        xf = x.astype(np.float32)
        y = class_targets(x.shape, seed=i, ignore_frac=0.0)
        y = np.where(xf[np.arange(len(y)), y] > -1e3, y, np.argmax(xf, axis=1))
        ok = np.isfinite(np.max(xf, axis=1))
        x, y, xf = x[ok], y[ok], xf[ok]
        loss = fl.cross_entropy(x, y, reduction="none")
        out = as_dtype(dname)
        want = ref.exact(ref.cross_entropy, x, y, reduction="none")
        # the bound from the spread of the classes that contribute (a far fill adds exactly 0)
        bound = ce_loss_ulp(np.where(xf < -1e3, np.float32(-np.inf), xf).astype(x.dtype), -1, out)
        assert_ulp_close(loss, want, bound, out, f"{isa} {desc}", inputs={"row": x})
        total = fl.cross_entropy(x, y)
        assert_reduced_close(total, ref.exact(ref.cross_entropy, x, y), reduced_ulp(np.max(bound)),
                             out, f"{isa} {desc} mean")
