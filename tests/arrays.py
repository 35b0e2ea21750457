"""The adversarial array generator and the closeness assertions of the parity tests.

In the spirit of bottleneck's ``tests/util.py``: every parity test draws its inputs
from :func:`adversarial_arrays`, which yields ``(description, array, axis)`` triples
covering shapes (0-d, 1-d, empty rows, empty class axis, single class, huge rows),
every axis (positive and negative), memory layouts (C, Fortran, transposed, stepped
slices, negative strides, big-endian, unaligned, read-only) and values (ordinary,
near the float32 exp overflow +-88, +-1e4, +-1e30, +-inf, nan, all -inf rows, rows
of ties).  Everything is deterministic for a given ``seed``.

A 0-d array is yielded with ``axis=-1``: class-axis functions must raise
``ValueError`` on it, elementwise functions must handle it.

Target helpers: :func:`class_targets`, :func:`prob_targets`, :func:`binary_targets`.
Assertions: :func:`assert_ulp_close` and :func:`assert_rel_close`, which report the
worst five points.
"""

import numpy as np

try:  # ml_dtypes is a runtime dependency of fastlogits, but keep this importable
    import ml_dtypes
    bfloat16 = np.dtype(ml_dtypes.bfloat16)
except Exception:  # pragma: no cover
    ml_dtypes = None
    bfloat16 = None

__all__ = ["adversarial_arrays", "class_targets", "prob_targets", "binary_targets",
           "assert_ulp_close", "assert_rel_close", "ulp_distance", "as_dtype", "bfloat16"]


def as_dtype(name):
    """np.dtype for a name, accepting 'bfloat16'."""
    if isinstance(name, str) and name == "bfloat16":
        if bfloat16 is None:
            raise RuntimeError("ml_dtypes is not installed")
        return bfloat16
    return np.dtype(name)


def _cast(a, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a, dtype=np.float64).astype(dtype)


# --------------------------------------------------------------------------- values

def _fill(rng, shape, kind):
    """float64 values of a given flavour."""
    n = int(np.prod(shape)) if len(shape) else 1
    if kind == "normal":
        v = rng.standard_normal(n)
    elif kind == "wide":
        v = rng.standard_normal(n) * 30
    elif kind == "near88":                       # float32 exp over/underflow edge
        v = rng.choice([-1.0, 1.0], n) * (88 + rng.uniform(-1.5, 1.5, n))
    elif kind == "big1e4":
        v = rng.choice([-1.0, 1.0], n) * 1e4 * rng.uniform(0.5, 1.5, n)
    elif kind == "big1e30":
        v = rng.choice([-1.0, 1.0], n) * 1e30 * rng.uniform(0.5, 1.5, n)
    elif kind == "mixed":                        # ordinary values plus a few extremes
        v = rng.standard_normal(n) * 5
        m = rng.random(n) < 0.15
        v[m] = rng.choice([88.7, -88.7, 1e4, -1e4, 1e30, -1e30, -104.0, 709.0, 0.0, -0.0], m.sum())
    elif kind == "ties":
        v = rng.choice([0.0, 1.5, -2.0], n)
    elif kind == "tiny":                         # logits that differ by a few ulps
        v = 3.0 + rng.integers(-3, 4, n) * 2.0 ** -22
    else:  # pragma: no cover
        raise ValueError(kind)
    return v.reshape(shape)


def _rows(a, axis):
    """View of `a` with the class axis last (writes go through to `a`)."""
    return np.moveaxis(a, axis, -1)


def _sprinkle_specials(rng, a, axis):
    """Put +-inf, nan, an all -inf row, a row of ties and a -inf-masked row in `a`
    (float64, modified in place) if it has enough rows."""
    r = _rows(a, axis)
    if r.size == 0 or r.shape[-1] == 0:
        return a
    rows = [idx for idx in np.ndindex(r.shape[:-1])]
    rng.shuffle(rows)
    C = r.shape[-1]
    specials = ["-inf_row", "ties_row", "pos_inf", "nan", "neg_inf_some", "neg_inf_mask"]
    for idx, kind in zip(rows, specials):
        row = r[idx]
        if kind == "-inf_row":
            row[...] = -np.inf
        elif kind == "ties_row":
            row[...] = 2.5
        elif kind == "pos_inf":
            row[rng.integers(C)] = np.inf
        elif kind == "nan":
            row[rng.integers(C)] = np.nan
        elif kind == "neg_inf_some":
            row[rng.integers(C)] = -np.inf
        elif kind == "neg_inf_mask":          # every class but one masked
            keep = rng.integers(C)
            row[...] = -np.inf
            row[keep] = 0.25
    return a


