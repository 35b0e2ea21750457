"""Bounded memory for passes over memory-mapped arrays: the chunk size in bytes, and handing the
pages of a read-only mapping back to the OS behind the cursor (used by ``score`` and the
command line's ``predict``)."""
from __future__ import annotations

import mmap
from typing import Any, Optional, Tuple

import numpy as np

# A chunk holds about this many bytes of logits: large enough for the kernels to run at full
# speed, small enough that a chunk's pages and outputs stay far below any memory limit.
CHUNK_BYTES = 1 << 25


def chunk_rows(row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk for rows of ``row_bytes`` bytes (at least 1)."""
    return max(1, chunk_bytes // max(1, row_bytes))


def _read_only_mmap(a: np.ndarray) -> Optional[mmap.mmap]:
    """The mmap behind a read-only np.memmap view, if any."""
    b: Any = a
    while b is not None:
        if isinstance(b, np.memmap):
            mm = getattr(b, "_mmap", None)
            return mm if getattr(b, "mode", None) == "r" and isinstance(mm, mmap.mmap) else None
        b = getattr(b, "base", None)
    return None


class PageReleaser:
    """Gives the pages of a read-only memmap back to the OS once a chunk has been used, so the
    resident memory stays at about one chunk whatever the file size. Only an optimisation:
    platforms without madvise simply keep the pages (the OS may still evict them)."""

    def __init__(self, a: np.ndarray):
        self.mm = _read_only_mmap(a) if hasattr(mmap, "MADV_DONTNEED") else None
        self.base = 0
        if self.mm is not None:
            view = np.frombuffer(self.mm, dtype=np.uint8)
            self.base = view.__array_interface__["data"][0]
            del view

    def release(self, chunk: np.ndarray) -> None:
        if self.mm is None or chunk.size == 0:
            return
        lo, hi = byte_bounds(chunk)
        if lo < self.base or hi > self.base + len(self.mm):
            return  # not memory of this mapping
        start = (lo - self.base) // mmap.PAGESIZE * mmap.PAGESIZE
        end = hi - self.base
        try:
            self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            self.mm = None


def byte_bounds(a: np.ndarray) -> Tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds as bounds
    except ImportError:  # NumPy < 2
        bounds = np.byte_bounds  # type: ignore[attr-defined]  # NumPy 2's stubs lack it
    lo, hi = bounds(a)
    return int(lo), int(hi)
