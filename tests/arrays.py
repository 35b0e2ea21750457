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

__all__ = ["adversarial_arrays", "masked_arrays", "class_targets", "prob_targets", "binary_targets",
           "binary_target_like", "weight_like", "relayout", "at_page_end",
           "assert_ulp_close", "assert_rel_close", "ulp_distance", "exact_parts", "rounded",
           "as_dtype", "bfloat16"]


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


MASK_FRACTIONS = (0.0, 0.5, 0.75, 0.999)
MASK_FILLS = (-np.inf, -1e9, float(np.finfo(np.float32).min), -1e4)


def masked_arrays(dtypes=("float32",), seed=0, classes=(100, 1031, 4099),
                  centres=(0.0, -3.0, -60.0, 62.0, 70.0), fractions=MASK_FRACTIONS, fills=MASK_FILLS):
    """Yield ``(description, array)`` pairs of 2-D logits (class axis last) masked as decoders
    and constrained classifiers mask them: each row randn * 3 about a centre (rows within 64 of
    zero take the kernels' exact-reduction sums, rows beyond it the TwoSum ones), then a random
    fraction of its classes set to a fill (-inf, -1e9, float32's min, -1e4), the row's max kept.
    Each array also holds a row with a single finite class, an all -inf row, a masked row with
    one logit in the gap between the normal range and the exponentials that are 0 (95 below the
    max: the general exponentials' subnormal results), and masked rows with a logit just above
    and just below the gap's lower end (103.9 and 104.1 below the max)."""
    for dname in dtypes:
        dtype = as_dtype(dname)
        rng = np.random.default_rng([seed, _stable_hash(dname), 25])
        for c in classes:
            for centre in centres:
                for frac in fractions:
                    for fill in fills:
                        x = rng.standard_normal((12, c)) * 3 + centre
                        top = np.argmax(x, axis=1)
                        mask = rng.random(x.shape) < frac
                        mask[np.arange(x.shape[0]), top] = False
                        x[mask] = fill
                        m = x[:, :1].copy()
                        m[:, 0] = x[np.arange(x.shape[0]), top]
                        x[1, :] = fill
                        x[1, rng.integers(c)] = centre         # a single finite class
                        x[2, :] = -np.inf                       # all masked: NaN
                        x[3, rng.integers(c)] = m[3, 0] - 95.0  # a logit in the gap
                        x[4, rng.integers(c)] = m[4, 0] - 103.9
                        x[5, rng.integers(c)] = m[5, 0] - 104.1
                        yield f"{dname} C={c} centre={centre} masked={frac} fill={fill}", _cast(x, dtype)


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


# --------------------------------------------------------------------------- elementwise losses

WEIGHT_SPECS = ("none", "scalar", "last", "rows", "full", "leading1")
TARGET_KINDS = ("float64", "float32", "float16", "bool", "int64", "int8", "uint8", "soft")
RELAYOUTS = ("C", "F", "reversed", "strided", "big-endian", "unaligned", "read-only")


def weight_like(spec, shape, rng, low=0.25, high=2.25):
    """A positive weight broadcasting to ``shape`` as PyTorch's BCE weight/pos_weight do:
    "none" (None), "scalar" (0-d), "last" (the last axis), "rows" (the last axis 1),
    "full" (the shape itself), "leading1" (1s then the last axis)."""
    shape = tuple(shape)
    if spec == "none":
        return None
    if spec == "scalar" or not shape:
        wshape = ()
    elif spec == "last":
        wshape = shape[-1:]
    elif spec == "rows":
        wshape = shape[:-1] + (1,)
    elif spec == "full":
        wshape = shape
    elif spec == "leading1":
        wshape = (1,) * (len(shape) - 1) + shape[-1:]
    else:  # pragma: no cover
        raise ValueError(spec)
    return rng.uniform(low, high, wshape)


def binary_target_like(kind, shape, seed=0):
    """0/1 targets of ``shape`` in the dtype named by ``kind`` (TARGET_KINDS; "soft": float64
    with values strictly inside (0, 1) too)."""
    if kind in ("bool", "soft"):
        return binary_targets(shape, seed=seed, kind="bool" if kind == "bool" else "float", soft=kind == "soft")
    return binary_targets(shape, seed=seed, kind="int").astype(kind)