# --------------------------------------------------------------------------- layouts

def _layouts(rng, base, axis, dtype):
    """Yield (layout description, array, axis) holding the values of `base` (float64,
    C-contiguous) in `dtype` with various memory layouts; `axis` is kept pointing at the
    same logical axis."""
    nd = base.ndim
    a = _cast(base, dtype)
    yield "C", a, axis
    if nd >= 2:
        yield "F", np.asfortranarray(a), axis
        # transposed: memory order a random permutation of the axes (the reverse one
        # for 2-D), same logical array
        perm = rng.permutation(nd) if nd > 2 else np.array([1, 0])
        t = np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))
        yield "transposed", t, axis
    if nd >= 1:
        # stepped slices: embed in a larger array and slice with steps 2 (and 3)
        steps = tuple(2 if i % 2 == 0 else 3 for i in range(nd))
        big = np.zeros(tuple(max(1, s * n) for s, n in zip(steps, a.shape)), dtype=a.dtype)
        sl = tuple(slice(None, n * s, s) for s, n in zip(steps, a.shape))
        big[sl] = a
        yield "strided", big[sl], axis
        # negative strides on every axis
        rev = np.ascontiguousarray(a[(slice(None, None, -1),) * nd])[(slice(None, None, -1),) * nd]
        yield "negative-strides", rev, axis
        ro = a.copy()
        ro.flags.writeable = False
        yield "read-only", ro, axis
    if a.dtype.itemsize > 1:
        if a.dtype.kind == "f":
            yield "big-endian", a.astype(a.dtype.newbyteorder(">")), axis
        # unaligned: a view at an odd byte offset of a byte buffer
        if a.size:
            buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
            un = buf[1:].view(a.dtype).reshape(a.shape)
            un[...] = a
            yield "unaligned", un, axis


# --------------------------------------------------------------------------- generator

