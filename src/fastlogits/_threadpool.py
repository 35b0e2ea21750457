"""threadpoolctl integration: ``threadpool_limits`` and ``threadpool_info`` see fastlogits' pool.

threadpoolctl finds controllers by the filename of a loaded shared library and checks it for
symbols; ours is the ``_core`` extension, recognised by its exported ``fl_*_num_threads``
functions (other libraries named ``_core*`` lack them and are passed over).

Controllers are registered per module object, and ``python -m threadpoolctl -i fastlogits``
runs threadpoolctl as ``__main__``: a second copy of the module, beside the ``threadpoolctl``
that ``import threadpoolctl`` gives. The controller is registered with both, so the command
line lists the pool as well as ``threadpool_info()`` does.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, List

_registered: List[ModuleType] = []  # threadpoolctl module objects that know the controller


def _threadpoolctl_modules() -> List[ModuleType]:
    """The threadpoolctl module, and ``__main__`` when that is threadpoolctl run with -m."""
    import threadpoolctl

    found = [threadpoolctl]
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is not None and main is not threadpoolctl and getattr(spec, "name", None) == "threadpoolctl":
        found.append(main)
    return found


def _controller(module: Any) -> Any:
    """The controller class, built on ``module``'s own LibController."""
    from ._version import __version__

    class FastlogitsController(module.LibController):  # type: ignore[misc]
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

    return FastlogitsController


def register() -> None:
    """Register the controller when threadpoolctl (3.0 or later) is installed."""
    try:
        modules = _threadpoolctl_modules()
    except ImportError:
        return
    for module in modules:
        if hasattr(module, "register") and not any(module is m for m in _registered):
            module.register(_controller(module))
            _registered.append(module)
