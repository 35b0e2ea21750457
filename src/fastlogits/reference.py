"""NumPy reference implementation (test oracle) of the fastlogits public API.

Every public function of sections 2-4 of the API contract is implemented here with
the same name and signature, written for clarity from the mathematical formulas, not
for speed.  The module is standalone: it imports only NumPy (SciPy is never needed),
and nothing from the rest of fastlogits, so it can be loaded by file path.

Precision
---------
Called directly, a function computes in ``np.result_type(x.dtype, np.float64)``:
float64 for float16/bfloat16/float32/float64 inputs, long double for ``np.longdouble``
inputs; integer and bool logits are converted to float64.  That is the plain NumPy
baseline (``fastlogits bench`` times it).

``exact(f, *args, **kwargs)`` evaluates the same formulas in exact arithmetic and returns
the results unrounded, as :class:`DDArray` values (about 106 significant bits and an
unbounded exponent: enough to measure errors to a small fraction of a float64 ULP, in the
subnormal range too); ``exact(...).astype(dtype)`` rounds once.  This is the oracle of the
accuracy tests for the postprocessing functions (section 2) and the losses and their
gradients (section 3).  Two backends compute it, chosen by :func:`backend`:

* ``"extended"``: NumPy long double, used where it is genuinely extended (x86-64 Linux and
  macOS: a 64-bit significand, ``np.finfo(np.longdouble).nmant >= 63``);
* ``"portable"``: double-double arithmetic written here in vectorised NumPy float64
  (:class:`DDArray`), identical on every platform: the only one on macOS arm64 and Windows,
  where ``long double`` is plain double.

``FASTLOGITS_ORACLE=portable`` forces the portable backend (so x86 CI proves the path of the
other platforms), ``FASTLOGITS_ORACLE=extended`` requires the extended one; unset or
``auto`` takes the extended backend where it exists.  :func:`use_backend` switches backends
inside a ``with`` block.

Output conventions (as in the fast API)
---------------------------------------
* An output array has the logits' dtype unless ``dtype=`` is given (longdouble in,
  longdouble out).
* ``reduction="mean"``/``"sum"`` returns a Python ``float``.
* A function that reduces the class axis of a 1-D input returns a NumPy scalar; an
  elementwise function of a 0-d input returns a NumPy scalar; softmax-family (class
  axis) functions raise ``ValueError`` on 0-d input.
* Under ``exact``, every such result (array, NumPy scalar or Python float) is a
  ``DDArray`` of the same shape (0-d for scalars); ``dtype=`` and ``out=`` are ignored.

Special values
--------------
* ``logsumexp``: all ``-inf`` slice -> ``-inf``; a ``+inf`` (and no nan) -> ``+inf``;
  empty class axis -> ``-inf``; nan -> nan.
* ``softmax``/``log_softmax``: a slice of all ``-inf``, or containing ``+inf`` or nan,
  is all nan (PyTorch gives exactly this).
* ``entropy``: uses ``0 * log 0 = 0`` for ``-inf`` logits; all ``-inf`` / ``+inf`` /
  nan slices give nan; an empty class axis gives ``0.0`` (empty sum, as
  ``scipy.stats.entropy([])``).
* ``predict``/``topk``: NaN counts as the largest value, ties go to the lowest index
  (``-0.0`` and ``+0.0`` tie).  PyTorch's ``topk`` does not promise the tie order.
* Losses: ``0 * log 0 = 0`` wherever a zero coefficient multiplies an infinite log
  probability (probability targets on ``-inf`` logits, zero weights, BCE at ``+-inf``);
  nan logits always give nan (and for cross-entropy, a ``+inf`` logit in a row gives a
  nan loss and gradient for that row); ignored rows give exactly 0 loss and gradient.
"""

import contextlib
import contextvars
import math
import numbers
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

__all__ = [
    "sigmoid", "log_sigmoid", "softmax", "log_softmax", "logsumexp", "entropy",
    "predict", "predict_binary", "topk",
    "cross_entropy", "cross_entropy_and_grad",
    "bce_with_logits", "bce_with_logits_and_grad",
    "sigmoid_focal_loss", "sigmoid_focal_loss_and_grad",
    "score", "fit_temperature",
    "sequence_scores", "calibration_curve",
    "exact", "backend", "use_backend", "DDArray",
]

_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------- the exact oracle

_EXACT = contextvars.ContextVar("fastlogits_reference_exact", default=False)
_FORCED_BACKEND: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar(
    "fastlogits_reference_backend", default=None)
_BACKENDS = ("extended", "portable")


def _have_extended() -> bool:
    """True where np.longdouble has a 64-bit significand (x87 extended precision)."""
    return int(np.finfo(np.longdouble).nmant) >= 63


def backend() -> str:
    """The exact backend in force: ``"extended"`` (long double) or ``"portable"``
    (double-double); see the module docstring for ``FASTLOGITS_ORACLE``."""
    forced = _FORCED_BACKEND.get()
    if forced is not None:
        return forced
    env = os.environ.get("FASTLOGITS_ORACLE", "").strip().lower()
    if env in ("", "auto"):
        return "extended" if _have_extended() else "portable"
    if env == "portable":
        return "portable"
    if env == "extended":
        if not _have_extended():
            raise RuntimeError("FASTLOGITS_ORACLE=extended: np.longdouble is not extended precision "
                               f"here (nmant={np.finfo(np.longdouble).nmant}); use 'portable' or 'auto'")
        return "extended"
    raise ValueError(f"FASTLOGITS_ORACLE: expected 'portable', 'extended' or 'auto', got {env!r}")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("portable"): ...`` computes ``exact`` results with that backend."""
    if name not in _BACKENDS:
        raise ValueError(f"name: expected one of {_BACKENDS}, got {name!r}")
    if name == "extended" and not _have_extended():
        raise RuntimeError("use_backend('extended'): np.longdouble is not extended precision here")
    token = _FORCED_BACKEND.set(name)
    try:
        yield
    finally:
        _FORCED_BACKEND.reset(token)


def exact(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``f(*args, **kwargs)`` (a function of sections 2-3 of this module) evaluated in exact
    arithmetic, its results unrounded: :class:`DDArray` values in place of arrays, NumPy
    scalars and Python floats (a tuple stays a tuple)."""
    token = _EXACT.set(True)
    try:
        return f(*args, **kwargs)
    finally:
        _EXACT.reset(token)


# --------------------------------------------------------------------------- helpers

def _as_logits(x: Any, name: str = "logits") -> Any:
    """Return (x as a NumPy array, the output dtype, the working kind): the float dtype of
    the plain evaluation, or under ``exact`` the backend's (long double or DDArray)."""
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind in "biu":
        x = x.astype(np.float64)
    elif kind == "f" or _is_ml_float(x.dtype):
        pass
    else:
        raise TypeError(f"{name}: expected a real floating, integer or bool array, "
                        f"got dtype {x.dtype}")
    out_dtype = x.dtype.newbyteorder("=") if x.dtype.kind == "f" else x.dtype  # native order
    return x, out_dtype, _work_kind(_float_work(x.dtype))


def _float_work(dt: Any) -> Any:
    """float64, or long double for long double inputs."""
    try:
        work = np.result_type(dt, np.float64)
    except TypeError:
        work = np.dtype(np.float64)
    return work if work.kind == "f" else np.dtype(np.float64)


def _work_kind(float_work: Any) -> Any:
    """The working kind: ``float_work`` normally, the exact backend's under ``exact``."""
    if not _EXACT.get():
        return float_work
    return np.dtype(np.longdouble) if backend() == "extended" else DDArray


def _is_ml_float(dt: Any) -> bool:
    """True for the ml_dtypes floating types (bfloat16, float8...)."""
    return bool(dt.kind == "V" and dt.itemsize <= 2 and dt.type.__module__.startswith("ml_dtypes"))


def _work(x: Any, kind: Any) -> Any:
    """Numbers (arrays, scalars) in the working kind, exactly."""
    if kind is DDArray:
        return DDArray.lift(x)
    return np.asarray(x, dtype=kind)


def _norm_axis(axis: Any, ndim: int) -> int:
    if not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis: expected an integer, got {axis!r}")
    if ndim == 0:
        raise ValueError("x: a class axis is needed, got a 0-d input")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis: expected a value in [{-ndim}, {ndim}), got {axis}")
    return ax % ndim


def _finish(res: Any, out_dtype: Any, dtype: Any = None, out: Any = None) -> Any:
    """Cast `res` to the output dtype, honour `out=`, and unwrap 0-d results; under
    ``exact``, the unrounded DDArray."""
    if _EXACT.get():
        return DDArray.lift(res)
    target = np.dtype(dtype) if dtype is not None else out_dtype
    with np.errstate(over="ignore", invalid="ignore"):
        res = np.asarray(res).astype(target)
    if out is not None:
        if out.shape != res.shape:
            raise ValueError(f"out: expected shape {res.shape}, got {out.shape}")
        out[...] = res
        return out
    if res.ndim == 0:
        return res[()]
    return res


def _finish_float(total: Any) -> Any:
    """A reduced loss: a Python float, or under ``exact`` the unrounded 0-d DDArray."""
    if _EXACT.get():
        return DDArray.lift(total)
    return float(total)


def _check_reduction(reduction: Any) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}")


def _write_grad(grad: Any, out_dtype: Any, grad_out: Any) -> Any:
    if _EXACT.get():
        return DDArray.lift(grad)
    with np.errstate(over="ignore", invalid="ignore"):
        g = grad.astype(out_dtype)
    if grad_out is None:
        return g
    if not isinstance(grad_out, np.ndarray) or grad_out.shape != g.shape or grad_out.dtype != g.dtype:
        raise ValueError(f"grad_out: expected an array of shape {g.shape} and dtype {g.dtype}, "
                         f"got {getattr(grad_out, 'shape', None)} {getattr(grad_out, 'dtype', type(grad_out))}")
    grad_out[...] = g
    return grad_out


# --------------------------------------------------------------------------- working arithmetic
#
# The formulas below are written once for every working kind: NumPy float arrays (float64 or
# long double) and DDArray.  Arithmetic operators work on both; these helpers do the rest.

def _is_dd(v: Any) -> bool:
    return isinstance(v, DDArray)


def _sign_of(v: Any) -> Any:
    """An array with the sign, zeros and nans of v (for comparisons with 0)."""
    return v.hi if _is_dd(v) else v


def _float_of(v: Any) -> Any:
    """v as floats, for maxima and nan/inf tests of (exactly representable) logits."""
    return v.approx() if _is_dd(v) else v


def _any_dd(*vs: Any) -> bool:
    return any(_is_dd(v) for v in vs)


def _exp(v: Any) -> Any:
    return v.exp() if _is_dd(v) else np.exp(v)


def _log(v: Any) -> Any:
    return v.log() if _is_dd(v) else np.log(v)


def _log1p(v: Any) -> Any:
    return v.log1p() if _is_dd(v) else np.log1p(v)


def _pow(v: Any, g: Any) -> Any:
    """v**g for v >= 0 (g in the working kind)."""
    return v ** g if _is_dd(v) else np.power(v, g)


def _where(cond: Any, a: Any, b: Any) -> Any:
    if _any_dd(a, b):
        return _dd_where(cond, DDArray.lift(a), DDArray.lift(b))
    return np.where(cond, a, b)


def _sum_last(v: Any, keepdims: bool = False) -> Any:
    return v.sum_last(keepdims) if _is_dd(v) else np.sum(v, axis=-1, keepdims=keepdims)


def _sum_all(v: Any) -> Any:
    return v.reshape(-1).sum_last() if _is_dd(v) else np.sum(v)


def _moveaxis(v: Any, source: int, destination: int) -> Any:
    return v.moveaxis(source, destination) if _is_dd(v) else np.moveaxis(v, source, destination)


def _take_last(v: Any, index: Any) -> Any:
    return v.take_along_last(index) if _is_dd(v) else np.take_along_axis(v, index, axis=-1)


def _broadcast_to(v: Any, shape: Tuple[int, ...]) -> Any:
    return v.broadcast_to(shape) if _is_dd(v) else np.broadcast_to(v, shape)


def _abs(v: Any) -> Any:
    return _where(_sign_of(v) < 0, -v, v)