def adversarial_arrays(dtypes=("float32", "float64"), ndim_max=4, seed=0, layouts=True,
                       specials=True, huge=True):
    """Yield ``(description, array, axis)`` triples for parity tests.

    Parameters
    ----------
    dtypes : iterable of dtype names ("float16", "bfloat16", "float32", "float64",
        "longdouble", ...).
    ndim_max : largest number of dimensions of the random shapes (>= 1).
    seed : everything is deterministic for a seed.
    layouts : also yield Fortran / transposed / strided / reversed / big-endian /
        unaligned / read-only variants of some arrays.
    specials : include +-inf / nan / all -inf rows / tie rows.
    huge : include rows of length 5000 and 70000 (beyond any block size).

    The same logical values are produced for every dtype (cast from float64, so
    +-1e30 becomes +-inf in float16/bfloat16), which lets a test compare dtypes.
    """
    for dname in dtypes:
        dtype = as_dtype(dname)
        rng = np.random.default_rng([seed, _stable_hash(dname)])
        dn = str(dname)

        # 0-d and tiny 1-d
        for val in (0.0, 1.2, -88.5, 1e30, -np.inf, np.inf, np.nan):
            yield f"{dn} 0-d {val!r}", _cast(val, dtype), -1
        yield f"{dn} 1-d C=1", _cast([0.7], dtype), 0
        yield f"{dn} 1-d C=2", _cast([2.5, 0.3], dtype), -1
        yield f"{dn} 1-d doc", _cast([2.5, 0.3, -1.2], dtype), 0
        yield f"{dn} 1-d empty", np.zeros(0, dtype=dtype), -1

        # empty rows / empty class axis
        yield f"{dn} (0,5) no rows", np.zeros((0, 5), dtype=dtype), -1
        yield f"{dn} (4,0) no classes", np.zeros((4, 0), dtype=dtype), -1
        yield f"{dn} (0,0)", np.zeros((0, 0), dtype=dtype), 1
        yield f"{dn} (3,0,2) axis=1 empty", np.zeros((3, 0, 2), dtype=dtype), 1
        yield f"{dn} (3,1) single class", _cast(rng.standard_normal((3, 1)), dtype), -1

        # value flavours on a 2-D shape, every layout
        kinds = ["normal", "wide", "near88", "big1e4", "big1e30", "mixed", "ties", "tiny"]
        for kind in kinds:
            shape = (int(rng.integers(5, 13)), int(rng.integers(2, 19)))
            base = _fill(rng, shape, kind)
            if specials and kind in ("normal", "mixed"):
                _sprinkle_specials(rng, base, 1)
            for ax in (1, -1, 0):
                if not layouts and ax != -1:
                    continue
                layout_iter = _layouts(rng, base, ax, dtype) if (layouts and ax != 0) else \
                    [("C", _cast(base, dtype), ax)]
                for lname, arr, a_ax in layout_iter:
                    yield f"{dn} {kind} {shape} axis={a_ax} {lname}", arr, a_ax

        # random shapes for every ndim and every axis (alternating sign)
        for nd in range(1, ndim_max + 1):
            for rep in range(2):
                shape = tuple(int(rng.choice([1, 2, 3, 5, 7, 17])) for _ in range(nd))
                kind = ["normal", "mixed"][rep]
                base = _fill(rng, shape, kind)
                for ax in range(nd):
                    a_ax = ax if (ax + rep) % 2 == 0 else ax - nd
                    b = base.copy()
                    if specials and rep == 1:
                        _sprinkle_specials(rng, b, ax)
                    yield f"{dn} {kind} {shape} axis={a_ax} C", _cast(b, dtype), a_ax
                    if layouts and nd >= 2:
                        for lname, arr, l_ax in _layouts(rng, b, a_ax, dtype):
                            if lname in ("F", "strided", "negative-strides", "big-endian"):
                                yield f"{dn} {kind} {shape} axis={a_ax} {lname}", arr, l_ax

        # all special rows
        sp = np.array([[-np.inf, -np.inf, -np.inf],
                       [np.inf, 1.0, 2.0],
                       [np.inf, np.inf, 0.0],
                       [np.inf, -np.inf, 0.0],
                       [np.nan, 1.0, 2.0],
                       [np.nan, np.inf, -np.inf],
                       [-np.inf, 0.5, -np.inf],
                       [1.0, 1.0, 1.0],
                       [0.0, -0.0, 0.0],
                       [88.7, -88.7, 0.0],
                       [1e30, -1e30, 1e30],
                       [-1e4, -1e4 - 1, -1e4 + 1]])
        yield f"{dn} special rows", _cast(sp, dtype), -1
        yield f"{dn} special rows axis=0", _cast(sp.T.copy(), dtype), 0

        if huge:
            for C in (5000, 70000):
                base = rng.standard_normal((2, C)) * 4
                base[1, rng.integers(C)] = 40.0               # one dominant class
                yield f"{dn} huge row C={C}", _cast(base, dtype), -1
            base = rng.standard_normal((3000, 3))
            yield f"{dn} many rows (3000,3) axis=0", np.asfortranarray(_cast(base.T, dtype)), 0


def _stable_hash(s):
    return sum((i + 1) * ord(c) for i, c in enumerate(str(s))) % (2 ** 31)


# --------------------------------------------------------------------------- targets

def class_targets(shape, axis=-1, seed=0, ignore_index=-100, ignore_frac=0.1,
                  dtype=np.int64):
    """Integer class indices for logits of ``shape`` with class axis ``axis``: shape
    without the axis, values in [0, C), about ``ignore_frac`` of them ``ignore_index``
    (at least one when there are >= 4 rows; all of them when C == 0)."""
    shape = tuple(shape)
    ax = axis % len(shape)
    C = shape[ax]
    rshape = shape[:ax] + shape[ax + 1:]
    rng = np.random.default_rng([seed, 7])
    if C == 0:
        return np.full(rshape, ignore_index, dtype=dtype)
    y = rng.integers(0, C, size=rshape).astype(dtype)
    if ignore_frac and y.size:
        m = rng.random(rshape) < ignore_frac
        if y.size >= 4 and not m.any():
            m.flat[int(rng.integers(y.size))] = True
        y = np.where(m, ignore_index, y).astype(dtype)
    return y


