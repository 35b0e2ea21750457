"""Termination signals as exceptions, so that a command interrupted by SIGINT, SIGTERM or
SIGHUP unwinds through its cleanup (temporary outputs removed) instead of dying in place.

- :func:`signals_as_exceptions` installs handlers that raise :class:`Interrupted` in the main
  thread (where CPython runs every Python-level handler, whichever thread the OS picked), once:
  a second signal while unwinding is ignored so the cleanup can finish. A signal whose
  disposition is "ignore" (``nohup``) stays ignored. The previous handlers come back on exit.
- :func:`deferred_signals` marks a critical section (creating a temporary file and taking
  charge of its name, renaming or removing it): a signal that arrives inside it is raised when
  the section ends, so the section is never cut in the middle.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Dict, Iterator, List, Optional

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


def _signals() -> List[signal.Signals]:
    return [getattr(signal, n) for n in _NAMES if hasattr(signal, n)]


class Interrupted(BaseException):
    """A termination signal, raised where the main thread was (a BaseException like
    KeyboardInterrupt, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


class _State:
    """What the handlers need to know (they are process-wide, so is this)."""

    fired = False                   # Interrupted has been raised: ignore further signals
    depth = 0                       # nesting of deferred_signals sections
    pending: Optional[int] = None   # a signal that arrived inside a section


_STATE = _State()


def _raise(signum: int) -> None:
    _STATE.fired = True
    raise Interrupted(signum)


def _handler(signum: int, frame: Optional[FrameType]) -> None:
    del frame
    if _STATE.fired:
        return
    if _STATE.depth:
        _STATE.pending = signum
        return
    _raise(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; there, Python's own defaults apply
        return
    _STATE.fired, _STATE.pending = False, None
    previous: Dict[signal.Signals, Any] = {}
    try:
        for s in _signals():
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, _handler)
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)  # None: a handler set from C


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if not _STATE.depth and _STATE.pending is not None and not _STATE.fired:
            signum, _STATE.pending = _STATE.pending, None
            _raise(signum)