def _min0(v: Any) -> Any:
    """min(v, 0)."""
    return _where(_sign_of(v) < 0, v, 0.0)


def _shifted_exp(v: Any, shift: Any) -> Any:
    """exp(v - shift).  In long double the difference of two doubles of distant exponents
    (a logit near 0 and a max of 700) is not exact; its rounding error, taken by TwoSum,
    corrects the exponential to first order (exp(d + err) = exp(d) * (1 + err))."""
    d = v - shift
    e = _exp(d)
    if _is_dd(d) or np.asarray(d).dtype != np.longdouble:
        return e
    bb = d - v
    err = (v - (d - bb)) + (-shift - bb)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(d) & np.isfinite(e), e + e * err, e)


def _times(coef: Any, val: Any) -> Any:
    """coef * val with the convention 0 * (+-inf) = 0 (and 0 * nan = 0: callers
    re-impose nan for nan logits)."""
    with np.errstate(invalid="ignore"):
        return _where(_sign_of(coef) == 0, 0.0, coef * val)


# --------------------------------------------------------------------------- exact arithmetic
#
# The portable exact backend: double-double numbers (about 106 significant bits) with an
# exponent of their own, so that neither the subnormal range nor overflow costs precision:
# value = (hi + lo) * 2**ex, with hi = 0 (then lo = ex = 0), hi non-finite (lo = ex = 0) or
# 0.5 <= |hi| < 1 and |lo| <= ulp(hi)/2.  Sums by TwoSum (Knuth), products by Dekker's
# splitting (no fma, so the same bits on every platform), quotients by two correction steps;
# exp by reduction to |r| <= ln2/2, a Taylor polynomial on r/256 and eight squarings;
# log1p by one Newton step on expm1 from a float64 start (the step doubles the 53 correct
# bits); log(m*2**k) = log1p(m - 1) + k*ln2.  References: T. J. Dekker, "A floating-point
# technique for extending the available precision" (1971); D. E. Knuth, TAOCP vol. 2, 4.2.2;
# Y. Hida, X. S. Li, D. H. Bailey, "Library for double-double and quad-double arithmetic"
# (2007).

_SPLITTER = 134217729.0                        # 2**27 + 1
# ln 2 to 159 bits as three doubles (the digits of ln 2 = 0.6931471805599453094172321214581765680755...)
_LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)
_EXP_SQUARINGS = 8                             # exp(r) = exp(r / 256)**256
_EXP_TERMS = 11                                # Taylor terms of expm1 on |r| <= ln2/512
_LDEXP_LIMIT = 2200                            # beyond, ldexp of a mantissa is 0 or inf anyway
_EXP_ARG_LIMIT_EX = 40                         # |t| >= 2**39: exp(t) is 0 or inf here


def _ldexp(x: Any, k: Any) -> Any:
    """x * 2**k for int64 k of any size (clipped where the result is 0 or inf anyway); int32
    exponents because that is the only ldexp loop every platform has."""
    return np.ldexp(x, np.minimum(np.maximum(k, -_LDEXP_LIMIT), _LDEXP_LIMIT).astype(np.int32))