def prob_targets(shape, axis=-1, seed=0, zero_frac=0.3, dtype=np.float64):
    """Probability targets of ``shape`` summing to 1 along ``axis``, with some exact
    zeros (every row keeps at least one positive entry) and some one-hot rows."""
    shape = tuple(shape)
    ax = axis % len(shape)
    rng = np.random.default_rng([seed, 11])
    t = rng.random(shape) ** 2
    t[rng.random(shape) < zero_frac] = 0.0
    r = np.moveaxis(t, ax, -1)
    C = r.shape[-1]
    if C:
        for idx in np.ndindex(r.shape[:-1]):
            if rng.random() < 0.15:                       # one-hot row
                r[idx] = 0.0
                r[idx][rng.integers(C)] = 1.0
            elif not r[idx].any():
                r[idx][rng.integers(C)] = 1.0
        with np.errstate(invalid="ignore"):
            r /= r.sum(axis=-1, keepdims=True)
    return t.astype(dtype)


def binary_targets(shape, seed=0, kind="float", soft=False):
    """0/1 targets of ``shape``; ``kind`` is "float" (float64), "float32", "bool" or
    "int"; ``soft=True`` (floats only) mixes in values strictly inside (0, 1) while
    keeping exact 0s and 1s."""
    rng = np.random.default_rng([seed, 13])
    y = rng.random(shape) < 0.4
    if kind == "bool":
        return y
    if kind == "int":
        return y.astype(np.int64)
    dt = np.float32 if kind == "float32" else np.float64
    out = y.astype(dt)
    if soft:
        m = rng.random(shape) < 0.3
        out = np.where(m, rng.random(shape).astype(dt), out)
    return out


# --------------------------------------------------------------------------- assertions

def _finfo(dtype):
    dtype = np.dtype(dtype)
    if ml_dtypes is not None and dtype.kind == "V":
        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def _to_ld(a):
    """Convert to longdouble (exactly, for every float format up to float64)."""
    a = np.asarray(a)
    if a.dtype.kind == "V" or a.dtype == np.float16:
        a = a.astype(np.float32)
    return a.astype(np.longdouble)


def ulp_distance(actual, expected, dtype):
    """Elementwise distance |actual - expected| in ULPs of ``dtype`` at ``expected``.

    ``expected`` may be more precise than ``dtype`` (e.g. longdouble): the distance is
    then fractional (a correctly rounded result is <= 0.5).  Both nan -> 0; same-sign
    infinities -> 0 (an expected value that rounds to +-inf in ``dtype`` counts as that
    infinity); nan vs a number, or an infinity vs a finite value -> inf.
    """
    dtype = np.dtype(dtype)
    fi = _finfo(dtype)
    a = _to_ld(actual)
    e = _to_ld(expected)
    a, e = np.broadcast_arrays(a, e)
    with np.errstate(over="ignore", invalid="ignore"):
        e_rounded = _to_ld(np.asarray(e).astype(np.float64).astype(dtype)) \
            if dtype != np.longdouble else e
    nmant = int(fi.nmant)
    minexp = int(fi.minexp)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, ex = np.frexp(np.abs(np.where(np.isfinite(e), e, 1)))
        ex = np.maximum(ex.astype(np.int64) - 1, minexp)
        ulp = np.ldexp(np.ones(e.shape, dtype=np.longdouble), (ex - nmant).astype(np.int32))
        d = np.abs(a - e) / ulp
    an, en = np.isnan(a), np.isnan(e)
    ai, ei = np.isinf(a), np.isinf(e_rounded)
    d = np.where(an | en, np.inf, d)
    d = np.where(an & en, 0, d)
    d = np.where((ai | ei) & ~an & ~en, np.inf, d)
    d = np.where(ai & ei & (np.sign(a) == np.sign(e_rounded)), 0, d)
    return np.asarray(d, dtype=np.longdouble)


def _fmt(v):
    v = np.asarray(v)
    if v.ndim == 0:
        return repr(v[()])
    s = np.array2string(v, threshold=8, edgeitems=3, precision=10)
    return s.replace("\n", " ")


