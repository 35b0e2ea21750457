# cython: language_level=3, boundscheck=False, wraparound=False
"""The binding: operand specs to C structs, the GIL released around every kernel.

An operand spec is the tuple ``(array, dtype_code, s0, s1, sc)`` built by ``fastlogits._layout``:
the array supplies the data pointer, the rest is the row grid in elements. A grid is
``(n0, n1, c)``. Nothing here checks arguments: the Python layer has done that. A kernel's
non-zero status becomes the exception of ``_STATUS_ERRORS``.

The binding is one extension module; its functions are written per kernel family in the
``_core_*.pxi`` files included at the end (Cython ``include``: one module, one namespace), each
declaring the C entry points it binds. This file holds what they share: the operand and grid
structs, the conversions from specs, and the table of status codes.
"""
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

cnp.import_array()


cdef extern from "fastlogits.h":
    enum:
        FL_OK
        FL_ENOMEM
        FL_EBADTARGET
        FL_RSUM_WORDS
    ctypedef struct fl_arr:
        void *data
        int32_t dtype
        int64_t s0
        int64_t s1
        int64_t sc
        int32_t fresh
    ctypedef struct fl_grid:
        int64_t n0
        int64_t n1
        int64_t c
    ctypedef struct fl_rsum:
        int64_t w[FL_RSUM_WORDS]


cdef fl_arr _operand(tuple spec):
    cdef fl_arr a
    cdef cnp.ndarray arr = <cnp.ndarray>spec[0]
    a.data = cnp.PyArray_DATA(arr)
    a.dtype = spec[1]
    a.s0 = spec[2]
    a.s1 = spec[3]
    a.sc = spec[4]
    a.fresh = len(spec) > 5 and spec[5]
    return a


cdef fl_grid _grid(tuple g):
    cdef fl_grid r
    r.n0 = g[0]
    r.n1 = g[1]
    r.c = g[2]
    return r


cdef fl_arr _optional(object spec):
    cdef fl_arr a
    if spec is None:
        a.data = NULL
        a.dtype = 0
        a.s0 = a.s1 = a.sc = 0
        a.fresh = 0
        return a
    return _operand(spec)


def data_address(cnp.ndarray a):
    """The address of a's first element (``a.__array_interface__["data"][0]`` without the dict
    NumPy builds for it: the in-place test of every call with an output)."""
    return <size_t>cnp.PyArray_DATA(a)


class BadTargetError(ValueError):
    """FL_EBADTARGET: a binary target is not 0/1 (integers) or in [0, 1] (floats), or is nan."""


# Every status code of fastlogits.h and the exception it becomes, in one place.
_STATUS_ERRORS = {
    FL_ENOMEM: (MemoryError, "a kernel could not allocate its scratch memory"),
    FL_EBADTARGET: (BadTargetError, "a binary target is not 0/1 (integers) or in [0, 1] (floats), or is nan"),
}


def status_error(int status):
    """The exception for a kernel's non-zero status (RuntimeError for a code not in the table)."""
    exc, message = _STATUS_ERRORS.get(status, (RuntimeError, f"a kernel returned the unknown status {status}"))
    return exc(f"fastlogits: {message}")


cdef int _check(int status) except -1:
    if status != FL_OK:
        raise status_error(status)
    return 0


include "_core_rows.pxi"
include "_core_losses.pxi"
include "_core_eval.pxi"
include "_core_rsum.pxi"
include "_core_decode.pxi"
include "_core_system.pxi"