def _two_sum(a: Any, b: Any) -> Tuple[Any, Any]:
    """s + e = a + b exactly, s = fl(a + b)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Any, b: Any) -> Tuple[Any, Any]:
    """s + e = a + b exactly when |a| >= |b| (or a = 0)."""
    s = a + b
    return s, b - (s - a)


def _split(a: Any) -> Tuple[Any, Any]:
    """a = hi + lo with hi, lo of 26 significant bits each (|a| < 2**996)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a: Any, b: Any) -> Tuple[Any, Any]:
    """p + e = a * b exactly (Dekker), p = fl(a * b); no overflow or underflow assumed."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_add(ah: Any, al: Any, bh: Any, bl: Any) -> Tuple[Any, Any]:
    s, e = _two_sum(ah, bh)
    t, f = _two_sum(al, bl)
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def _dd_mul(ah: Any, al: Any, bh: Any, bl: Any) -> Tuple[Any, Any]:
    p, e = _two_prod(ah, bh)
    return _fast_two_sum(p, e + (ah * bl + al * bh))


def _dd_div(ah: Any, al: Any, bh: Any, bl: Any) -> Tuple[Any, Any]:
    """(ah + al) / (bh + bl): a float64 quotient and two correction steps."""
    q1 = ah / bh
    ph, pl = _dd_mul(bh, bl, q1, 0.0)
    rh, rl = _dd_add(ah, al, -ph, -pl)
    q2 = rh / bh
    ph, pl = _dd_mul(bh, bl, q2, 0.0)
    rh, rl = _dd_add(rh, rl, -ph, -pl)
    q3 = rh / bh
    q1, q2 = _fast_two_sum(q1, q2)
    return _dd_add(q1, q2, q3, 0.0)


def _dd_times_int(k: Any, c: Tuple[float, float, float]) -> Tuple[Any, Any]:
    """k * (c0 + c1 + c2) in double-double for integral float64 k (|k| < 2**50) and a constant
    given to 159 bits: each of k*c0, k*c1 is formed exactly."""
    p0, e0 = _two_prod(k, c[0])
    p1, e1 = _two_prod(k, c[1])
    h, l = _dd_add(p0, e0, p1, e1)
    return _dd_add(h, l, k * c[2], 0.0)


def _inverse_factorials(n: int) -> List[Tuple[Any, Any]]:
    """1/k! for k = 0..n in double-double (k! is exact in float64 for k <= 22)."""
    one = np.ones(1)
    return [_dd_div(one, 0.0 * one, np.array([float(math.factorial(k))]), 0.0 * one)
            for k in range(n + 1)]


_INV_FACT = [(float(h[0]), float(l[0])) for h, l in _inverse_factorials(_EXP_TERMS)]


def _dd_expm1_reduced(th: Any, tl: Any) -> Tuple[Any, Any, Any]:
    """For a finite double-double t with |t| < 2**39: (e_hi, e_lo, k) with
    exp(t) = (1 + e) * 2**k, |e| <= 0.42, e accurate to about 2**-104 relative (so that
    e itself is expm1(t) with full relative accuracy when k = 0)."""
    k = np.rint(th / _LN2[0])
    # r = t - k*ln2 term by term: t - fl(k*c0) is exact (Sterbenz), the rest are small
    p0, e0 = _two_prod(k, _LN2[0])
    p1, e1 = _two_prod(k, _LN2[1])
    rh, rl = _dd_add(th - p0, tl, -e0, 0.0)
    rh, rl = _dd_add(rh, rl, -p1, -e1)
    rh, rl = _dd_add(rh, rl, -k * _LN2[2], 0.0)       # |r| <= ln2/2 (+ a rounding)
    scale = 2.0 ** -_EXP_SQUARINGS
    rh, rl = rh * scale, rl * scale
    ph, pl = _INV_FACT[_EXP_TERMS]
    ph, pl = np.full_like(rh, ph), np.full_like(rh, pl)
    for j in range(_EXP_TERMS - 1, 0, -1):          # Horner: 1/1! + r/2! + r^2/3! + ...
        ph, pl = _dd_mul(ph, pl, rh, rl)
        ph, pl = _dd_add(ph, pl, _INV_FACT[j][0], _INV_FACT[j][1])
    eh, el = _dd_mul(ph, pl, rh, rl)                 # expm1(r / 256)
    for _ in range(_EXP_SQUARINGS):                  # expm1(2u) = 2 expm1(u) + expm1(u)^2
        sh, sl = _dd_mul(eh, el, eh, el)
        eh, el = _dd_add(2 * eh, 2 * el, sh, sl)
    return eh, el, k.astype(np.int64)


class DDArray:
    """An array of real numbers held to about 106 bits, the exact oracle's working type on
    platforms without an extended long double (and everywhere under FASTLOGITS_ORACLE=portable).

    ``value = (hi + lo) * 2**ex`` elementwise (``hi``, ``lo`` float64, ``ex`` int64 arrays of
    one shape).  Supports ``+ - * /``, unary minus, ``**`` (of x >= 0), comparisons, indexing
    and the helpers of this module (``exp``, ``log``, ``log1p``, sums along the last axis).
    ``astype(dtype)`` rounds once to a NumPy float dtype; ``hi``/``lo``/``ex`` give the
    unrounded value (``tests/arrays.py`` measures ULP errors from them).
    """

    __slots__ = ("hi", "lo", "ex")
    __array_ufunc__ = None                        # ndarray op DDArray -> DDArray's reflected op

    def __init__(self, hi: Any, lo: Any, ex: Any) -> None:
        self.hi, self.lo, self.ex = hi, lo, ex

    # ------------------------------------------------------------------ construction
    @classmethod
    def _normal(cls, hi: Any, lo: Any, ex: Any) -> "DDArray":
        """Normalise a double-double (|lo| <= ulp(hi)/2) so that hi is in [0.5, 1) (its
        binary exponent moves into ex)."""
        with np.errstate(invalid="ignore", over="ignore"):
            ordinary = np.isfinite(hi) & (hi != 0)
            m, k = np.frexp(np.where(ordinary, hi, 0.5))
            hi = np.where(ordinary, m, hi)
            lo = np.where(ordinary, _ldexp(lo, -k.astype(np.int64)), 0.0)
            ex = np.where(ordinary, np.asarray(ex, dtype=np.int64) + k, 0)
        return cls(hi, lo, ex)

    @classmethod
    def from_float(cls, a: Any) -> "DDArray":
        """Exact conversion of a float array (any NumPy float dtype, long double included)."""
        a = np.asarray(a)
        if a.dtype.kind != "f" or a.dtype.itemsize <= 8:
            a = np.asarray(a, dtype=np.float64)
            return cls._normal(a, np.zeros(a.shape), np.zeros(a.shape, dtype=np.int64))
        with np.errstate(invalid="ignore"):
            ordinary = np.isfinite(a) & (a != 0)
            m, k = np.frexp(np.where(ordinary, a, 0.5))
            hi = np.where(ordinary, m, a).astype(np.float64)
            lo = np.where(ordinary, m - hi, 0).astype(np.float64)
        return cls._normal(hi, lo, np.where(ordinary, k, 0).astype(np.int64))

    @staticmethod
    def lift(a: Any) -> "DDArray":
        return a if isinstance(a, DDArray) else DDArray.from_float(a)

    # ------------------------------------------------------------------ array protocol
    @property
    def shape(self) -> Tuple[int, ...]:
        return np.shape(self.hi)

    @property
    def ndim(self) -> int:
        return np.ndim(self.hi)

    @property
    def size(self) -> int:
        return int(np.size(self.hi))

    def _map(self, f: Any) -> "DDArray":
        return DDArray(f(self.hi), f(self.lo), f(self.ex))

    def __getitem__(self, index: Any) -> "DDArray":
        return self._map(lambda a: np.asarray(a)[index])

    def reshape(self, *shape: Any) -> "DDArray":
        return self._map(lambda a: np.reshape(a, *shape) if len(shape) == 1 else np.reshape(a, shape))

    def moveaxis(self, source: int, destination: int) -> "DDArray":
        return self._map(lambda a: np.moveaxis(a, source, destination))

    def broadcast_to(self, shape: Tuple[int, ...]) -> "DDArray":
        return self._map(lambda a: np.broadcast_to(a, shape))

    def take_along_last(self, index: Any) -> "DDArray":
        return self._map(lambda a: np.take_along_axis(a, index, axis=-1))

    def put(self, index: Any, values: "DDArray") -> "DDArray":
        """A copy with ``self[index] = values``."""
        parts = [np.array(a, copy=True) for a in (self.hi, self.lo, self.ex)]
        for a, b in zip(parts, (values.hi, values.lo, values.ex)):
            a[index] = b
        return DDArray(*parts)

    def approx(self) -> Any:
        """The value rounded to float64 (0 and +-inf beyond its range): exact for lifted
        float64 inputs, enough for signs, comparisons, maxima and nan tests."""
        with np.errstate(over="ignore"):
            return _ldexp(self.hi, self.ex)

    def __repr__(self) -> str:
        return f"DDArray({self.astype(np.float64)!r})"

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: Any) -> "DDArray":
        o = DDArray.lift(other)
        with np.errstate(invalid="ignore", over="ignore"):
            ex = np.where(self.hi == 0, o.ex, np.where(o.hi == 0, self.ex, np.maximum(self.ex, o.ex)))
            ah, al = _ldexp(self.hi, self.ex - ex), _ldexp(self.lo, self.ex - ex)
            bh, bl = _ldexp(o.hi, o.ex - ex), _ldexp(o.lo, o.ex - ex)
            h, l = _dd_add(ah, al, bh, bl)
            special = ~(np.isfinite(self.hi) & np.isfinite(o.hi))
            return DDArray._normal(np.where(special, self.hi + o.hi, h), np.where(special, 0.0, l), ex)

    __radd__ = __add__

    def __neg__(self) -> "DDArray":
        return DDArray(-self.hi, -self.lo, self.ex)

    def __sub__(self, other: Any) -> "DDArray":
        return self + (-DDArray.lift(other))

    def __rsub__(self, other: Any) -> "DDArray":
        return DDArray.lift(other) + (-self)

    def __mul__(self, other: Any) -> "DDArray":
        o = DDArray.lift(other)
        with np.errstate(invalid="ignore", over="ignore"):
            h, l = _dd_mul(self.hi, self.lo, o.hi, o.lo)
            special = ~(np.isfinite(self.hi) & np.isfinite(o.hi))
            return DDArray._normal(np.where(special, self.hi * o.hi, h), np.where(special, 0.0, l),
                                   self.ex + o.ex)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> "DDArray":
        o = DDArray.lift(other)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            special = ~(np.isfinite(self.hi) & np.isfinite(o.hi)) | (o.hi == 0)
            h, l = _dd_div(self.hi, self.lo, np.where(special, 1.0, o.hi), np.where(special, 0.0, o.lo))
            return DDArray._normal(np.where(special, self.hi / o.hi, h), np.where(special, 0.0, l),
                                   self.ex - o.ex)

    def __rtruediv__(self, other: Any) -> "DDArray":
        return DDArray.lift(other) / self

    def __pow__(self, g: Any) -> "DDArray":
        """x**g for x >= 0 as exp(g*log x), and x**0 = 1 (as NumPy)."""
        gd = DDArray.lift(g)
        r = (self.log() * gd).exp()
        return _dd_where(gd.hi == 0, DDArray.lift(np.ones(r.shape)), r)

    # ------------------------------------------------------------------ comparisons
    def _sign(self, other: Any) -> Any:
        return (self - other).hi

    def __lt__(self, other: Any) -> Any:
        return self._sign(other) < 0

    def __le__(self, other: Any) -> Any:
        return self._sign(other) <= 0

    def __gt__(self, other: Any) -> Any:
        return self._sign(other) > 0

    def __ge__(self, other: Any) -> Any:
        return self._sign(other) >= 0

    def __eq__(self, other: Any) -> Any:
        return self._sign(other) == 0

    def __ne__(self, other: Any) -> Any:
        return ~(self == other)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ functions
    def exp(self) -> "DDArray":
        hi, ex = self.hi, self.ex
        with np.errstate(invalid="ignore", over="ignore"):
            huge = np.isfinite(hi) & (hi != 0) & (ex > _EXP_ARG_LIMIT_EX)
            ordinary = np.isfinite(hi) & ~huge
            th = np.where(ordinary, _ldexp(hi, ex), 0.0)
            tl = np.where(ordinary, _ldexp(self.lo, ex), 0.0)
            eh, el, k = _dd_expm1_reduced(th, tl)
            h, l = _dd_add(eh, el, 1.0, 0.0)
            limit = np.where(hi > 0, np.inf, 0.0)          # exp(+-inf), exp(+-huge)
            h = np.where(ordinary, h, np.where(np.isnan(hi), np.nan, limit))
            return DDArray._normal(h, np.where(ordinary, l, 0.0), np.where(ordinary, k, 0))

    def _log1p_small(self) -> "DDArray":
        """log1p(r) for |r| < 0.5: r itself below 2**-110, else a Newton step on expm1."""
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            tiny = self.ex < -110
            rh = np.where(tiny, 0.0, _ldexp(self.hi, self.ex))
            rl = np.where(tiny, 0.0, _ldexp(self.lo, self.ex))
            y0 = np.log1p(rh + rl)
            eh, el, k = _dd_expm1_reduced(y0, np.zeros_like(y0))
            # expm1(y0) = (1 + e) * 2**k - 1, kept relative near 0 (k = 0 there)
            sh, sl = _dd_add(eh, el, 1.0, 0.0)
            sh, sl = _ldexp(sh, k), _ldexp(sl, k)
            mh, ml = _dd_add(sh, sl, -1.0, 0.0)
            mh, ml = np.where(k == 0, eh, mh), np.where(k == 0, el, ml)
            # y1 = y0 - (expm1(y0) - r) / (1 + expm1(y0))
            dh, dl = _dd_add(mh, ml, -rh, -rl)
            dh, dl = _dd_div(dh, dl, sh, sl)
            h, l = _dd_add(y0, 0.0, -dh, -dl)
            out = DDArray._normal(h, l, np.zeros(np.shape(h), dtype=np.int64))
        return _dd_where(tiny, self, out)

    def log(self) -> "DDArray":
        """log(x): log1p(m - 1) + k*ln2 for x = m * 2**k, m in [sqrt(1/2), sqrt(2))."""
        hi, lo, ex = self.hi, self.lo, self.ex
        with np.errstate(invalid="ignore", divide="ignore"):
            ordinary = np.isfinite(hi) & (hi > 0)
            low = ordinary & (hi < math.sqrt(0.5))
            mh = np.where(ordinary, np.where(low, 2 * hi, hi), 1.0)
            ml = np.where(ordinary, np.where(low, 2 * lo, lo), 0.0)
            k = np.where(ordinary, ex - low, 0).astype(np.float64)
            fh, fl = _fast_two_sum(mh - 1.0, ml)             # mh - 1 is exact
            f = DDArray._normal(fh, fl, np.zeros(np.shape(fh), dtype=np.int64))
            lg = f._log1p_small()
            kh, kl = _dd_times_int(k, _LN2)
            res = lg + DDArray._normal(kh, kl, np.zeros(np.shape(kh), dtype=np.int64))
            special = np.where(hi == 0, -np.inf, np.where(hi == np.inf, np.inf, np.nan))
        return _dd_where(ordinary, res, DDArray.from_float(special))

    def log1p(self) -> "DDArray":
        small = self.ex <= -1                                  # |x| < 0.5
        if np.all(small):
            return self._log1p_small()
        if not np.any(small):
            return (self + 1.0).log()
        r_small = _dd_where(small, self, DDArray.from_float(np.zeros(self.shape)))
        r_big = _dd_where(small, DDArray.from_float(np.ones(self.shape)), self + 1.0)
        return _dd_where(small, r_small._log1p_small(), r_big.log())

    def sum_last(self, keepdims: bool = False) -> "DDArray":
        """Sum along the last axis, pairwise (error about log2(n) * 2**-106 of the sum of the
        magnitudes)."""
        x = self
        n = x.shape[-1]
        if n == 0:
            z = np.zeros(x.shape[:-1] + (1,))
            x = DDArray(z, z.copy(), z.astype(np.int64))
        while x.shape[-1] > 1:
            if x.shape[-1] % 2:
                pad = np.zeros(x.shape[:-1] + (1,))
                x = DDArray(np.concatenate([x.hi, pad], -1), np.concatenate([x.lo, pad], -1),
                            np.concatenate([x.ex, pad.astype(np.int64)], -1))
            x = x[..., 0::2] + x[..., 1::2]
        return x if keepdims else x[..., 0]

    # ------------------------------------------------------------------ rounding
    def astype(self, dtype: Any) -> Any:
        """The value rounded once to ``dtype`` (float64 and narrower: round to nearest even,
        subnormals included; narrower ones go through a round-to-odd float64, which makes the
        second rounding exact)."""
        dtype = np.dtype(dtype)
        if dtype.kind == "f" and dtype.itemsize > 8:
            return np.ldexp(self.hi.astype(dtype) + self.lo.astype(dtype), self.ex.astype(np.int32))
        if dtype == np.float64:
            return self._round_f64()
        with np.errstate(over="ignore", invalid="ignore"):
            return self._round_odd_f64().astype(dtype)

    def _round_f64(self) -> Any:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            r = _ldexp(self.hi, self.ex)
            # in the subnormal range ldexp rounded hi alone: redo it with lo (ties to even)
            sub = np.isfinite(r) & (np.abs(r) < 2.0 ** -1022) & (self.hi != 0)
            back = _ldexp(r, -self.ex)
            rest = (self.hi - back) + self.lo
            half = _ldexp(np.ones(np.shape(r)), -1075 - self.ex)
            units = np.where(sub, r / 2.0 ** -1074, 0.0)
            odd = np.fmod(np.abs(units), 2) == 1
            step = (np.abs(rest) > half) | ((np.abs(rest) == half) & odd)
            r = np.where(sub & step, r + np.sign(rest) * 2.0 ** -1074, r)
        return r

    def _round_odd_f64(self) -> Any:
        with np.errstate(over="ignore", invalid="ignore"):
            r = _ldexp(self.hi, self.ex)
            bits = np.asarray(r, dtype=np.float64).view(np.int64)
            inexact = (self.lo != 0) & np.isfinite(r) & (r != 0)
            even = (bits & 1) == 0
            toward = np.where(self.lo > 0, np.inf, -np.inf)
            return np.where(inexact & even, np.nextafter(r, toward), r)


def _dd_where(cond: Any, a: DDArray, b: DDArray) -> DDArray:
    return DDArray(np.where(cond, a.hi, b.hi), np.where(cond, a.lo, b.lo), np.where(cond, a.ex, b.ex))


# --------------------------------------------------------------------------- section 2

def _sigmoid_w(v: Any) -> Any:
    """``1 / (1 + t)`` for v >= 0, ``t / (1 + t)`` below, with ``t = exp(-|v|)`` in (0, 1]."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = _exp(-_abs(v))
        return _where(_sign_of(v) >= 0, 1.0 / (1.0 + t), t / (1.0 + t))


def _log_sigmoid_w(v: Any) -> Any:
    """log(sigmoid(v)) = min(v, 0) - log1p(exp(-|v|))."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _min0(v) - _log1p(_exp(-_abs(v)))


def sigmoid(x: Any, *, dtype: Any = None, out: Any = None) -> Any:
    """``1 / (1 + exp(-x))`` elementwise, evaluated as ``exp(x) / (1 + exp(x))`` for
    negative x so that nothing overflows.  sigmoid(+-inf) = 1 / 0; nan -> nan."""
    x, od, wk = _as_logits(x, "x")
    return _finish(_sigmoid_w(_work(x, wk)), od, dtype, out)


def log_sigmoid(x: Any, *, dtype: Any = None, out: Any = None) -> Any:
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``: -inf at -inf, 0 at +inf."""
    x, od, wk = _as_logits(x, "x")
    return _finish(_log_sigmoid_w(_work(x, wk)), od, dtype, out)


def _row_max(v: Any) -> Any:
    """The maximum over the last axis (keepdims) as floats; nan if the row holds one,
    -inf for an empty row."""
    return np.max(_float_of(v), axis=-1, keepdims=True, initial=-np.inf)