def at_page_end(a):
    """A C-contiguous copy of ``a`` whose last byte is the last before a page that can be
    neither read nor written: a kernel that touches a byte past the array's end faults (the
    test process dies) instead of reading or overwriting a neighbour unseen. None where the
    page cannot be protected (not Linux)."""
    import ctypes
    import mmap
    import sys

    if not sys.platform.startswith("linux"):
        return None
    page = mmap.PAGESIZE
    n = a.nbytes
    total = -(-n // page) * page + page
    buf = mmap.mmap(-1, total, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(start + total - page, page, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect of the guard page failed")
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=total - page - n).reshape(a.shape)
    out[...] = a
    return out


def relayout(a, how):
    """``a`` (equal values) in another memory layout: one of RELAYOUTS."""
    a = np.asarray(a)
    if a.ndim == 0 or how == "C":
        return a
    if how == "F":
        return np.asfortranarray(a)
    if how == "reversed":
        rev = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[rev])[rev]
    if how == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), dtype=a.dtype)
        sl = (slice(None, None, 2),) * a.ndim
        big[sl] = a
        return big[sl]
    if how == "big-endian":
        return a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 and a.dtype.kind in "fiu" else a
    if how == "unaligned":
        if a.dtype.itemsize == 1 or a.size == 0:
            return a
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        un = buf[1:].view(a.dtype).reshape(a.shape)
        un[...] = a
        return un
    if how == "read-only":
        ro = a.copy()
        ro.flags.writeable = False
        return ro
    raise ValueError(how)  # pragma: no cover


# --------------------------------------------------------------------------- assertions
#
# Errors are measured against exact values: fastlogits.reference.exact(...) results (DDArray:
# value = (hi + lo) * 2**ex, about 106 bits) or plain float arrays of any precision.  The
# arithmetic is float64 only, so the measure is the same on every platform.

def _finfo(dtype):
    dtype = np.dtype(dtype)
    if ml_dtypes is not None and dtype.kind == "V":
        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def _is_exact(a):
    """True for an exact (double-double) value: it has hi, lo and ex parts."""
    return all(hasattr(a, name) for name in ("hi", "lo", "ex"))


def _to_f64(a):
    """A float array as float64 (exactly for every format up to float64)."""
    a = np.asarray(a)
    if a.dtype.kind == "V" or a.dtype == np.float16:
        a = a.astype(np.float32)
    with np.errstate(over="ignore"):
        return a.astype(np.float64)


def exact_parts(expected):
    """``(hi, lo, ex)``, float64/float64/int64 arrays with ``expected = (hi + lo) * 2**ex``
    and ``0.5 <= |hi| < 1`` (or hi zero or non-finite, with lo = ex = 0)."""
    if _is_exact(expected):
        return np.asarray(expected.hi), np.asarray(expected.lo), np.asarray(expected.ex)
    e = np.asarray(expected)
    if e.dtype.kind == "V" or e.dtype == np.float16:
        e = e.astype(np.float32)
    if e.dtype.kind != "f":
        e = e.astype(np.float64)
    ordinary = np.isfinite(e) & (e != 0)
    m, k = np.frexp(np.where(ordinary, e, 0.5))            # exact in e's own precision
    hi = np.where(ordinary, m, e).astype(np.float64)
    lo = np.where(ordinary, m - hi, 0).astype(np.float64)  # non-zero for long double only
    return hi, lo, np.where(ordinary, k, 0).astype(np.int64)


