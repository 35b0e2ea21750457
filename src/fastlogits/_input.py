"""Turning what users pass into arrays the kernels can read, and checking outputs.

Conventions of API section 1: anything ``np.asarray`` accepts, plus CPU objects with
``__dlpack__`` (PyTorch tensors, including ``requires_grad`` and bfloat16 ones, JAX arrays),
read without a copy wherever the layout allows (a PyTorch tensor with its lazy negation or
conjugation bit set is resolved first: a copy). Integer and bool logits become float64;
complex, object, string and other dtypes raise ``TypeError``.

ml_dtypes (bfloat16) is imported only when a bfloat16 array is made here: its import costs more
than all of NumPy's, and an array that already is bfloat16 is recognised by its dtype alone
(whoever made it imported ml_dtypes).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._core import data_address

# codes of fastlogits.h's fl_dtype (the narrower integers are read as binary targets)
F32, F64, F16, BF16, I64, BOOL, I32, I16, I8 = 0, 1, 2, 3, 4, 5, 6, 7, 8
_CODES = {
    np.dtype(np.float32): F32,
    np.dtype(np.float64): F64,
    np.dtype(np.float16): F16,
    np.dtype(np.int64): I64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.int32): I32,
    np.dtype(np.int16): I16,
    np.dtype(np.int8): I8,
}

_KDLCPU, _KDLCUDAHOST = 1, 3

# The dtypes a kernel reads as they are (native byte order): the fast path of ``as_logits``
# and ``dtype_code`` is one dict look-up of the array's dtype (bfloat16 takes the general path).
_READY_FLOATS = {np.dtype(t): code for t, code in ((np.float32, F32), (np.float64, F64), (np.float16, F16))}


def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16 (importing ml_dtypes on first use)."""
    import ml_dtypes

    dt: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return dt


def is_bfloat16(dt: np.dtype) -> bool:
    """Is dt ml_dtypes' bfloat16, in either byte order? (without importing ml_dtypes)"""
    return dt.kind == "V" and dt.name == "bfloat16"


def is_float(dt: np.dtype) -> bool:
    """One of the four float dtypes the kernels read, in either byte order."""
    return (dt.kind == "f" and dt.itemsize in (2, 4, 8)) or is_bfloat16(dt)


def dtype_code(dtype: np.dtype) -> int:
    code = _CODES.get(dtype)  # an np.dtype of the table: no conversion (every call's path)
    if code is not None:
        return code
    dt = np.dtype(dtype)
    return BF16 if is_bfloat16(dt) else _CODES[dt]


def _device_name(obj: Any) -> str:
    """How to name the device of a tensor that is not in CPU memory, for an error message."""
    device = getattr(obj, "device", None)
    if device is not None:
        return str(device)
    try:
        kind, index = obj.__dlpack_device__()
    except (ValueError, RuntimeError, BufferError, TypeError):
        return "unknown"
    return f"DLPack device type {kind} (index {index})"


def _resolve_lazy_bits(obj: Any) -> Any:
    """A PyTorch tensor with its lazy negation or conjugation applied: DLPack exports the stored
    values without those bits (``t.conj().imag`` would be read with the wrong sign)."""
    for flag, resolve in (("is_neg", "resolve_neg"), ("is_conj", "resolve_conj")):
        test = getattr(obj, flag, None)
        if callable(test) and test():
            obj = getattr(obj, resolve)()
    return obj