def _lse_parts(v: Any) -> Tuple[Any, Any, Any]:
    """Pieces of logsumexp over the last axis (keepdims) of a working array:
    ``(shift, d, log_s)`` with ``d = v - shift``, ``log_s = log(sum(exp(d)))`` and
    ``lse = shift + log_s``.  ``shift`` is the row maximum when it is finite and 0
    otherwise, so an all -inf slice gives log(0) = -inf and a +inf slice gives +inf;
    nan propagates.  An empty slice gives lse = -inf."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if v.shape[-1] == 0:
            shift = np.zeros(v.shape[:-1] + (1,))
            d = v - shift
            return shift, d, _log(_sum_last(_exp(d), keepdims=True))
        m = _row_max(v)
        shift = np.where(np.isfinite(m), m, 0)
        d = v - shift
        e = _shifted_exp(v, shift)
        # s = 1 + (sum of the others) when the maximum is finite: log1p keeps the
        # accuracy of log s for rows dominated by one class (s close to 1)
        rest = _sum_last(_where(_is_first_max(v), 0.0, e), keepdims=True)
        log_s = _log1p(rest)
        if not np.all(np.isfinite(m)):
            log_s = _where(np.isfinite(m), log_s, _log(_sum_last(e, keepdims=True)))
    return shift, d, log_s


def _is_first_max(v: Any) -> Any:
    """Boolean mask of the first maximum of each row (nan ignored)."""
    f = _float_of(v)
    first = np.argmax(np.where(np.isnan(f), -np.inf, f), axis=-1)[..., None]
    return np.arange(v.shape[-1]) == first


def _lse_last(v: Any, parts: Optional[Tuple[Any, Any, Any]] = None) -> Any:
    """logsumexp over the last axis (keepdims): ``m + log(sum(exp(x - m)))`` (``parts``:
    those of ``_lse_parts(v)`` if already at hand).

    Where m and log s cancel, the result inherits the absolute error of log s: 2**-64
    relative in long double, so the exact oracle's long-double backend hands the rows that
    cancel by more than a factor 16 (its error would exceed 0.01 ULP) to double-double."""
    shift, _, log_s = _lse_parts(v) if parts is None else parts
    lse = shift + log_s
    if not (_EXACT.get() and isinstance(lse, np.ndarray) and lse.dtype == np.longdouble):
        return lse
    with np.errstate(invalid="ignore"):
        cancel = (np.isfinite(lse) & (np.abs(shift) + np.abs(log_s) > 16 * np.abs(lse)))[..., 0]
    if not np.any(cancel):
        return lse
    return DDArray.lift(lse).put(cancel, _lse_last(DDArray.lift(v[cancel])))


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """``log(sum(exp(x)))`` along ``axis``, computed as ``m + log(sum(exp(x - m)))``."""
    x, od, wk = _as_logits(x, "x")
    ax = _norm_axis(axis, x.ndim)
    v = _moveaxis(_work(x, wk), ax, -1)
    r = _lse_last(v)
    r = _moveaxis(r, -1, ax) if keepdims else r[..., 0]
    return _finish(r, od)


def _log_softmax_last(v: Any) -> Any:
    """``(x - m) - log(sum(exp(x - m)))`` (= x - lse without absorbing log s into a huge
    m), with slices that hold +inf / nan / only -inf all nan (PyTorch)."""
    _, d, log_s = _lse_parts(v)
    with np.errstate(invalid="ignore"):
        return _where(~np.isfinite(_row_max(v)), np.nan, d - log_s)


def log_softmax(x: Any, axis: int = -1, *, dtype: Any = None, out: Any = None) -> Any:
    """``x - logsumexp(x)`` along ``axis``.  A slice that is all -inf, or holds +inf
    or nan, is all nan (as in PyTorch)."""
    x, od, wk = _as_logits(x, "x")
    ax = _norm_axis(axis, x.ndim)
    v = _moveaxis(_work(x, wk), ax, -1)
    return _finish(_moveaxis(_log_softmax_last(v), -1, ax), od, dtype, out)


def _softmax_last(v: Any) -> Any:
    """``exp(x_i - m) / sum_j exp(x_j - m)``; a slice that holds +inf / nan / only -inf is
    all nan (PyTorch).  (Dividing by the sum rather than taking exp(x - lse) keeps the
    relative accuracy of the exponentials for tiny probabilities.)"""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = _row_max(v)
        e = _shifted_exp(v, np.where(np.isfinite(m), m, 0))
        return _where(~np.isfinite(m), np.nan, e / _sum_last(e, keepdims=True))


def softmax(x: Any, axis: int = -1, *, dtype: Any = None, out: Any = None) -> Any:
    """``exp(x - logsumexp(x))`` along ``axis`` (same special values as log_softmax)."""
    x, od, wk = _as_logits(x, "x")
    ax = _norm_axis(axis, x.ndim)
    v = _moveaxis(_work(x, wk), ax, -1)
    return _finish(_moveaxis(_softmax_last(v), -1, ax), od, dtype, out)


def _entropy_last(v: Any) -> Any:
    """H = log s - sum_i e_i (x_i - m) / s with e_i = exp(x_i - m), s = sum e_i,
    and e_i (x_i - m) = 0 when e_i = 0 (-inf logits).  Empty slice -> 0."""
    if v.shape[-1] == 0:
        zero = np.zeros(v.shape[:-1])
        return DDArray.lift(zero) if _is_dd(v) else zero.astype(v.dtype)
    shift, d, log_s = _lse_parts(v)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = _shifted_exp(v, shift)
        h = log_s[..., 0] - _sum_last(_times(e, d)) / _sum_last(e)
        return _where(~np.isfinite(_row_max(v)[..., 0]), np.nan, h)   # all -inf, +inf, or nan


def entropy(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """Shannon entropy in nats of ``softmax(x)`` along ``axis``:
    ``H = log s - sum_i e_i*(x_i - m)/s`` (max-shifted, so rows of ties do not cancel)."""
    x, od, wk = _as_logits(x, "x")
    ax = _norm_axis(axis, x.ndim)
    v = _moveaxis(_work(x, wk), ax, -1)
    r = _entropy_last(v)
    if keepdims:
        r = r[(slice(None),) * ax + (None,)]
    return _finish(r, od)


def _order_desc(row: Any) -> np.ndarray:
    """Indices sorting a 1-D row descending; NaN first, ties to the lower index."""
    # np.lexsort is stable and sorts by the last key first.
    return np.lexsort((-np.where(np.isnan(row), 0, row), ~np.isnan(row)))


def predict(x: Any, axis: int = -1) -> Any:
    """int64 argmax along ``axis``; ties -> lowest index; NaN counts as the largest."""
    x, od, _ = _as_logits(x, "x")
    wd = _float_work(x.dtype)
    ax = _norm_axis(axis, x.ndim)
    v = np.moveaxis(_work(x, wd), ax, -1)
    if v.shape[-1] == 0:
        raise ValueError("x: cannot predict over an empty class axis")
    rows = v.reshape(-1, v.shape[-1])
    res = np.array([_order_desc(r)[0] for r in rows], dtype=np.int64).reshape(v.shape[:-1])
    return res[()] if res.ndim == 0 else res


def predict_binary(x: Any, threshold: float = 0.5) -> Any:
    """``sigmoid(x) > threshold`` decided as ``x > log(t / (1 - t))`` (float64 threshold
    logit); NaN -> False.  ``threshold`` must lie in the open interval (0, 1)."""
    x, od, _ = _as_logits(x, "x")
    wd = _float_work(x.dtype)
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"threshold: expected a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold: expected a value in (0, 1), got {threshold!r}")
    tl = np.float64(np.log(np.float64(t) / (np.float64(1.0) - np.float64(t))))
    with np.errstate(invalid="ignore"):
        res = _work(x, wd) > tl
    return res[()] if res.ndim == 0 else res


def topk(x: Any, k: int, axis: int = -1) -> Tuple[np.ndarray, np.ndarray]:
    """``(values, indices)`` of the k largest along ``axis``, sorted descending, ties to
    the lower index, NaN largest; ``1 <= k <= C``.  Values keep the input dtype."""
    x, od, _ = _as_logits(x, "x")
    wd = _float_work(x.dtype)
    ax = _norm_axis(axis, x.ndim)
    C = x.shape[ax]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k: expected an integer, got {k!r}")
    if not 1 <= k <= C:
        raise ValueError(f"k: expected 1 <= k <= {C} (the class axis length), got {k}")
    v = np.moveaxis(x, ax, -1)
    rows = v.reshape(-1, C)
    idx = np.empty((rows.shape[0], k), dtype=np.int64)
    for i, r in enumerate(rows):
        idx[i] = _order_desc(_work(r, wd))[:k]
    vals = np.take_along_axis(rows, idx, axis=1)
    shape = v.shape[:-1] + (k,)
    vals = np.ascontiguousarray(np.moveaxis(vals.reshape(shape), -1, ax)).astype(od)
    idx = np.ascontiguousarray(np.moveaxis(idx.reshape(shape), -1, ax))
    return vals, idx




# --------------------------------------------------------------------------- section 3

def _floats(a: Any) -> np.ndarray:
    """Numbers (arrays of any real dtype, Python numbers) as exactly converted floats."""
    a = np.asarray(a)
    return np.asarray(a, dtype=_float_work(a.dtype))


def _reduce(loss: Any, reduction: Any) -> Any:
    """Apply the reduction to a working loss array (the total or mean is still unrounded)."""
    if reduction == "none":
        return loss
    total = _sum_all(loss)
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / loss.size


def _finish_loss(loss: Any, od: Any, reduction: str) -> Any:
    """The loss as returned: an array of the logits' dtype for "none", else a float."""
    return _finish(loss, od) if reduction == "none" else _finish_float(loss)


