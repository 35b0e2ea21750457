"""The row grid: how an array of any shape, axis and strides reaches a kernel.

A kernel sees each operand as rows of the class axis laid on a two-level grid (n0, n1): row
(i0, i1) starts at element i0*s0 + i1*s1 and class k is k*sc further (see csrc/fastlogits.h).
We move the class axis last, drop length-1 dimensions and merge neighbouring dimensions whose
strides chain in every operand. Moving one axis of a contiguous array always leaves at most
two groups (the dimensions before and after the axis), so PyTorch's (N, C, d1, ..., dk) layout
with axis=1 runs in place. A layout that leaves more groups is copied first (inputs) or
computed into a temporary and copied back (outputs).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from ._input import dtype_code

# What ``_core`` takes for an operand: (array, dtype code, s0, s1, sc), strides in elements.
Spec = Tuple[np.ndarray, int, int, int, int]
FreshSpec = Tuple[np.ndarray, int, int, int, int, int]


def with_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """A view of ``a`` with a new length-1 dimension at ``axis`` (``np.expand_dims`` for a
    normalised axis, without its argument handling: this is on every call's path)."""
    return a[(slice(None),) * axis + (None,)]


def _outer(a: np.ndarray, axis: int) -> Tuple[List[int], List[int], int]:
    """Outer shape, outer strides (elements) and class stride of ``a`` around ``axis``."""
    isz = a.itemsize
    shape = [n for d, n in enumerate(a.shape) if d != axis]
    strides = [s // isz for d, s in enumerate(a.strides) if d != axis]
    sc = a.strides[axis] // isz if a.shape[axis] > 1 else 0
    return shape, strides, sc


def _groups(shape: Sequence[int], stride_sets: Sequence[Sequence[int]]) -> List[Tuple[int, List[int]]]:
    """Merge the outer dimensions into groups (length, strides per operand)."""
    groups: List[Tuple[int, List[int]]] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        st = [s[d] for s in stride_sets]
        if groups:
            pn, pst = groups[-1]
            if all(ps == n * s for ps, s in zip(pst, st)):
                groups[-1] = (pn * n, st)
                continue
        groups.append((n, st))
    return groups


class Grid:
    """Operand specs ready for ``_core`` plus the copy-backs owed to user outputs (a plain class:
    one is made per call)."""

    __slots__ = ("grid", "specs", "copy_back")

    def __init__(self, grid: Tuple[int, int, int], specs: List[Spec],
                 copy_back: Sequence[Tuple[np.ndarray, np.ndarray]] = ()):
        self.grid = grid
        self.specs = specs
        self.copy_back = copy_back

    def finish(self) -> None:
        for user, tmp in self.copy_back:
            np.copyto(user, tmp)


def _spec(a: np.ndarray, s0: int, s1: int, sc: int) -> Spec:
    return (a, dtype_code(a.dtype), s0, s1, sc)


def fresh(spec: Spec) -> FreshSpec:
    """The spec of an output the caller has just allocated: its pages are new, and the kernels
    write it with plain stores, not the non-temporal ones of a large reused output
    (csrc/fl_rowio.h, fl_stream_ok). A hint for speed: the values are the same either way."""
    return spec + (1,)


def make_grid(operands: Sequence[np.ndarray], axis: int, n_classes: int, n_outputs: int = 0) -> Grid:
    """Grid for operands that share their shape except along ``axis`` (which may be absent,
    length 1 or k in outputs, but is present in every operand: reduce outputs are passed with
    a length-1 axis). The last ``n_outputs`` operands are written by the kernel."""
    if axis == operands[0].ndim - 1:
        for a in operands:
            if not a.flags.c_contiguous:
                break
        else:
            return _contiguous_grid(operands, n_classes)
    outers = [_outer(a, axis) for a in operands]
    shape = outers[0][0]
    groups = _groups(shape, [o[1] for o in outers])
    if len(groups) > 2:
        return _copied_grid(operands, axis, n_classes, n_outputs)
    while len(groups) < 2:
        groups.insert(0, (1, [0] * len(operands)))
    (n0, st0), (n1, st1) = groups
    specs = [_spec(a, st0[i], st1[i], outers[i][2]) for i, a in enumerate(operands)]
    return Grid((n0, n1, n_classes), specs)


def _contiguous_grid(operands: Sequence[np.ndarray], n_classes: int) -> Grid:
    """The common case, without the general merge: C-contiguous operands, class axis last."""
    rows = operands[0].size // n_classes if n_classes else int(np.prod(operands[0].shape[:-1]))
    specs = []
    for a in operands:
        k = a.shape[-1] if a.ndim else 1
        specs.append((a, dtype_code(a.dtype), 0, k, 1 if k > 1 else 0))
    return Grid((1, rows, n_classes), specs)


def _copied_grid(operands: Sequence[np.ndarray], axis: int, n_classes: int, n_outputs: int) -> Grid:
    """Inputs copied, outputs through temporaries, all with the class axis last and C order."""
    moved = []
    copy_back: List[Tuple[np.ndarray, np.ndarray]] = []
    n_in = len(operands) - n_outputs
    for i, a in enumerate(operands):
        m = np.ascontiguousarray(np.moveaxis(a, axis, -1))
        if i >= n_in:
            copy_back.append((np.moveaxis(a, axis, -1), m))
        moved.append(m)
    g = make_grid(moved, moved[0].ndim - 1, n_classes, 0)
    g.copy_back = copy_back
    return g
