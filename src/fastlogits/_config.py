"""Run-time configuration: the SIMD path, the thread count, the streaming of large outputs and
the form of products of subnormal values."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, Optional, TextIO

from . import _core
from ._version import __version__


def _select_isa_from_env() -> None:
    """Honour FASTLOGITS_ISA: a path this CPU lacks falls back to the best it has, with a warning."""
    name = os.environ.get("FASTLOGITS_ISA", "").strip().lower()
    if not name:
        return
    status = _core.isa_select(name)
    if status == 1:
        warnings.warn(
            f"FASTLOGITS_ISA={name!r} is not a known path (expected scalar, avx2, avx512 or neon); "
            f"using {_core.isa_name()}",
            RuntimeWarning,
            stacklevel=3,
        )
    elif status == 2:
        warnings.warn(
            f"FASTLOGITS_ISA={name!r} is not supported by this CPU or build; using {_core.isa_name()}",
            RuntimeWarning,
            stacklevel=3,
        )


def _stream_from_env() -> None:
    """Honour FASTLOGITS_STREAM_BYTES: reused outputs of at least this many bytes, whatever
    their rows' length, are written with non-temporal stores ("never": none). Unset, the CPU's
    default applies (csrc/fl_dispatch.c: outputs of 8 MiB; on AMD, output rows only when they
    have 64 KiB or more, the vector stores are whole 64-byte lines and the kernel does not
    compute the row in place); a value that is not a count of bytes is ignored, with a
    warning."""
    text = os.environ.get("FASTLOGITS_STREAM_BYTES", "").strip().lower()
    if not text:
        return
    try:
        n = -1 if text == "never" else int(text)
    except ValueError:
        n = None
    if n is None or (n < 0 and text != "never"):
        warnings.warn(
            f"FASTLOGITS_STREAM_BYTES={text!r} is not a count of bytes or 'never'; "
            f"using {_stream_text()}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    _core.set_stream_policy(n, 0, 0, True)


_SUBNORMAL_FORMS = {"plain": 1, "assist-free": 0}


def _subnormals_from_env() -> None:
    """Honour FASTLOGITS_SUBNORMALS: "plain", the x86 kernels multiply subnormal values by the
    plain instructions (the default on AMD, whose cores take no microcode assist for them), or
    "assist-free", by exact double and integer arithmetic (the default elsewhere: Intel cores
    take an assist of 40-100 cycles a vector). The values are the same bits either way; only
    the speed of rows with subnormal exponentials changes. Any other value is ignored, with a
    warning."""
    text = os.environ.get("FASTLOGITS_SUBNORMALS", "").strip().lower()
    if not text:
        return
    if text not in _SUBNORMAL_FORMS:
        warnings.warn(
            f"FASTLOGITS_SUBNORMALS={text!r} is not 'plain' or 'assist-free'; using {_subnormal_text()}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    _core.set_subnormal_policy(_SUBNORMAL_FORMS[text])


def _subnormal_text() -> str:
    """the form of subnormal products in words"""
    return "plain" if _core.subnormal_policy() else "assist-free"


def _stream_text() -> str:
    """the streaming policy in words"""
    total, row, store, in_place = _core.stream_policy()
    if total < 0:
        return "never"
    text = f"reused outputs of {total} bytes or more"
    if row or store:
        text += f"; rows of {row} bytes or more, in vector stores of {store} bytes or more"
    if not in_place:
        text += "; not rows computed in place"
    return text


def get_num_threads() -> int:
    """The number of threads fastlogits kernels use.

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.get_num_threads() >= 1
    True
    """
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Set the number of threads fastlogits kernels use (``n >= 1``). Results are bitwise the
    same for every thread count.

    Examples
    --------
    >>> import fastlogits as fl
    >>> old = fl.get_num_threads(); fl.set_num_threads(1); fl.get_num_threads()
    1
    >>> fl.set_num_threads(old)
    """
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"n: expected a positive int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n: expected a positive int, got {n}")
    _core.set_num_threads(n)


def isa() -> str:
    """The SIMD path in use (``scalar``, ``avx2``, ``avx512`` or ``neon``)."""
    return str(_core.isa_name())


def show_config(file: Optional[TextIO] = None, mode: str = "stdout") -> Optional[Dict[str, Any]]:
    """Print the version, the SIMD path chosen at import and the thread count, or, with
    ``mode="dicts"``, return everything a bug report needs as a dict (as
    ``numpy.show_config(mode="dicts")`` does): fastlogits' version, SIMD path (chosen and best
    available), threads, build (compiler, build type, SIMD paths compiled in), Python, NumPy,
    ml_dtypes, the OS, the CPU's model and flags, and the optional dependencies installed
    (their versions, or None). ``fastlogits info --json`` prints the same as JSON.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default ``sys.stdout``); ``mode="stdout"`` only.
    mode : {"stdout", "dicts"}

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.show_config()  # doctest: +ELLIPSIS
    fastlogits ...
    >>> info = fl.show_config(mode="dicts")
    >>> info["fastlogits"]["version"] == fl.__version__
    True
    """
    if mode == "dicts":
        from . import _sysinfo

        return _sysinfo.collect()
    if mode != "stdout":
        raise ValueError(f"mode: expected 'stdout' or 'dicts', got {mode!r}")
    out = sys.stdout if file is None else file
    print(f"fastlogits {__version__}", file=out)
    print(f"  SIMD path:      {_core.isa_name()} (best on this CPU: {_core.isa_best()})", file=out)
    print(f"  threads:        {get_num_threads()}", file=out)
    print(f"  non-temporal stores: {_stream_text()}", file=out)
    print(f"  subnormal products: {_subnormal_text()}", file=out)
    print(f"  FASTLOGITS_ISA: {os.environ.get('FASTLOGITS_ISA', '(unset)')}", file=out)
    print(f"  FASTLOGITS_NUM_THREADS: {os.environ.get('FASTLOGITS_NUM_THREADS', '(unset)')}", file=out)
    print(f"  FASTLOGITS_STREAM_BYTES: {os.environ.get('FASTLOGITS_STREAM_BYTES', '(unset)')}", file=out)
    print(f"  FASTLOGITS_SUBNORMALS: {os.environ.get('FASTLOGITS_SUBNORMALS', '(unset)')}", file=out)
    return None