def _ce_core(logits: Any, target: Any, axis: Any, weight: Any, sample_weight: Any,
             ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any,
             want_grad: bool) -> Any:
    """Cross-entropy loss (working precision) and optionally its gradient.

    Index targets, p = softmax(x), W = sum_c w_c, eps = label_smoothing:
        l_i = s_i*(-(1-eps)*w_y*logp_iy - (eps/C)*sum_c w_c*logp_ic) + z*s_i*lse_i**2
        dl_i/dx_ic = s_i*((1-eps)*w_y*(p_c - [c==y]) + (eps/C)*(W*p_c - w_c)
                          + 2*z*lse_i*p_c)
    with p_y - 1 = -(sum_{c != y} e_c)/s, so that it does not cancel.
    Probability targets, t' = (1-eps)*t + eps/C, T_i = sum_c w_c*t'_ic:
        l_i = -s_i*sum_c w_c*t'_ic*logp_ic + z*s_i*lse_i**2
        dl_i/dx_ic = s_i*(T_i*p_c - w_c*t'_ic + 2*z*lse_i*p_c)
    "mean" divides the cross-entropy part by D1 and the z part by D2 (see
    cross_entropy); the gradient is scaled the same way.
    """
    _check_reduction(reduction)
    x, od, wk = _as_logits(logits, "logits")
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
    z = float(z_loss)
    if not z >= 0:
        raise ValueError(f"z_loss: expected a value >= 0, got {z_loss!r}")
    ax = _norm_axis(axis, x.ndim)
    v = _moveaxis(_work(x, wk), ax, -1)          # (..., C)
    C = v.shape[-1]
    row_shape = v.shape[:-1]
    t = np.asarray(target)
    if t.dtype.kind == "b":
        raise TypeError("target: bool targets are not allowed for cross_entropy; "
                        "use integer class indices or floating probabilities")
    if t.dtype.kind in "iu":
        mode = "index"
        if t.shape != row_shape:
            raise ValueError(f"target: class-index target must have shape {row_shape} "
                             f"(logits shape {x.shape} without axis {ax}), got {t.shape}")
    elif t.dtype.kind == "f" or _is_ml_float(t.dtype):
        mode = "prob"
        if t.shape != x.shape:
            raise ValueError(f"target: probability target must have the logits' shape "
                             f"{x.shape}, got {t.shape}")
    else:
        raise TypeError(f"target: expected an integer or floating array, got dtype {t.dtype}")
    w_raw = np.ones(C) if weight is None else _floats(weight)
    if w_raw.shape != (C,):
        raise ValueError(f"weight: expected shape ({C},), got {w_raw.shape}")
    s_raw = np.ones(row_shape) if sample_weight is None else _floats(sample_weight)
    if s_raw.shape != row_shape:
        raise ValueError(f"sample_weight: expected shape {row_shape} (the target's row "
                         f"shape), got {s_raw.shape}")
    w, s = _work(w_raw, wk), _work(s_raw, wk)
    one, eps_w = _work(1.0, wk), _work(eps, wk)
    keep = one - eps_w                                  # 1 - eps, exactly
    smooth = eps_w / C if C > 0 else eps_w              # eps / C, exactly

    shift, d, log_s = _lse_parts(v)
    m = _row_max(v)
    lse = _lse_last(v, (shift, d, log_s))               # (..., 1)
    with np.errstate(invalid="ignore"):
        logp = d - log_s                                # (x - m) - log s
    vf = _float_of(v)
    row_bad = np.any(np.isnan(vf) | (vf == np.inf), axis=-1)     # nan or +inf in row
    zero_rows = _work(np.zeros(row_shape), wk)
    zterm = zero_rows if z == 0 else _work(z, wk) * lse[..., 0] * lse[..., 0]

    if mode == "index":
        y = t.astype(np.int64)
        valid = y != ignore_index
        oob = valid & ((y < 0) | (y >= C))
        if np.any(oob):
            pos = tuple(int(i) for i in np.argwhere(oob)[0])
            raise IndexError(f"target: class index {int(y[pos])} at position {pos} is "
                             f"out of range [0, {C}) and is not ignore_index={ignore_index}")
        yc = np.where(valid, y, 0)
        wy = w[yc] if C > 0 else zero_rows
        logp_y = _take_last(logp, yc[..., None])[..., 0] if C > 0 else zero_rows
        ce = zero_rows
        if eps < 1:
            ce = ce - _times(keep * wy, logp_y)
        if eps > 0 and C > 0:
            ce = ce - smooth * _sum_last(_times(w, logp))
        with np.errstate(invalid="ignore"):
            ce_i = _where(valid, s * ce, 0.0)
            z_i = _where(valid, s * zterm, 0.0)
            ce_i = _where(valid & row_bad, np.nan, ce_i)
        D1 = _sum_all(_where(valid, s * wy, 0.0))
        D2 = _sum_all(_where(valid, s, 0.0))
    else:
        tv = _moveaxis(_work(_floats(t), wk), ax, -1)
        tp = keep * tv + smooth if (eps > 0 and C > 0) else tv
        wt = w * tp                                         # w_c * t'_ic
        ce = -_sum_last(_times(wt, logp))
        valid = np.ones(row_shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            ce_i = _where(row_bad, np.nan, s * ce)
        z_i = s * zterm
        D1 = D2 = _sum_all(s) if C > 0 else _work(np.nan, wk)   # PyTorch: numel / C = 0 / 0

    with np.errstate(invalid="ignore", divide="ignore"):
        loss: Any
        if reduction == "none":
            loss = ce_i + z_i
            c1 = c2 = one
        elif reduction == "sum":
            loss = _sum_all(ce_i) + _sum_all(z_i)
            c1 = c2 = one
        else:
            if not np.any(valid):
                loss = _work(np.nan, wk)
            else:
                loss = _sum_all(ce_i) / D1
                if z != 0:
                    loss = loss + _sum_all(z_i) / D2
            c1 = one / D1
            c2 = one / D2
    if not want_grad:
        return loss, None, od, ax

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = _shifted_exp(v, shift)
        total = _sum_last(e, keepdims=True)
        finite = np.isfinite(m)
        p = _where(finite, e / total, np.nan)
        if mode == "index":
            g_ce = p                                                        # C = 0: empty
            if C > 0:
                is_y = np.arange(C) == yc[..., None]
                rest_y = _sum_last(_where(is_y, 0.0, e), keepdims=True)      # s - e_y
                p_minus_y = _where(is_y, _where(finite, -(rest_y / total), np.nan), p)
                g_ce = keep * wy[..., None] * p_minus_y
                if eps > 0:
                    g_ce = g_ce + smooth * (_sum_last(w) * p - w)
        else:
            T = _sum_last(wt, keepdims=True)
            g_ce = T * p - wt
        g = c1 * s[..., None] * g_ce
        if z != 0:
            g = g + c2 * s[..., None] * _work(2 * z, wk) * _times(lse, p)
        g = _where(valid[..., None], g, 0.0)
        g = _where((valid & row_bad)[..., None], np.nan, g)
        if reduction == "mean" and not np.any(valid):
            g = _work(np.zeros(v.shape), wk)
    g = _moveaxis(g, -1, ax)
    return loss, g, od, ax


def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                  sample_weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, z_loss: float = 0.0) -> Any:
    """Cross-entropy of ``logits`` (class axis ``axis``) against class indices (integer
    target, shape = logits' shape without ``axis``) or class probabilities (floating
    target of the logits' shape), PyTorch semantics.

    With ``lse_i = logsumexp(x_i)``, ``logp_ic = x_ic - lse_i``, class weights ``w``,
    sample weights ``s``, ``eps = label_smoothing`` and ``V`` the non-ignored rows:

    * indices: ``l_i = s_i*(-(1-eps)*w[y_i]*logp_iy - (eps/C)*sum_c w_c*logp_ic)``,
      0 for ignored rows; "mean" divides by ``sum_{i in V} s_i*w[y_i]`` (nan if V is
      empty; "sum" is then 0.0).
    * probabilities: ``t' = (1-eps)*t + eps/C``, ``l_i = -s_i*sum_c w_c*t'_ic*logp_ic``
      (``0*log 0 = 0``); "mean" divides by ``sum_i s_i``.
    * ``z_loss`` adds ``z*s_i*lse_i**2`` per non-ignored row, divided under "mean" by
      ``sum_{i in V} s_i``.
    * rows with nan or +inf logits give nan; an out-of-range index raises IndexError.
    """
    loss, _, od, _ = _ce_core(logits, target, axis, weight, sample_weight, ignore_index,
                              reduction, label_smoothing, z_loss, False)
    return _finish_loss(loss, od, reduction)


def cross_entropy_and_grad(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                           sample_weight: Any = None, ignore_index: int = -100,
                           reduction: str = "mean", label_smoothing: float = 0.0,
                           z_loss: float = 0.0, grad_out: Any = None) -> Tuple[Any, Any]:
    """``(cross_entropy(...), d loss / d logits)``; for "none" the gradient is that of
    the sum of the per-row losses.  See ``_ce_core`` for the gradient formulas.  If
    every row is ignored under "mean", the loss is nan and the gradient all zeros."""
    loss, g, od, _ = _ce_core(logits, target, axis, weight, sample_weight, ignore_index,
                              reduction, label_smoothing, z_loss, True)
    return _finish_loss(loss, od, reduction), _write_grad(g, od, grad_out)


def _binary_target(target: Any, shape: Any, name: str = "target") -> Any:
    """The target checked (API section 3: floats in [0, 1], nan invalid; bool; integers
    0/1) and converted to floats exactly."""
    t = np.asarray(target)
    if t.dtype.kind not in "biuf" and not _is_ml_float(t.dtype):
        raise TypeError(f"{name}: expected a bool, integer or floating array, got dtype {t.dtype}")
    if t.shape != shape:
        raise ValueError(f"{name}: expected the logits' shape {shape}, got {t.shape}")
    if t.dtype.kind in "iu":
        bad = (t != 0) & (t != 1)
    elif t.dtype.kind == "b":
        bad = np.zeros(t.shape, dtype=bool)
    else:
        with np.errstate(invalid="ignore"):
            bad = ~((t >= 0) & (t <= 1))
    if np.any(bad):
        pos = np.unravel_index(int(np.argmax(bad)), t.shape) if t.ndim else ()
        raise ValueError(f"{name}: expected values in [0, 1] (floats) or 0/1 (integers), got "
                         f"{t[pos]!r} at position {tuple(int(i) for i in pos)}")
    return _floats(t)