def rounded(expected, dtype):
    """The exact value rounded to ``dtype`` (one rounding for exact values)."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if _is_exact(expected):
            return expected.astype(dtype)
        return _to_f64(expected).astype(dtype)


def _ldexp(x, k):
    return np.ldexp(x, np.clip(k, -2200, 2200).astype(np.int32))


def _ulp_exponent(hi, ex, dtype):
    """log2 of the ULP of ``dtype`` at values hi * 2**ex (0.5 <= |hi| < 1); at 0 it is the
    smallest subnormal."""
    fi = _finfo(dtype)
    ex = np.where(np.asarray(hi) == 0, int(fi.minexp), np.asarray(ex, dtype=np.int64) - 1)
    return np.maximum(ex, int(fi.minexp)) - int(fi.nmant)


def ulp_distance(actual, expected, dtype, scale=None):
    """Elementwise ``|actual - expected|`` in ULPs of ``dtype`` at ``expected``.

    ``expected`` is exact (a ``reference.exact`` result) or a float array of any precision;
    the distance is then fractional (a correctly rounded result is <= 0.5). ``actual`` is a
    float array, or an exact value (to compare two oracles). With ``scale`` (non-negative
    floats broadcasting against ``expected``) the unit is the larger of the ULP at
    ``expected`` and the ULP at ``scale``: "within N ULP of the value or of the size of the
    terms it was computed from", for results that cancel. Both nan -> 0; same-sign
    infinities -> 0 (an expected value that rounds to +-inf in ``dtype`` counts as that
    infinity); nan vs a number, or an infinity vs a finite value -> inf.
    """
    dtype = np.dtype(dtype)
    hi, lo, ex = exact_parts(expected)
    unit = _ulp_exponent(hi, ex, dtype)
    if scale is not None:
        shi, _, sex = exact_parts(np.abs(_to_f64(scale)))
        unit = np.maximum(unit, np.where(np.isfinite(shi), _ulp_exponent(shi, sex, dtype), unit))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if _is_exact(actual):
            diff = actual - expected
            dh, dl, dex = exact_parts(diff)
            d = _ldexp(np.abs(dh + dl), dex - unit)
            a = _to_f64(actual.astype(np.float64))
        else:
            a = _to_f64(actual)
            a, hi, lo, ex, unit = np.broadcast_arrays(a, hi, lo, ex, unit)
            d = _ldexp(np.abs((_ldexp(a, -ex) - hi) - lo), ex - unit)
        a, hi, d = np.broadcast_arrays(a, hi, d)
        e_rounded = np.broadcast_to(rounded(expected, dtype), a.shape)
        an, en = np.isnan(a), np.isnan(hi)
        ai, ei = np.isinf(a), np.isinf(_to_f64(e_rounded))
        d = np.where(an | en, np.inf, d)
        d = np.where(an & en, 0.0, d)
        d = np.where((ai | ei) & ~an & ~en, np.inf, d)
        d = np.where(ai & ei & (np.sign(a) == np.sign(_to_f64(e_rounded))), 0.0, d)
    return np.asarray(d, dtype=np.float64)


def _fmt(v):
    v = np.asarray(v)
    if v.ndim == 0:
        return repr(v[()])
    s = np.array2string(v, threshold=8, edgeitems=3, precision=17)
    return s.replace("\n", " ")


def _report(kind, context, actual, expected, err, inputs, limit_text, worst=5, rank=None):
    """The failure message: context, the limit, and the worst points (as scipy.special's
    FuncData): index, inputs, got, want (the exact value rounded to float64), error."""
    actual = np.asarray(actual)
    want = _to_f64(rounded(expected, np.float64)) if _is_exact(expected) else np.asarray(expected)
    want = np.broadcast_to(want, actual.shape)
    flat = np.asarray(err, dtype=np.float64).reshape(-1)
    key = flat if rank is None else np.broadcast_to(np.asarray(rank, dtype=np.float64), actual.shape).reshape(-1)
    order = np.argsort(-np.where(np.isnan(key), np.inf, key), kind="stable")[:worst]
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
        parts.append(f"got={_fmt(actual[idx] if actual.ndim else actual)}")
        parts.append(f"want={_fmt(want[idx] if want.ndim else want)}")
        parts.append(f"err={float(flat[k]):.4g}")
        lines.append(" ".join(parts))
    return "\n".join(lines)


def _context_text(context):
    if isinstance(context, dict):
        return ", ".join(f"{k}={v}" for k, v in context.items())
    return str(context)


def _shape_check(actual, expected, context):
    a_shape, e_shape = np.shape(actual), np.shape(expected.hi if _is_exact(expected) else expected)
    if a_shape != e_shape:
        raise AssertionError(f"shape mismatch: {_context_text(context)}: actual {a_shape}, "
                             f"expected {e_shape}")


def assert_ulp_close(actual, expected, max_ulp, dtype, context="", inputs=None,
                     check_dtype=True, scale=None):
    """Assert ``ulp_distance(actual, expected, dtype, scale) <= max_ulp`` everywhere.

    ``dtype`` is the dtype in which ULPs are measured (float16, bfloat16, float32,
    float64).  ``context`` is a string or a dict (function, dtype, shape, axis, ...).
    ``inputs`` is an optional dict name -> array indexed by the output index (pass a
    class-axis-last view of the logits to see whole rows for a reduction).  With
    ``check_dtype``, an ndarray/NumPy scalar ``actual`` must have exactly ``dtype`` (byte
    order ignored).  On failure the AssertionError lists the context and the five worst
    points. Returns the largest distance (for the accuracy tables).
    """
    dtype = np.dtype(dtype)
    if check_dtype and isinstance(actual, (np.ndarray, np.generic)):
        if np.dtype(actual.dtype).newbyteorder("=") != dtype.newbyteorder("="):
            raise AssertionError(f"dtype mismatch: {_context_text(context)}: actual "
                                 f"{actual.dtype}, expected {dtype}")
    _shape_check(actual, expected, context)
    err = ulp_distance(actual, expected, dtype, scale)
    bad = ~(err <= max_ulp)
    if np.any(bad):
        limit = max_ulp if np.ndim(max_ulp) == 0 else \
            f"per element, {float(np.min(max_ulp)):.4g} to {float(np.max(max_ulp)):.4g}"
        raise AssertionError(_report(
            "ULP", _context_text(context), np.asarray(actual), expected, err, inputs,
            f"max_ulp={limit} ({int(bad.sum())} of {bad.size} points exceed it; "
            f"max {float(np.max(err)):.4g} ulp)", rank=err - max_ulp))
    return float(np.max(err, initial=0.0))


def assert_rel_close(actual, expected, rtol, atol=0.0, context="", inputs=None):
    """Assert ``|actual - expected| <= atol + rtol*|expected|`` everywhere (float64
    arithmetic), with the same nan/inf conventions as :func:`assert_ulp_close` (both nan
    equal, same-sign infinities equal, anything else involving nan/inf fails) and the same
    report. For comparisons with other libraries, whose own errors are stated that way."""
    _shape_check(actual, expected, context)
    a = _to_f64(actual)
    e = _to_f64(rounded(expected, np.float64)) if _is_exact(expected) else _to_f64(expected)
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
            "relative", _context_text(context), np.asarray(actual), e,
            err, inputs,
            f"rtol={rtol} atol={atol} ({int(bad.sum())} of {bad.size} points fail; "
            f"err = |a-e|/(atol+rtol*|e|))"))


# --------------------------------------------------------------------------- gradient scales
#
# A gradient entry is a difference of terms (p_c - 1, T*p_c - w_c*t_c, sigmoid(x) - y): where
# they cancel, any algorithm, the oracle's extended backend included, is accurate to the size
# of the terms, not of their difference. These give that size per entry (float64, rough),
# the `scale` of `assert_ulp_close`.

def _shifted_rows(x, axis):
    """The logits as float64 with the class axis last, and their row max (0 where not finite)."""
    v = np.moveaxis(_to_f64(x), axis, -1)
    with np.errstate(invalid="ignore"):
        m = np.max(v, axis=-1, keepdims=True, initial=-np.inf)
    return v, np.where(np.isfinite(m), m, 0.0)


def ce_grad_scale(x, target, axis=-1, weight=None, sample_weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, z_loss=0.0):
    """Per logit, the size of the terms of the cross-entropy gradient:
    c1*s_i*((1-eps)*w_y*|p_c - [c=y]| + (eps/C)*(W*p_c + w_c)) for class indices,
    c1*s_i*(T_i*p_c + w_c*t'_ic) for probabilities, plus c2*s_i*2z*|lse_i|*p_c."""
    v, m = _shifted_rows(x, axis)
    C = v.shape[-1]
    if v.size == 0:
        return np.zeros(np.shape(x))
    eps, z = float(label_smoothing), float(z_loss)
    with np.errstate(all="ignore"):
        e = np.exp(v - m)
        total = e.sum(axis=-1, keepdims=True)
        p = e / total
        lse = np.abs(m + np.log(total))
        w = np.ones(C) if weight is None else _to_f64(weight)
        s = np.ones(v.shape[:-1]) if sample_weight is None else _to_f64(sample_weight)
        t = np.asarray(target)
        if t.dtype.kind in "iu":
            valid = t != ignore_index
            tc = np.where(valid, t, 0)
            onehot = np.arange(C) == tc[..., None]
            wy = np.where(valid, w[tc], 0.0)
            terms = (1 - eps) * wy[..., None] * np.abs(p - onehot) + eps / C * (w.sum() * p + w)
            d1, d2 = np.sum(s * wy), np.sum(np.where(valid, s, 0.0))
        else:
            valid = np.ones(v.shape[:-1], dtype=bool)
            wt = w * ((1 - eps) * np.moveaxis(_to_f64(t), axis, -1) + eps / C)
            terms = wt.sum(axis=-1, keepdims=True) * p + wt
            d1 = d2 = np.sum(s)
        c1, c2 = (1 / d1, 1 / d2) if reduction == "mean" else (1.0, 1.0)
        scale = c1 * s[..., None] * terms + c2 * s[..., None] * 2 * z * lse * p
        scale = np.where(valid[..., None] & np.isfinite(scale), scale, 0.0)
    return np.moveaxis(scale, -1, axis)


def _sigmoids(x):
    with np.errstate(over="ignore"):
        x = _to_f64(x)
        t = np.exp(-np.abs(x))
        sp = np.where(x >= 0, 1 / (1 + t), t / (1 + t))
        sn = np.where(x >= 0, t / (1 + t), 1 / (1 + t))
    return sp, sn


def bce_grad_scale(x, target, weight=None, pos_weight=None, reduction="mean"):
    """Per logit, |w|*(sigmoid(x)*(1-y) + |pw|*y*sigmoid(-x)) (over the count for "mean")."""
    sp, sn = _sigmoids(x)
    y = _to_f64(target)
    w = 1.0 if weight is None else np.abs(_to_f64(weight))
    pw = 1.0 if pos_weight is None else np.abs(_to_f64(pos_weight))
    with np.errstate(invalid="ignore"):
        scale = np.broadcast_to(w * (sp * (1 - y) + pw * y * sn), np.shape(x))
    n = max(np.size(x), 1) if reduction == "mean" else 1
    return np.where(np.isfinite(scale), scale, 0.0) / n


def focal_grad_scale(x, target, alpha=0.25, gamma=2.0, reduction="mean"):
    """Per logit, the size of the two terms of the focal-loss gradient,
    |a_t|*(q**g*(p*(1-y) + y*(1-p)) + g*ce*q**(g-1)*p*(1-p)) (over the count for "mean")."""
    sp, sn = _sigmoids(x)
    y = _to_f64(target)
    xf = _to_f64(x)
    with np.errstate(all="ignore"):
        ls_pos = np.minimum(xf, 0) - np.log1p(np.exp(-np.abs(xf)))      # log sigmoid(x)
        ls_neg = np.minimum(-xf, 0) - np.log1p(np.exp(-np.abs(xf)))     # log sigmoid(-x)
        ce = -(np.where(y == 0, 0, y * ls_pos) + np.where(y == 1, 0, (1 - y) * ls_neg))
        q = sp * (1 - y) + sn * y
        at = np.abs(alpha * y + (1 - alpha) * (1 - y)) if alpha >= 0 else 1.0
        mod = q ** gamma
        second = np.where(q > 0, gamma * ce * mod * sp * sn / np.where(q > 0, q, 1), 0.0)
        scale = at * (mod * (sp * (1 - y) + y * sn) + np.abs(second))
    n = max(np.size(x), 1) if reduction == "mean" else 1
    return np.where(np.isfinite(scale), scale, 0.0) / n


# --------------------------------------------------------------------------- the claims
#
# The accuracy that README.md and docs/accuracy.md state, as the parity tests enforce it
# (errors against the exact oracle, in ULPs of the output dtype; "of its terms" is the `scale`
# above). float16 and bfloat16 are computed in float32 and rounded once: 1 ULP of their own.

POST_ULP = 4             # sigmoid, log_sigmoid, softmax, log_softmax, logsumexp, entropy
LOSS_ULP = 8             # per-element losses and gradients (cross-entropy, BCE, focal at gamma 0)
FOCAL_ULP_PER_GAMMA = 2  # focal: LOSS_ULP + 2*gamma (q**gamma multiplies q's error by gamma)
HALF_ULP = 1


def compute_dtype(dtype):
    """The dtype the kernels compute in: float64 for float64, float32 for the others."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _is_half(dtype):
    return np.dtype(dtype).itemsize == 2


def loss_ulp(dtype):
    """Bound of per-element cross-entropy and BCE losses and gradients (of their terms)."""
    return HALF_ULP if _is_half(dtype) else LOSS_ULP


def ce_grad_ulp(x, axis, dtype):
    """Bound of the cross-entropy gradient, per logit: LOSS_ULP; float32 rows take their
    exponentials from the rounded x - max (no TwoSum correction, a deliberate speed choice in
    csrc/fl_ce.c), each off by |x_k - max| ULP, and every entry depends on their sum: the
    row's spread (largest |x_k - max| over its finite logits) is added."""
    if _is_half(dtype) or np.dtype(dtype) == np.float64:
        return loss_ulp(dtype)
    v, m = _shifted_rows(x, axis)
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isfinite(v), np.abs(v - m), 0.0)
        spread = np.max(gap, axis=-1, keepdims=True, initial=0.0)
    return LOSS_ULP + np.moveaxis(np.broadcast_to(spread, v.shape), -1, axis)


