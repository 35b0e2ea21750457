"""Termination signals as exceptions, so that a command interrupted by SIGINT, SIGTERM or
SIGHUP unwinds through its cleanup (temporary outputs removed) instead of dying in place.

- :func:`signals_as_exceptions` installs handlers that raise :class:`Interrupted` in the main
  thread, once: a second signal while unwinding is ignored so the cleanup can finish. A signal
  whose disposition is "ignore" (``nohup``) stays ignored. The previous handlers come back on
  exit.
- :func:`deferred_signals` blocks those signals around a critical section (creating a temporary
  file and taking charge of it, removing it); one that arrives meanwhile is delivered when the
  section ends. POSIX only; elsewhere a no-op.
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


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; there, Python's own defaults apply
        return
    fired: List[int] = []

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        del frame
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    previous: Dict[signal.Signals, Any] = {}
    try:
        for s in _signals():
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, handler)
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)  # None: a handler set from C


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