def _broadcast_weight(name: str, weight: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """weight (None -> 1) as floats whose shape broadcasts to the logits' shape."""
    arr = np.ones(()) if weight is None else _floats(weight)
    try:
        b = np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        b = None
    if b != shape:
        raise ValueError(f"{name}: shape {arr.shape} does not broadcast to the logits' "
                         f"shape {shape}")
    return arr


def _bce_core(logits: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any, want_grad: bool) -> Any:
    """Elementwise BCE with logits and its gradient (working precision).

        l = -w*(pw*y*log_sigmoid(x) + (1-y)*log_sigmoid(-x))      (0 * -inf = 0)
        dl/dx = w*(sigmoid(x)*(1 + (pw-1)*y) - pw*y)
    """
    _check_reduction(reduction)
    x, od, wk = _as_logits(logits, "logits")
    v = _work(x, wk)
    y = _work(_binary_target(target, x.shape), wk)
    w = _work(_broadcast_weight("weight", weight, x.shape), wk)
    pw = _work(_broadcast_weight("pos_weight", pos_weight, x.shape), wk)
    a = w * pw * y                       # coefficient of -log_sigmoid(x)
    b = w * (1.0 - y)                    # coefficient of -log_sigmoid(-x)
    nanx = np.isnan(_float_of(v))
    loss = -(_times(a, _log_sigmoid_w(v)) + _times(b, _log_sigmoid_w(-v))) + 0.0  # no -0.0
    loss = _where(nanx, np.nan, loss)
    red = _reduce(loss, reduction)
    if not want_grad:
        return red, None, od
    with np.errstate(invalid="ignore", over="ignore"):
        # = w*(sigmoid(x)*(1 + (pw-1)*y) - pw*y), written without the cancellation of
        # sigmoid(x) - 1 for y = 1 (exact for 0/1 targets at any |x|)
        g = _broadcast_to(w * (_sigmoid_w(v) * (1.0 - y) - pw * y * _sigmoid_w(-v)), x.shape)
        if reduction == "mean":
            g = g / x.size
        g = _where(nanx, np.nan, g)
    return red, g, od


def bce_with_logits(logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
                    reduction: str = "mean") -> Any:
    """Binary cross-entropy with logits, PyTorch semantics:
    ``l = -weight*(pos_weight*y*log_sigmoid(x) + (1-y)*log_sigmoid(-x))``; weight and
    pos_weight broadcast against the target; "mean" divides by the element count.  At
    ``x = +-inf`` the loss is its limit (0 or +inf) where PyTorch gives nan."""
    loss, _, od = _bce_core(logits, target, weight, pos_weight, reduction, False)
    return _finish_loss(loss, od, reduction)


def bce_with_logits_and_grad(logits: Any, target: Any, *, weight: Any = None,
                             pos_weight: Any = None, reduction: str = "mean",
                             grad_out: Any = None) -> Tuple[Any, Any]:
    """``(bce_with_logits(...), grad)`` with
    ``grad = weight*(sigmoid(x)*(1 + (pos_weight-1)*y) - pos_weight*y)`` (divided by
    the element count under "mean"); exact at ``x = +-inf``."""
    loss, g, od = _bce_core(logits, target, weight, pos_weight, reduction, True)
    return _finish_loss(loss, od, reduction), _write_grad(g, od, grad_out)


def _focal_core(logits: Any, target: Any, alpha: Any, gamma: Any, reduction: Any, want_grad: bool) -> Any:
    """torchvision sigmoid_focal_loss and its gradient.

    p = sigmoid(x), ce = bce(x, y), q = 1 - p_t = p*(1-y) + (1-p)*y,
    l = a_t * ce * q**gamma with a_t = alpha*y + (1-alpha)*(1-y) if alpha >= 0 else 1.
        dce/dx = p - y = p*(1-y) - y*(1-p)      (evaluated so, without cancellation)
        dq/dx  = p*(1-p)*(1-2y)
        dl/dx  = a_t * (dce/dx * q**gamma + ce * gamma * q**(gamma-1) * dq/dx)
    The second term is taken as 0 where q = 0 or gamma = 0 (its limit); nan x -> nan.
    """
    _check_reduction(reduction)
    x, od, wk = _as_logits(logits, "logits")
    v = _work(x, wk)
    y = _work(_binary_target(target, x.shape), wk)
    alpha = float(alpha)
    gamma = float(gamma)
    if gamma < 0:
        raise ValueError(f"gamma: expected a value >= 0, got {gamma}")
    ones = _work(np.ones(x.shape), wk)
    g_w, a_w = _work(gamma, wk), _work(alpha, wk)
    p = _sigmoid_w(v)
    pm = _sigmoid_w(-v)                                   # 1 - p, without cancellation
    ce = -(_times(y, _log_sigmoid_w(v)) + _times(1.0 - y, _log_sigmoid_w(-v)))
    q = p * (1.0 - y) + pm * y
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mod = _pow(q, g_w) if gamma != 0 else ones
        at = a_w * y + (1.0 - a_w) * (1.0 - y) if alpha >= 0 else ones
        loss = at * _times(mod, ce)
    nanx = np.isnan(_float_of(v))
    loss = _where(nanx, np.nan, loss)
    red = _reduce(loss, reduction)
    if not want_grad:
        return red, None, od
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dce = p * (1.0 - y) - y * pm                      # p - y without cancellation
        if gamma == 0:
            dmod = 0.0 * ones
        else:
            dq = (p * pm) * (1.0 - 2.0 * y)
            dmod = _where(_sign_of(q) > 0, g_w * _pow(q, g_w - 1.0) * dq, 0.0)
        g = at * (_times(mod, dce) + _times(dmod, ce))
        if reduction == "mean":
            g = g / x.size
        g = _where(nanx, np.nan, g)
    return red, g, od


def sigmoid_focal_loss(logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean") -> Any:
    """torchvision's sigmoid focal loss: ``ce*(1-p_t)**gamma``, times
    ``alpha*y + (1-alpha)*(1-y)`` when ``alpha >= 0``; ce is bce_with_logits (with its
    exact +-inf limits), ``1 - p_t`` is evaluated as ``p*(1-y) + sigmoid(-x)*y``."""
    loss, _, od = _focal_core(logits, target, alpha, gamma, reduction, False)
    return _finish_loss(loss, od, reduction)


def sigmoid_focal_loss_and_grad(logits: Any, target: Any, *, alpha: float = 0.25,
                                gamma: float = 2.0, reduction: str = "mean",
                                grad_out: Any = None) -> Tuple[Any, Any]:
    """``(sigmoid_focal_loss(...), grad)``; see ``_focal_core`` for the formula."""
    loss, g, od = _focal_core(logits, target, alpha, gamma, reduction, True)
    return _finish_loss(loss, od, reduction), _write_grad(g, od, grad_out)


# --------------------------------------------------------------------------- section 4

_ALL_METRICS = ("count", "nll", "perplexity", "accuracy", "top_k_accuracy", "ece", "brier",
                "mean_entropy", "roc_auc", "average_precision", "f1", "precision", "recall")
_BINARY_METRICS = ("count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc",
                   "average_precision", "f1", "precision", "recall")
_TASK_METRICS = {
    "multiclass": ("count", "nll", "perplexity", "accuracy", "top_k_accuracy", "ece", "brier",
                   "mean_entropy"),
    "binary": _BINARY_METRICS,
    "multilabel": _BINARY_METRICS,
}


def _prepare_task(logits: Any, target: Any, task: Any, axis: Any) -> Any:
    """Infer the task and return (task, x rows (N, C) or (N,) / (N, L), y, row_shape).

    binary: 1-D logits, or a class axis of length 1 (target of the logits' shape or of
            the shape without the class axis), whatever the target dtype;
    multiclass: integer (or integral-valued) target of the logits' shape without axis;
    multilabel: target of the logits' shape (class axis length > 1).
    """
    x, od, _ = _as_logits(logits, "logits")
    wd = _float_work(x.dtype)
    t = np.asarray(target)
    if x.ndim == 0:
        raise ValueError("logits: expected at least 1 dimension, got a 0-d input")
    if t.dtype.kind not in "biuf" and not _is_ml_float(t.dtype):
        raise TypeError(f"target: expected a numeric array, got dtype {t.dtype}")
    if task is not None and task not in _TASK_METRICS:
        raise ValueError(f"task: expected 'multiclass', 'binary', 'multilabel' or None, got {task!r}")
    if x.ndim == 1:
        ax = None
    else:
        ax = _norm_axis(axis, x.ndim)
    if task is None:
        if ax is None or x.shape[ax] == 1:
            task = "binary"
        elif t.shape == x.shape:
            task = "multilabel"
        elif t.shape == x.shape[:ax] + x.shape[ax + 1:]:
            task = "multiclass"
        else:
            raise ValueError(f"target: shape {t.shape} matches neither the logits' shape "
                             f"{x.shape} nor it without axis {ax}")
    v = _work(x, wd)
    if task == "binary":
        if ax is None:
            row_shape = v.shape
            xs = v.reshape(-1)
        else:
            if x.shape[ax] != 1:
                if t.shape == x.shape:   # elementwise binary on every logit
                    row_shape = v.shape
                    xs = v.reshape(-1)
                else:
                    raise ValueError(f"logits: binary task needs 1-D logits or a class axis "
                                     f"of length 1, got shape {x.shape} (axis {ax})")
            else:
                row_shape = v.shape[:ax] + v.shape[ax + 1:]
                xs = np.moveaxis(v, ax, -1).reshape(-1)
        if t.shape == row_shape:
            ys = t.reshape(-1)
        elif t.size == xs.size and t.shape == x.shape:
            ys = np.moveaxis(t, ax, -1).reshape(-1) if ax is not None else t.reshape(-1)
        else:
            raise ValueError(f"target: expected shape {row_shape}, got {t.shape}")
        ys = _check01(ys)
        return task, xs, ys, row_shape
    if ax is None:
        raise ValueError(f"logits: task {task!r} needs a class axis, got 1-D logits")
    vm = np.moveaxis(v, ax, -1)
    C = vm.shape[-1]
    row_shape = vm.shape[:-1]
    xs = vm.reshape(-1, C)
    if task == "multiclass":
        if t.shape != row_shape:
            raise ValueError(f"target: multiclass target must have shape {row_shape}, got {t.shape}")
        if t.dtype.kind == "b":
            raise TypeError("target: multiclass target must hold integer class indices, got bool")
        if t.dtype.kind == "f" or _is_ml_float(t.dtype):
            tf = np.asarray(t, dtype=np.float64)
            if not np.all(tf == np.round(tf)):
                raise ValueError("target: multiclass target must hold integer class indices")
        ys = np.asarray(t).astype(np.int64).reshape(-1)
        bad = (ys < 0) | (ys >= C)
        if np.any(bad):
            pos = tuple(int(i) for i in np.argwhere(bad.reshape(row_shape))[0])
            raise IndexError(f"target: class index {int(ys[bad][0])} at position {pos} is "
                             f"out of range [0, {C})")
        return task, xs, ys, row_shape
    # multilabel
    if t.shape != x.shape:
        raise ValueError(f"target: multilabel target must have the logits' shape {x.shape}, "
                         f"got {t.shape}")
    ys = _check01(np.moveaxis(t, ax, -1).reshape(-1, C))
    return task, xs, ys, row_shape


def _check01(y: Any) -> Any:
    yf = np.asarray(y, dtype=np.float64)
    if not np.all((yf == 0) | (yf == 1)):
        raise ValueError("target: binary / multilabel targets must be 0 or 1 "
                         "(bool, integer or float)")
    return yf


def _wmean(values: Any, s: Any) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.sum(s * values) / np.sum(s))


def _ece(conf: Any, correct: Any, s: Any, bins: Any) -> float:
    """sum_b (W_b/W)*|acc_b - conf_b| = (1/W)*sum_b |sum_{i in b} s_i*(correct_i - conf_i)|,
    bins [b/B, (b+1)/B) with the last one closed."""
    if conf.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        b = np.clip(np.floor(conf * bins), 0, bins - 1)
    b = np.where(np.isnan(conf), 0, b).astype(np.int64)
    total = 0.0
    per_bin = np.zeros(bins, dtype=conf.dtype)
    np.add.at(per_bin, b, s * (correct - conf))
    total = np.sum(np.abs(per_bin))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(total / np.sum(s))


def _distinct_score_weights(scores: Any, y: Any, w: Any, descending: bool) -> Any:
    """(positives, negatives): the weights of the positives and of the negatives at each
    distinct score, in ascending (or descending) order of the scores."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    sc, pos, ww = scores[order], y[order] == 1, w[order]
    start = np.flatnonzero(np.concatenate(([True], sc[1:] != sc[:-1])))
    return np.add.reduceat(np.where(pos, ww, 0.0), start), np.add.reduceat(np.where(pos, 0.0, ww), start)


def _roc_auc(scores: Any, y: Any, s: Any) -> float:
    """Exact weighted AUC = P(score_pos > score_neg) + 0.5*P(tie) over weighted pairs,
    i.e. the area under the weighted ROC curve with ties averaged (as sklearn).
    nan if a class is absent (or has zero weight) or if a score is nan."""
    if np.any(np.isnan(scores)):
        return float("nan")
    pos = y == 1
    Wp = np.sum(s[pos])
    Wn = np.sum(s[~pos])
    if not (Wp > 0 and Wn > 0):
        return float("nan")
    wp, wn = _distinct_score_weights(scores, y, s, descending=False)
    neg_below = np.concatenate(([0.0], np.cumsum(wn)[:-1]))  # the negatives scored lower
    return float(np.sum(wp * neg_below + 0.5 * wp * wn) / (Wp * Wn))


def _binary_entropy(v: Any) -> Any:
    """-(p*log p + (1-p)*log(1-p)) with p = sigmoid(v), 0*log 0 = 0; nan for nan v."""
    p = _sigmoid_w(v)
    pm = _sigmoid_w(-v)
    h = -(_times(p, _log_sigmoid_w(v)) + _times(pm, _log_sigmoid_w(-v)))
    return np.where(np.isnan(v), np.nan, h)


def score(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1,
          metrics: Any = None, k: int = 5, bins: int = 15, sample_weight: Any = None,
          temperature: float = 1.0, chunk_rows: Optional[int] = None,
          progress: Any = None) -> Dict[str, Any]:
    """Offline scoring metrics as a dict (see API section 4).

    Logits are divided by ``temperature`` first.  Multiclass (rows i, p = softmax):
    ``nll`` = weighted mean of ``-log p_{y_i}``; ``accuracy`` of ``predict == y``;
    ``top_k_accuracy`` of ``y in topk(min(k, C))``; ``ece`` on the top-label confidence
    ``max_c p``; ``brier`` = weighted mean of ``sum_c (p_c - onehot_c)**2``;
    ``mean_entropy`` of ``entropy(x)``.  Binary (p = sigmoid(x)): nll = BCE, prediction
    ``x > 0``, confidence ``max(p, 1-p)``, brier ``(p - y)**2``, binary entropy, and
    ``roc_auc`` (exact, ties averaged; computed on the logits, which the temperature
    does not reorder; nan if a class is absent).  Multilabel treats every element as a
    binary prediction with its row's sample weight (``roc_auc`` is the macro mean over
    labels having both classes, nan if none).  ``count`` is the number of rows.
    ``chunk_rows`` and ``progress`` are accepted and ignored.  Metrics of an empty
    input are nan (count 0).
    """
    task, xs, ys, row_shape = _prepare_task(logits, target, task, axis)
    if metrics is None:
        names = list(_TASK_METRICS[task])
    else:
        names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
        for m in names:
            if m not in _ALL_METRICS:
                raise ValueError(f"metrics: unknown metric {m!r}; expected names from {_ALL_METRICS}")
            if m not in _TASK_METRICS[task]:
                raise ValueError(f"metrics: {m!r} does not apply to task {task!r}")
    T = float(temperature)
    if not (T > 0 and math.isfinite(T)):
        raise ValueError(f"temperature: expected a finite value > 0, got {temperature!r}")
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins: expected an integer >= 1, got {bins}")
    wd = xs.dtype
    N = int(np.prod(row_shape)) if task != "binary" else xs.size
    if sample_weight is None:
        s = np.ones(N, dtype=wd)
    else:
        s = np.asarray(sample_weight, dtype=wd)
        if s.shape != tuple(row_shape):
            raise ValueError(f"sample_weight: expected shape {tuple(row_shape)}, got {s.shape}")
        s = s.reshape(-1)
    z = xs / np.asarray(T, dtype=wd)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if task == "multiclass":
            C = xs.shape[1]
            logp = _log_softmax_last(z)
            p = np.exp(logp)
            nll = -np.take_along_axis(logp, ys[:, None], axis=1)[:, 0]
            pred = np.array([_order_desc(r)[0] for r in z], dtype=np.int64) if N else np.zeros(0, np.int64)
            correct = (pred == ys).astype(wd)
            conf = np.max(p, axis=1) if N else np.zeros(0, wd)
            onehot = np.zeros_like(p)
            if N:
                np.put_along_axis(onehot, ys[:, None], 1, axis=1)
            for m in names:
                if m == "count":
                    out[m] = N
                elif m == "nll":
                    out[m] = _wmean(nll, s)
                elif m == "perplexity":
                    out[m] = float(np.exp(_wmean(nll, s)))
                elif m == "accuracy":
                    out[m] = _wmean(correct, s)
                elif m == "top_k_accuracy":
                    kk = min(int(k), C)
                    if kk < 1:
                        raise ValueError(f"k: expected an integer >= 1, got {k}")
                    hit = np.array([y in _order_desc(r)[:kk] for r, y in zip(z, ys)], dtype=wd)
                    out[m] = _wmean(hit, s)
                elif m == "ece":
                    out[m] = _ece(conf, correct, s, bins)
                elif m == "brier":
                    out[m] = _wmean(np.sum((p - onehot) ** 2, axis=1), s)
                elif m == "mean_entropy":
                    out[m] = _wmean(_entropy_last(z), s)
            return out
        # binary / multilabel: flatten elements; per-element sample weights
        if task == "multilabel":
            L = xs.shape[1]
            se = np.repeat(s, L)
            ze, ye, xe = z.reshape(-1), ys.reshape(-1), xs.reshape(-1)
        else:
            se, ze, ye, xe = s, z, ys, xs
        ye = ye.astype(wd)
        p = _sigmoid_w(ze)
        pm = _sigmoid_w(-ze)
        for m in names:
            if m == "count":
                out[m] = N
            elif m == "nll":
                l = -(_times(ye, _log_sigmoid_w(ze)) + _times(1 - ye, _log_sigmoid_w(-ze)))
                out[m] = _wmean(np.where(np.isnan(ze), np.nan, l), se)
            elif m == "accuracy":
                out[m] = _wmean(((ze > 0) == (ye == 1)).astype(wd), se)
            elif m == "ece":
                conf = np.maximum(p, pm)
                conf = np.where(np.isnan(ze), np.nan, conf)
                correct = ((ze > 0) == (ye == 1)).astype(wd)
                out[m] = _ece(conf, correct, se, bins)
            elif m == "brier":
                out[m] = _wmean((p - ye) ** 2, se)
            elif m == "mean_entropy":
                out[m] = _wmean(_binary_entropy(ze), se)
            elif m in ("roc_auc", "average_precision"):
                fn = _roc_auc if m == "roc_auc" else _average_precision
                if task == "binary":
                    out[m] = fn(xe, ye, se)
                else:
                    aucs = [fn(xs[:, j], ys[:, j], s) for j in range(xs.shape[1])]
                    aucs = [a for a in aucs if not math.isnan(a)]
                    out[m] = float(np.mean(aucs)) if aucs else float("nan")
            elif m in ("f1", "precision", "recall"):
                # at the threshold 0.5 (logit 0), every element pooled (micro), 0 for 0/0
                pos = ze > 0
                tp = float(np.sum(se * (pos & (ye == 1))))
                pp, ap = float(np.sum(se * pos)), float(np.sum(se * (ye == 1)))
                num, den = {"f1": (2 * tp, pp + ap), "precision": (tp, pp), "recall": (tp, ap)}[m]
                out[m] = num / den if den > 0 else 0.0
    return out


def _average_precision(scores: Any, y: Any, w: Any) -> float:
    """Average precision from the definition: sum over the distinct scores t, in descending
    order, of (R(t) - R(previous t)) * P(t), where P and R are the weighted precision and
    recall of the rule score >= t; nan if a class is absent or a score is nan."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y) == 1
    w = np.asarray(w, dtype=np.float64)
    if np.isnan(scores).any():
        return float("nan")
    total_pos, total_neg = float(np.sum(w[y])), float(np.sum(w[~y]))
    if not (total_pos > 0 and total_neg > 0):
        return float("nan")
    wp, wn = _distinct_score_weights(scores, y, w, descending=True)
    tp, fp = np.cumsum(wp), np.cumsum(wn)  # the rule score >= t at each distinct t
    precision = tp / np.where(tp + fp > 0, tp + fp, 1.0)  # tp = 0 where tp + fp = 0
    return float(np.sum(wp / total_pos * precision))