def ce_loss_ulp(x, axis, dtype):
    """Bound of the per-row cross-entropy loss: LOSS_ULP; float32 rows add their spread (see
    ce_grad_ulp: a loss dominated by the exponentials of the other classes, -log p_y of a
    target holding the max, carries their error)."""
    if _is_half(dtype) or np.dtype(dtype) == np.float64:
        return loss_ulp(dtype)
    v, m = _shifted_rows(x, axis)
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isfinite(v), np.abs(v - m), 0.0)
    return LOSS_ULP + np.max(gap, axis=-1, initial=0.0)


def focal_ulp(x, target, gamma, dtype):
    """Bound of the focal loss and gradient, per element: LOSS_ULP + 2*gamma; float64 with
    gamma not in {0, 1, 2} takes q**gamma as exp(gamma*log q), whose argument carries the
    rounding of log q and of the product: 2*|gamma*log q| ULP more."""
    if _is_half(dtype):
        return HALF_ULP
    bound = LOSS_ULP + FOCAL_ULP_PER_GAMMA * gamma
    if np.dtype(dtype) != np.float64 or gamma in (0.0, 1.0, 2.0):
        return bound
    sp, sn = _sigmoids(x)
    y = _to_f64(target)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = sp * (1 - y) + sn * y
        extra = np.where(q > 0, 2 * np.abs(gamma * np.log(q)), 0.0)
    return bound + np.where(np.isfinite(extra), extra, 0.0)


