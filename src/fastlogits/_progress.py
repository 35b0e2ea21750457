"""Progress reports of the streaming passes (``score``, the command line's ``predict``)."""
from __future__ import annotations

import sys
from typing import Any, Callable, Tuple


def progress_reporter(progress: Any, total: int) -> Tuple[Callable[[int], None], Callable[[], None]]:
    """(update(rows_done), close()) for ``progress``: None/False, a callable or True (a tqdm bar
    on stderr; without tqdm, a plain line on stderr rewritten in place)."""
    if progress is None or progress is False:
        return (lambda done: None), (lambda: None)
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    if progress is not True:
        raise TypeError(f"progress: expected None, True or a callable (rows_done, rows_total), got {progress!r}")
    try:
        from tqdm import tqdm
    except ImportError:
        def update(done: int) -> None:
            pct = 100.0 * done / total if total else 100.0
            sys.stderr.write(f"\rfastlogits: {done}/{total} rows ({pct:5.1f}%)")
            sys.stderr.flush()

        def close() -> None:
            sys.stderr.write("\n")
            sys.stderr.flush()
        return update, close
    bar = tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, desc="fastlogits")

    def update_bar(done: int) -> None:
        bar.update(done - bar.n)
    return update_bar, bar.close