def _kept_rows(logits: Any, target: Any, axis: Any, sample_weight: Any, ignore_index: Any) -> Any:
    """(logits, target, sample_weight, axis) without the rows whose target is
    ``ignore_index``, for targets with one value per row (multiclass, binary); multilabel
    targets (the logits' shape, class axis longer than 1) are returned as they are."""
    x, t = np.asarray(logits), np.asarray(target)
    ax = -1 if x.ndim <= 1 else _norm_axis(axis, x.ndim)
    row_shape = x.shape if x.ndim <= 1 else x.shape[:ax] + x.shape[ax + 1:]
    if t.shape != row_shape:
        return logits, target, sample_weight, axis
    keep = t != ignore_index
    rows = x if x.ndim <= 1 else np.moveaxis(x, ax, -1)
    w = None if sample_weight is None else np.asarray(sample_weight)[keep]
    return rows[keep], t[keep], w, -1


def fit_temperature(logits: Any, target: Any, *, axis: int = -1, sample_weight: Any = None,
                    ignore_index: int = -100) -> float:
    """The temperature T > 0 minimising the (sample-weighted) NLL of ``logits / T``.

    The NLL is convex in ``beta = 1/T`` (its derivative is ``E_s[E_p[x] - x_y]`` for
    multiclass, ``E_s[(sigmoid(beta*x) - y)*x]`` for binary/multilabel, increasing in
    beta), so the derivative's root is found by bisection on ``log(beta)`` over
    ``[1e-6, 1e6]``; if the minimum lies outside that range the nearest end is returned
    (T = 1e6 when no positive T improves on T -> inf, T = 1e-6 for separable data).
    The task is inferred as in ``score``; rows whose target (one per row) is
    ``ignore_index`` are left out.
    """
    logits, target, sample_weight, axis = _kept_rows(logits, target, axis, sample_weight, ignore_index)
    task, xs, ys, row_shape = _prepare_task(logits, target, None, axis)
    wd = xs.dtype
    N = xs.shape[0]
    s = np.ones(N, dtype=wd) if sample_weight is None else np.asarray(sample_weight, dtype=wd).reshape(-1)
    if task == "multiclass":
        x_y = np.take_along_axis(xs, ys[:, None], axis=1)[:, 0]

        def dnll(beta: float) -> Any:
            p = _softmax_last(beta * xs)
            return np.sum(s * (np.sum(_times(p, xs), axis=1) - x_y))
    else:
        if task == "multilabel":
            s = np.repeat(s, xs.shape[1])
        xe, ye = xs.reshape(-1), ys.reshape(-1).astype(wd)

        def dnll(beta: float) -> Any:
            return np.sum(s * (_sigmoid_w(beta * xe) - ye) * xe)

    lo, hi = math.log(1e-6), math.log(1e6)
    if not dnll(math.exp(lo)) < 0:
        return 1e6
    if not dnll(math.exp(hi)) > 0:
        return 1e-6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if dnll(math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return float(1.0 / math.exp(0.5 * (lo + hi)))


# --------------------------------------------------------------------------- section 7

def sequence_scores(logits: Any, tokens: Any, *, axis: int = -1, ignore_index: int = -100,
                    temperature: float = 1.0) -> Dict[str, Any]:
    """Per sequence b of ``(B, T, V)`` logits (the vocabulary at ``axis``, then the sequence
    and the position axes in order) and ``tokens`` ``(B, T)``, over the positions t whose token
    y_bt is not ``ignore_index``:

    * ``logprob[b] = sum_t log_softmax(x_bt / temperature)[y_bt]`` (nan where a row has no
      softmax: it holds nan or +inf, or only -inf), 0.0 with no scored position;
    * ``count[b]``: the number of scored positions;
    * ``greedy[b]``: ``predict(x_bt) == y_bt`` at every scored position (True with none).

    Under ``exact`` the log-probabilities and their sums are unrounded (``logprob`` is a
    DDArray). A token outside [0, V) that is not ``ignore_index`` raises IndexError."""
    x, od, wk = _as_logits(logits, "logits")
    if x.ndim != 3:
        raise ValueError(f"logits: expected a 3-d array, got shape {x.shape}")
    ax = _norm_axis(axis, 3)
    v = _moveaxis(_work(x, wk), ax, -1)
    V = v.shape[-1]
    tok = np.asarray(tokens)
    if tok.shape != v.shape[:-1]:
        raise ValueError(f"tokens: expected shape {v.shape[:-1]}, got {tok.shape}")
    if tok.dtype.kind not in "iu":
        raise TypeError(f"tokens: expected integer token ids, got dtype {tok.dtype}")
    scored = tok != ignore_index
    bad = scored & ((tok < 0) | (tok >= V))
    if np.any(bad):
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise IndexError(f"tokens: token {int(tok[pos])} at position {pos} is out of range [0, {V})")
    count = np.sum(scored, axis=1).astype(np.int64)
    if V == 0:
        return {"logprob": np.zeros(tok.shape[0]), "count": count, "greedy": np.ones(tok.shape[0], bool)}
    idx = np.where(scored, tok, 0).astype(np.int64)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        z = v / _work(np.float64(temperature), wk)
        picked = _take_last(_log_softmax_last(z), idx)[..., 0]
        logprob = _sum_last(_where(scored, picked, 0.0))
    best = np.argmax(_float_of(v), axis=-1)  # NumPy's argmax: the first nan, else the first maximum
    return {"logprob": DDArray.lift(logprob) if _EXACT.get() else logprob, "count": count,
            "greedy": np.all(~scored | (best == tok), axis=1)}


def calibration_curve(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1,
                      bins: int = 15, sample_weight: Any = None, ignore_index: int = -100,
                      temperature: float = 1.0, kind: str = "top_label") -> Dict[str, Any]:
    """Per bin ``[b/B, (b+1)/B)`` (the last one closed) of a confidence c_i with weights s_i:
    ``weight = sum s_i``, ``count``, ``accuracy = sum s_i a_i / weight`` and
    ``confidence = sum s_i c_i / weight`` (nan for a bin without rows), where

    * ``kind="top_label"``: multiclass ``c = max softmax(x / T)``, ``a = [predict(x) == y]``;
      binary and multilabel (per element) ``c = max(p, 1 - p)``, ``a = [(x > 0) == y]``;
    * ``kind="positive"`` (binary, multilabel): ``c = p = sigmoid(x / T)``, ``a = y``.

    A nan confidence falls in bin 0. Rows whose target (one per row) is ``ignore_index`` are
    left out."""
    if kind not in ("top_label", "positive"):
        raise ValueError(f"kind: expected 'top_label' or 'positive', got {kind!r}")
    logits, target, sample_weight, axis = _kept_rows(logits, target, axis, sample_weight, ignore_index)
    task, xs, ys, row_shape = _prepare_task(logits, target, task, axis)
    wd = xs.dtype
    n = xs.shape[0]
    s = np.ones(n, dtype=wd) if sample_weight is None else np.asarray(sample_weight, dtype=wd).reshape(-1)
    z = xs / np.asarray(float(temperature), dtype=wd)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if task == "multiclass":
            if kind != "top_label":
                raise ValueError("kind: 'positive' applies to the binary and multilabel tasks")
            conf = np.max(_softmax_last(z), axis=1) if n else np.zeros(0, wd)
            acc = (np.argmax(z, axis=1) == ys).astype(wd) if n else np.zeros(0, wd)
        else:
            if task == "multilabel":
                s = np.repeat(s, xs.shape[1])
            ze, ye = z.reshape(-1), ys.reshape(-1).astype(wd)
            p = _sigmoid_w(ze)
            if kind == "positive":
                conf, acc = p, ye
            else:
                conf = np.where(np.isnan(ze), np.nan, np.maximum(p, _sigmoid_w(-ze)))
                acc = ((ze > 0) == (ye == 1)).astype(wd)
        b = np.clip(np.floor(np.where(np.isnan(conf), 0, conf) * bins), 0, bins - 1).astype(np.int64)
    weight = np.zeros(bins, dtype=wd)
    hits = np.zeros(bins, dtype=wd)
    confs = np.zeros(bins, dtype=wd)
    np.add.at(weight, b, s)
    np.add.at(hits, b, s * acc)
    np.add.at(confs, b, s * conf)
    count = np.bincount(b, minlength=bins).astype(np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges_low": edges[:-1], "edges_high": edges[1:], "weight": weight, "count": count,
                "accuracy": np.where(count > 0, hits / weight, np.nan),
                "confidence": np.where(count > 0, confs / weight, np.nan)}


# --------------------------------------------------------------------------- section 8
__all__ += ["token_logprobs", "filter_logits", "sample", "apply_penalties", "philox4x32"]

# Decoding, from the formulas: the tempered logits are sorted (stably: ties to the lower index)
# and every filter is read off the sorted row; probabilities are in float64 (or the working
# precision of longdouble input). The tempered values themselves are float32 for all but
# float64 logits, as the API divides in float32.

def _tempered(x: Any, temperature: Any, rows_shape: Tuple[int, ...]) -> Any:
    """``x / T`` with the row's temperature, rounded as the API divides: in float32 for
    half-precision and float32 logits, in float64 for float64 logits (in long double for long
    double ones). A float array also under ``exact``: the exact formulas start from these
    rounded values, as the kernels do."""
    t = np.broadcast_to(np.asarray(temperature, dtype=np.float64), rows_shape)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if x.dtype.kind == "f" and x.dtype.itemsize >= 8:
            return np.asarray(x, dtype=x.dtype.newbyteorder("=")) / t
        return np.asarray(x, dtype=np.float32) / t.astype(np.float32)


def _rows_of(x: Any, axis: Any) -> Tuple[Any, int, Tuple[int, ...]]:
    ax = _norm_axis(axis, np.ndim(x))
    v = np.moveaxis(x, ax, -1)
    return v, ax, v.shape[:-1]


def _setting(value: Any, rows_shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=dtype), rows_shape).reshape(-1)