def reduced_ulp(per_element_ulp):
    """Bound of a "mean"/"sum" loss (a float64), in ULPs of the compute dtype over float64's
    range: the elements' own bound plus one (compensated sums of non-negative terms)."""
    return float(np.max(per_element_ulp, initial=0.0)) + 1


def underflow_slack(max_ulp, n_terms, dtype, weight=1.0):
    """The absolute error a sum of ``n_terms`` elementwise losses of the compute dtype may carry
    from elements in its subnormal range (each within ``max_ulp`` of the smallest subnormal,
    times its weights): a float32 loss of 1e-116 is 0."""
    tiny = float(np.finfo(compute_dtype(dtype)).smallest_subnormal)
    return float(max_ulp) * tiny * n_terms * weight


def assert_reduced_close(actual, expected, max_ulp, dtype, context="", atol=0.0):
    """A reduced loss (Python float) against the exactly summed exact value, in ULPs of the
    compute dtype of ``dtype`` but without its range (a float32 sum may exceed 3.4e38), or
    within ``atol`` (see underflow_slack)."""
    cdt = compute_dtype(dtype)
    scale = 2.0 ** (52 - int(np.finfo(cdt).nmant))
    err = ulp_distance(np.float64(actual), expected, np.float64) / scale
    if not err <= max_ulp and atol > 0:
        exact = rounded(expected, np.float64)
        if np.isfinite(exact) and abs(float(actual) - float(exact)) <= atol:
            return 0.0
    if not err <= max_ulp:
        raise AssertionError(_report(
            "ULP", _context_text(context), np.float64(actual), expected, err, None,
            f"reduced loss, max_ulp={max_ulp} of {cdt} (got {float(err):.4g})"))
    return float(err)


def assert_same_result(a, b, path=""):
    """Bitwise equality of two results (dicts of arrays and numbers; NaN equal to NaN), naming
    the first key path that differs."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for key in a:
            assert_same_result(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert (a != a and b != b) or a == b, (path, a, b)
    else:
        assert a == b, (path, a, b)


def split_scorers(x, y, w, cuts, kw, g=None):
    """One fl.Scorer(**kw) per run of rows between consecutive cuts, each updated with its rows
    (and their weights and groups)."""
    import fastlogits as fl

    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        s = fl.Scorer(**kw)
        s.update(x[lo:hi], y[lo:hi], sample_weight=None if w is None else w[lo:hi],
                 group=None if g is None else g[lo:hi])
        out.append(s)
    return out


def merge_tree(scorers, rng):
    """The scorers merged in a random tree (random pairs, random sides), each merged state
    through a pickle round trip first."""
    import pickle

    scorers = list(scorers)
    while len(scorers) > 1:
        i, j = sorted(rng.choice(len(scorers), 2, replace=False))
        b = scorers.pop(j)
        a = scorers.pop(i)
        if rng.random() < 0.5:
            a, b = b, a
        scorers.append(pickle.loads(pickle.dumps(a)).merge(b))
    return scorers[0]