def _report(kind, context, actual, expected, err, inputs, limit_text, worst=5):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    flat = np.asarray(err, dtype=np.float64).reshape(-1)
    order = np.argsort(-np.where(np.isnan(flat), np.inf, flat), kind="stable")[:worst]
    lines = [f"{kind} check failed: {context}",
             f"  shape={actual.shape} dtype={actual.dtype} {limit_text}",
             "  worst points:"]
    for k in order:
        idx = np.unravel_index(int(k), actual.shape) if actual.ndim else ()
        parts = [f"    index={tuple(int(i) for i in idx)}"]
        if inputs:
            for name, arr in inputs.items():
                arr = np.asarray(arr)
                try:
                    parts.append(f"{name}={_fmt(arr[idx])}")
                except (IndexError, TypeError):
                    pass
        parts.append(f"actual={_fmt(actual[idx] if actual.ndim else actual)}")
        parts.append(f"expected={_fmt(expected[idx] if expected.ndim else expected)}")
        parts.append(f"err={float(flat[k]):.4g}")
        lines.append(" ".join(parts))
    return "\n".join(lines)


def _context_text(context):
    if isinstance(context, dict):
        return ", ".join(f"{k}={v}" for k, v in context.items())
    return str(context)


def _shape_check(actual, expected, context):
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: {_context_text(context)}: actual {a.shape}, "
                             f"expected {e.shape}")
    return a, e


def assert_ulp_close(actual, expected, max_ulp, dtype, context="", inputs=None,
                     check_dtype=True):
    """Assert ``ulp_distance(actual, expected, dtype) <= max_ulp`` everywhere.

    ``dtype`` is the output dtype in which ULPs are measured (float16, bfloat16,
    float32, float64, longdouble).  ``context`` is a string or a dict (function, dtype,
    shape, axis, ...).  ``inputs`` is an optional dict name -> array indexed by the
    output index (pass a class-axis-last view of the logits to see whole rows for a
    reduction).  With ``check_dtype``, an ndarray/NumPy scalar ``actual`` must have
    exactly ``dtype`` (byte order ignored).  On failure the AssertionError lists the
    context and the five worst points.
    """
    dtype = np.dtype(dtype)
    if check_dtype and isinstance(actual, (np.ndarray, np.generic)):
        if np.dtype(actual.dtype).newbyteorder("=") != dtype.newbyteorder("="):
            raise AssertionError(f"dtype mismatch: {_context_text(context)}: actual "
                                 f"{actual.dtype}, expected {dtype}")
    a, e = _shape_check(actual, expected, context)
    err = ulp_distance(a, e, dtype)
    bad = ~(err <= max_ulp)
    if np.any(bad):
        raise AssertionError(_report(
            "ULP", _context_text(context), a, e, err, inputs,
            f"max_ulp={max_ulp} ({int(bad.sum())} of {bad.size} points exceed it; "
            f"max {float(np.max(err)):.4g} ulp)"))


def assert_rel_close(actual, expected, rtol, atol=0.0, context="", inputs=None):
    """Assert ``|actual - expected| <= atol + rtol*|expected|`` everywhere, with the
    same nan/inf conventions as :func:`assert_ulp_close` (both nan equal, same-sign
    infinities equal, anything else involving nan/inf fails) and the same report."""
    a, e = _shape_check(actual, expected, context)
    a = _to_ld(a)
    e = _to_ld(e)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        tol = atol + rtol * np.abs(e)
        diff = np.abs(a - e)
        err = np.where(tol > 0, diff / np.where(tol > 0, tol, 1), np.where(diff > 0, np.inf, 0))
    an, en, ai, ei = np.isnan(a), np.isnan(e), np.isinf(a), np.isinf(e)
    err = np.where(an | en | ai | ei, np.inf, err)
    err = np.where(an & en, 0, err)
    err = np.where(ai & ei & (np.sign(a) == np.sign(e)), 0, err)
    bad = ~(err <= 1)
    if np.any(bad):
        raise AssertionError(_report(
            "relative", _context_text(context), np.asarray(actual), np.asarray(expected),
            err, inputs,
            f"rtol={rtol} atol={atol} ({int(bad.sum())} of {bad.size} points fail; "
            f"err = |a-e|/(atol+rtol*|e|))"))