def _kept_sorted(ys: Any, k: Optional[int], p: float, min_p: float, keep: int) -> int:
    """How many of the sorted (descending) tempered values ``ys`` the chain keeps."""
    C = ys.shape[0]
    keep = min(keep, C)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = np.exp(ys.astype(np.result_type(ys.dtype, np.float64)) - ys[0])
        e = np.where(np.isnan(e), 0, e)
        # c_>(i): how many values are strictly greater (the first position of i's value)
        c_gt = np.searchsorted(-ys, -ys, side="left")
        ok = np.ones(C, dtype=bool)
        if k is not None:
            ok &= c_gt < min(max(k, keep), C)
        if p < 1.0:
            z1 = np.sum(np.where(ok, e, 0))
            above = np.concatenate([[0], np.cumsum(np.where(ok, e, 0))[:-1]])
            ok &= above < p * z1
        if min_p > 0.0:
            ok &= (ys.astype(np.float64) - np.float64(ys[0])) >= np.log(min_p)
    prefix = int(np.argmin(ok)) if not ok.all() else C
    return max(keep, prefix)


def _filter_row(y: Any, k: Optional[int], p: float, min_p: float, keep: int) -> Tuple[Any, Any]:
    """(the filtered row, its kept mask) of one tempered row."""
    if np.isnan(y).any() or np.isposinf(y).any():
        return np.full_like(y, np.nan), np.zeros(y.shape, dtype=bool)
    order = np.lexsort((np.arange(y.shape[0]), -y))
    kept = np.zeros(y.shape, dtype=bool)
    if not np.isneginf(y).all():
        kept[order[:_kept_sorted(y[order], k, p, min_p, keep)]] = True
    return np.where(kept, y, -np.inf), kept


def filter_logits(logits: Any, *, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None,
                  min_p: Any = None, min_tokens_to_keep: Any = 1, axis: int = -1, out: Any = None) -> Any:
    """Temperature, top-k (ties kept), top-p (the smallest prefix, ties to the lower index,
    whose mass reaches top_p), min-p (probability >= min_p * the largest); each step keeps at
    least min_tokens_to_keep; dropped logits are -inf."""
    x, od, wd = _as_logits(logits)
    v, ax, rs = _rows_of(x, axis)
    y = _tempered(v, temperature, rs)
    rows = y.reshape(-1, y.shape[-1])
    n = rows.shape[0]
    ks = _setting(-1 if top_k is None else top_k, rs, np.int64)
    ps = _setting(1.0 if top_p is None else top_p, rs, np.float64)
    mps = _setting(0.0 if min_p is None else min_p, rs, np.float64)
    keeps = _setting(min_tokens_to_keep, rs, np.int64)
    res = np.empty_like(rows)
    for i in range(n):
        res[i] = _filter_row(rows[i], None if ks[i] < 0 else int(ks[i]), float(ps[i]), float(mps[i]), int(keeps[i]))[0]
    r = np.moveaxis(res.reshape(y.shape), -1, ax)
    return _finish(r, od, None, out)


def token_logprobs(logits: Any, tokens: Any, *, axis: int = -1, top_n: int = 0, temperature: Any = 1.0) -> Any:
    """``log_softmax(logits / T)`` at the tokens (``x / T`` rounded as the API divides, see
    ``_tempered``); with top_n > 0 also the rank (1 + the number of strictly greater tempered
    logits) and the top-n (as topk orders them). Under ``exact`` the log-probabilities
    (``logprob`` and ``top_logprobs``) are unrounded DDArray values."""
    x, od, wd = _as_logits(logits)
    v, ax, rs = _rows_of(x, axis)
    y = _tempered(v, temperature, rs)
    lp = _log_softmax_last(_work(y, wd))
    t = np.asarray(tokens)
    if t.shape != rs or t.dtype.kind not in "iu":
        raise ValueError(f"tokens: expected integers of shape {rs}, got {t.dtype} {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= y.shape[-1]):
        raise IndexError("tokens: a token id is out of range")
    out_dtype = y.dtype   # float32 for all but float64 (and long double) logits

    def finish(a: Any) -> Any:
        if _EXACT.get():
            return DDArray.lift(a)
        a = np.asarray(a).astype(out_dtype)
        return a[()] if a.ndim == 0 else a

    res = finish(_take_last(lp, t[..., None].astype(np.int64))[..., 0])
    if not top_n:
        return res
    yt = np.take_along_axis(y, t[..., None].astype(np.int64), -1)
    with np.errstate(invalid="ignore"):
        rank = 1 + np.sum(y > yt, axis=-1)
    rows, c = y.reshape(-1, y.shape[-1]), y.shape[-1]
    idx = np.array([_order_desc(r)[:top_n] for r in rows], dtype=np.int64).reshape(rs + (top_n,))
    top_lp = _take_last(lp.reshape(-1, c), idx.reshape(-1, top_n)).reshape(rs + (top_n,))
    return res, (rank[()] if rank.ndim == 0 else rank.astype(np.int64)), finish(top_lp), idx


def apply_penalties(logits: Any, prev_tokens: Any, *, repetition_penalty: Any = 1.0, presence_penalty: Any = 0.0,
                    frequency_penalty: Any = 0.0, out: Any = None) -> Any:
    """For each token v seen n_v > 0 times in a row's history (negative ids are padding):
    x_v / r if x_v > 0 else x_v * r, then minus (frequency * n_v + presence). Under ``exact``
    the result is unrounded (a DDArray)."""
    x, od, wd = _as_logits(logits)
    h = np.asarray(prev_tokens)
    V = x.shape[-1]
    rs = x.shape[:-1]
    v = _work(x, wd).reshape(-1, V)
    n = v.shape[0]
    hist = h.reshape(n, -1) if h.size else np.zeros((n, 0), dtype=np.int64)
    if hist.size and hist.max() >= V:
        raise IndexError("prev_tokens: a token id is out of range")
    counts = np.zeros((n, V), dtype=np.float64)
    rows, cols = np.nonzero(hist >= 0)
    np.add.at(counts, (rows, hist[rows, cols]), 1.0)
    seen = counts > 0

    def per_row(value: Any) -> Any:
        return _work(np.broadcast_to(_setting(value, rs, np.float64)[:, None], (n, V)), wd)

    r = per_row(repetition_penalty)
    with np.errstate(invalid="ignore", over="ignore"):
        penalised = _where(v > 0, v / r, v * r) - (per_row(frequency_penalty) * counts + per_row(presence_penalty) * seen)
        res = _where(seen, penalised, v)
    return _finish(res.reshape(x.shape), od, None, out)


_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_M32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter: Any, key: Any, rounds: int = 10) -> np.ndarray:
    """Philox-4x32 (Salmon et al., SC11) of uint32 counters (..., 4) and keys (..., 2)."""
    c = [np.asarray(counter, dtype=np.uint64)[..., j] for j in range(4)]
    k = [np.asarray(key, dtype=np.uint64)[..., j] for j in range(2)]
    for r in range(rounds):
        if r:
            k = [(k[0] + np.uint64(_PHILOX_W[0])) & _M32, (k[1] + np.uint64(_PHILOX_W[1])) & _M32]
        p0, p1 = np.uint64(_PHILOX_M[0]) * c[0], np.uint64(_PHILOX_M[1]) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k[0], p1 & _M32, (p0 >> np.uint64(32)) ^ c[3] ^ k[1], p0 & _M32]
    return np.stack(c, axis=-1)


def sample(logits: Any, *, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None, min_p: Any = None,
           min_tokens_to_keep: Any = 1, seed: Any, offset: Any = 0, axis: int = -1,
           return_logprobs: bool = False) -> Any:
    """The inverse CDF, in index order, of the filtered softmax at each row's uniform: Philox-4x32-10
    with key seed and counter (offset, stream), stream = the row's C-order index for one int
    seed and 0 for a seed per row; the uniform is (w1 * 2^21 + w0 // 2^11) / 2^53."""
    x, od, wd = _as_logits(logits)
    v, ax, rs = _rows_of(x, axis)
    n = int(np.prod(rs, dtype=np.int64))
    per_row = np.ndim(seed) > 0
    seeds = _setting(seed, rs, np.uint64)
    offs = _setting(offset, rs, np.uint64)
    stream = np.zeros(n, dtype=np.uint64) if per_row else np.arange(n, dtype=np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    ctr = np.stack([offs & m32, offs >> np.uint64(32), stream & m32, stream >> np.uint64(32)], axis=-1)
    w = philox4x32(ctr, np.stack([seeds & m32, seeds >> np.uint64(32)], axis=-1))
    u = ((w[:, 1] << np.uint64(21)) | (w[:, 0] >> np.uint64(11))).astype(np.float64) * 2.0 ** -53
    temps = _setting(temperature, rs, np.float64)
    greedy = temps == 0
    y = _tempered(v, np.where(greedy.reshape(rs), 1.0, temps.reshape(rs)), rs)
    rows = y.reshape(-1, y.shape[-1])
    ks = _setting(-1 if top_k is None else top_k, rs, np.int64)
    ps = _setting(1.0 if top_p is None else top_p, rs, np.float64)
    mps = _setting(0.0 if min_p is None else min_p, rs, np.float64)
    keeps = _setting(min_tokens_to_keep, rs, np.int64)
    tokens = np.empty(n, dtype=np.int64)
    lps = np.zeros(n, dtype=np.float64)
    for i in range(n):
        row = rows[i]
        if greedy[i]:
            tokens[i] = _order_desc(_work(v.reshape(-1, v.shape[-1])[i], wd))[0]
            continue
        filt, kept = _filter_row(row, None if ks[i] < 0 else int(ks[i]), float(ps[i]), float(mps[i]), int(keeps[i]))
        if not kept.any():
            raise ValueError(f"logits: row {i} has no distribution to sample from")
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.where(kept, np.exp(_work(filt, wd) - np.max(_work(filt, wd))), 0)
        cum = np.cumsum(e)
        j = int(np.searchsorted(cum, u[i] * cum[-1], side="right"))
        tokens[i] = min(j, int(np.flatnonzero(kept)[-1]))
        lps[i] = np.log(e[tokens[i]] / cum[-1])
    tok = tokens.reshape(rs)
    tok = tok[()] if tok.ndim == 0 else tok
    if not return_logprobs:
        return tok
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    lp = lps.reshape(rs).astype(out_dtype)
    return tok, (lp[()] if lp.ndim == 0 else lp)
