"""threadpoolctl integration: ``threadpool_limits`` and ``threadpool_info`` see fastlogits' pool.

threadpoolctl finds controllers by the filename of a loaded shared library and checks it for
symbols; ours is the ``_core`` extension, recognised by its exported ``fl_*_num_threads``
functions (other libraries named ``_core*`` lack them and are passed over).
"""
from __future__ import annotations

from typing import Any


def register() -> None:
    """Register the controller when threadpoolctl (3.0 or later) is installed."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register"):
        return

    from ._version import __version__

    # threadpoolctl ships no type information: LibController is Any to mypy
    class FastlogitsController(threadpoolctl.LibController):  # type: ignore[misc]
        user_api = "fastlogits"
        internal_api = "fastlogits"
        filename_prefixes = ("_core",)
        check_symbols = ("fl_get_num_threads", "fl_set_num_threads")

        def get_num_threads(self) -> Any:
            return self.dynlib.fl_get_num_threads()

        def set_num_threads(self, num_threads: int) -> Any:
            return self.dynlib.fl_set_num_threads(int(num_threads))

        def get_version(self) -> str:
            return __version__

    threadpoolctl.register(FastlogitsController)