def _from_dlpack(obj: Any, name: str) -> np.ndarray:
    try:
        device = obj.__dlpack_device__()[0]
    except (ValueError, RuntimeError, BufferError):  # e.g. PyTorch's "meta" device
        device = None
    if device not in (_KDLCPU, _KDLCUDAHOST):
        where = _device_name(obj)
        hint = " (a meta tensor holds no data)" if where == "meta" else ""
        raise TypeError(
            f"{name}: expected an array in CPU memory, got a {type(obj).__name__} on device "
            f"{where}{hint}; move it to the CPU first (for PyTorch: tensor.cpu())"
        )
    if getattr(obj, "requires_grad", False):
        obj = obj.detach()  # reading is all we do; autograd's guard would refuse the export
    obj = _resolve_lazy_bits(obj)
    if str(getattr(obj, "dtype", "")) == "torch.bfloat16":
        # NumPy has no bfloat16 DLPack type: share the bits as int16 and view them as bfloat16
        import torch

        return np.from_dlpack(obj.view(torch.int16)).view(bfloat16())
    try:
        return np.from_dlpack(obj)
    except (BufferError, TypeError, RuntimeError):
        return np.asarray(obj)


def as_array(obj: Any, name: str) -> np.ndarray:
    """``obj`` as an ndarray, without a copy where possible (no dtype conversion)."""
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray) if type(obj) is not np.ndarray else obj
    if hasattr(obj, "__dlpack_device__") and hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj, name)
    try:
        return np.asarray(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(obj).__name__}: {exc}") from None


def as_logits(obj: Any, name: str = "x") -> np.ndarray:
    """A float array the kernels read directly: native byte order, aligned, dtype float16,
    bfloat16, float32 or float64 (integers and bools become float64)."""
    if type(obj) is np.ndarray and obj.dtype in _READY_FLOATS and obj.flags.aligned:
        return obj  # what the general path below returns for it, with fewer look-ups
    a = as_array(obj, name)
    dt = a.dtype
    if is_float(dt):
        pass
    elif dt.kind in "iub":
        return np.asarray(a, dtype=np.float64)
    elif dt.kind == "f":
        raise TypeError(
            f"{name}: dtype {dt} is not supported; expected float16, bfloat16, float32 or "
            f"float64 (convert with .astype(np.float64))"
        )
    else:
        raise TypeError(
            f"{name}: expected real numbers (float16, bfloat16, float32, float64, integer or "
            f"bool), got dtype {dt}"
        )
    if not dt.isnative:
        a = a.astype(dt.newbyteorder("="))
    if not a.flags.aligned:
        a = a.copy()
    return a


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """A requested output dtype, one of the four float dtypes."""
    try:
        dt = bfloat16() if isinstance(dtype, str) and dtype == "bfloat16" else np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected a float dtype, got {dtype!r}") from None
    native: np.dtype = dt.newbyteorder("=")
    if not is_float(native):
        raise TypeError(f"{name}: expected float16, bfloat16, float32 or float64, got {dt}")
    return native


def check_out(out: Any, shape: Tuple[int, ...], dtype: Optional[np.dtype], name: str = "out") -> np.ndarray:
    """Validate a user-provided output array."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {out.shape}")
    if dtype is not None and out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
    if not is_float(out.dtype) and dtype is None:
        raise TypeError(f"{name}: expected a float16, bfloat16, float32 or float64 array, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name}: the array is read-only")
    if not out.dtype.isnative or not out.flags.aligned:
        raise ValueError(f"{name}: expected an aligned array in native byte order")
    return out


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Do a and b hold the same elements at the same places (a safe in-place update)?"""
    return data_address(a) == data_address(b) and a.strides == b.strides and a.dtype == b.dtype


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    if type(axis) is int and -ndim <= axis < ndim:  # the common case (not bool: type is exact)
        return axis % ndim
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(axis).__name__}")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(f"{name}: {ax} is out of bounds for an array of dimension {ndim}")
    return ax % ndim


def int64_value(value: Any, name: str) -> int:
    """An integer option that must fit int64 (e.g. ``ignore_index``); bools are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if not np.iinfo(np.int64).min <= int(value) <= np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected an int64 value, got {value!r}")
    return int(value)


def positive_value(value: Any, name: str) -> float:
    """A finite real number > 0 (e.g. ``temperature``); text and bools are refused."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name}: expected a positive number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__} {value!r}") from None
    if not 0.0 < v < float("inf"):
        raise ValueError(f"{name}: expected a finite value > 0, got {value!r}")
    return v
