"""The ``fastlogits`` command line (API section 5): ``score``, ``predict``, ``bench``, ``info``.

Each subcommand is one entry of ``COMMANDS``: a function adding its arguments to an argparse
subparser and a function running it. Every error, from argparse or from the work (a bad file,
a full disk), is one line ``fastlogits: error: ...`` on stderr and exit status 2. SIGINT,
SIGTERM and SIGHUP unwind through the same cleanup and end with one line
``fastlogits: error: interrupted by SIGTERM`` and the shell's status for the signal,
128 + its number (130, 143, 129). Either way nothing half-written is left: outputs (``--out``,
``--plot``) are renamed into place only when complete, and scratch files have no name.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import IO, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from ._atomic import AtomicFile
from ._files import PARQUET, ChunkedRows, FileError, open_array, row_chunks
from ._outputs import TABLES, Field, PredictionOutput, check_text_id_type, output_suffix
from ._pages import PageReleaser, chunk_rows
from ._progress import progress_reporter
from ._scorer import nan_to_none
from ._signals import Interrupted, signals_as_exceptions


class UsageError(Exception):
    """A bad combination of arguments."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2 (its own default status too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = f"{self.prog.split()[-1]}: " if " " in self.prog else ""  # the subcommand, if any
        _fail(f"{where}{message} (see {self.prog} --help)")


def _fail(message: str) -> None:
    sys.stderr.write(f"fastlogits: error: {' '.join(message.split())}\n")
    raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _columns(text: Optional[str]) -> Optional[List[str]]:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _progress() -> Optional[bool]:
    return True if sys.stderr.isatty() else None


_INPUTS = ("logits file: .npy, .npz, .safetensors, HDF5 (.h5, .hdf5), a Zarr store (a directory) or Parquet "
           "(.parquet, .pq)")
_KEY = "the array inside a LOGITS .npz, safetensors, HDF5 or Zarr file (needed when it holds several)"
_COLUMN = "LOGITS Parquet column (a list column) or comma-separated columns, one per class"
# values (not bytes) per chunk of a text output: its strings are built a chunk at a time
_TEXT_VALUES = 1 << 18


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import fastlogits as fl

        fl.set_num_threads(threads)


# --------------------------------------------------------------------------- score

def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("logits", metavar="LOGITS", help=_INPUTS)
    p.add_argument("--target", metavar="PATH", help="targets file (default: LOGITS itself, with --target-key/--target-column)")
    p.add_argument("--task", choices=("multiclass", "binary", "multilabel"), help="default: inferred")
    p.add_argument("--axis", type=int, default=-1, help="class axis (default -1)")
    p.add_argument("--metrics", metavar="a,b", help="comma-separated metric names (default: all that apply)")
    p.add_argument("--k", type=_positive_int, help="k of top_k_accuracy (default 5, the metric left out when there "
                   "are fewer classes; a K above the number of classes is an error)")
    p.add_argument("--bins", type=_positive_int, default=15, help="ECE bins (default 15)")
    p.add_argument("--temperature", type=float, default=1.0, help="divide the logits by T (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="write a reliability diagram (needs matplotlib)")
    p.add_argument("--chunk-rows", type=_positive_int, help="rows per chunk (the result does not depend on it)")
    p.add_argument("--threads", type=_positive_int, help="threads (default: all CPUs available)")
    p.add_argument("--key", help=_KEY)
    p.add_argument("--column", help=_COLUMN)
    p.add_argument("--target-key", help="the targets' array inside an .npz, safetensors, HDF5 or Zarr file")
    p.add_argument("--target-column", help="the targets' column of a Parquet file (by default LOGITS itself)")
    p.add_argument("--ignore-index", type=int, default=-100, metavar="N",
                   help="targets equal to N count in no metric: multiclass and binary rows, multilabel elements "
                   "(default -100: padding)")
    p.add_argument("--per-class", action="store_true",
                   help="add the confusion matrix, per-class precision/recall/F1/support, macro/weighted/micro F1, "
                   "balanced accuracy and classwise ECE (multiclass)")
    p.add_argument("--auc-bins", type=_positive_int, metavar="B",
                   help="rank metrics in B probability bins (constant memory) instead of exactly")
    p.add_argument("--group", metavar="PATH", help="an integer group per row: every metric is also given per group")
    p.add_argument("--group-key", help="the groups' array inside an .npz, safetensors, HDF5 or Zarr file")
    p.add_argument("--group-column", metavar="NAME", help="the groups' column of the Parquet LOGITS table")


def _run_score(args: argparse.Namespace, scratch: contextlib.ExitStack) -> int:
    from ._calibration import calibration_curve
    from ._plot import reliability_kind
    from ._score import score
    from ._score_check import check

    if args.target is None and args.target_key is None and args.target_column is None:
        raise UsageError("score needs targets: --target PATH (or --target-key/--target-column for LOGITS itself)")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot: expected a .png path, got {args.plot!r}")
    plt = _pyplot() if args.plot else None
    _set_threads(args.threads)
    target_path = args.target or args.logits
    plot = AtomicFile(args.plot, inputs=[args.logits, target_path], what="--plot") if args.plot else None
    logits = open_array(args.logits, key=args.key, columns=_columns(args.column))
    target = open_array(target_path, key=args.target_key, columns=_columns(args.target_column),
                        options=("--target-key", "--target-column"))
    metrics = args.metrics
    if args.plot and metrics is not None and "ece" not in metrics.split(","):
        metrics = metrics + ",ece"
    k = _top_k(args, logits, target)
    group = _open_group(args)
    task = check(logits, target, args.task, args.axis, None).task
    result = score(logits, target, task=task, axis=args.axis, metrics=metrics, k=k, bins=args.bins,
                   temperature=args.temperature, chunk_rows=args.chunk_rows, progress=_progress(),
                   ignore_index=args.ignore_index, per_class=args.per_class, auc_bins=args.auc_bins, group=group)
    if plot is not None:
        # a second pass over the data: the diagram's bins (binary: of p, not the ece's)
        curve = calibration_curve(logits, target, task=task, axis=args.axis, bins=args.bins,
                                  temperature=args.temperature, ignore_index=args.ignore_index,
                                  kind=reliability_kind(task))
        with plot as f:
            _plot_reliability(plt, curve, task, result.get("ece", float("nan")), f, args.logits)
    if "top_k_accuracy" in result:
        result = {**result, "k": k}
    if args.json:
        print(json.dumps({"task": task, **nan_to_none(result)}, allow_nan=False))
    else:
        _print_report(task, result)
    return 0


def _open_group(args: argparse.Namespace) -> Optional[Union[np.ndarray, ChunkedRows]]:
    if args.group is not None and args.group_column is not None:
        raise UsageError("--group and --group-column: give one of them")
    if args.group_column is not None:
        return open_array(args.logits, columns=[args.group_column], options=("--group-key", "--group-column"))
    if args.group is not None:
        return open_array(args.group, key=args.group_key, options=("--group-key", "--group-column"))
    if args.group_key is not None:
        raise UsageError("--group-key names the array inside the --group file; give --group PATH")
    return None


def _top_k(args: argparse.Namespace, logits: Union[np.ndarray, ChunkedRows],
           target: Union[np.ndarray, ChunkedRows]) -> int:
    """The k of top_k_accuracy. By default 5, and the metric is left out when there are fewer
    classes (as ``fl.score`` with ``metrics=None``); a ``--k`` given explicitly asks for the
    metric, so a K above the number of classes of a multiclass problem is an error (as
    ``fl.score`` raises when ``top_k_accuracy`` is asked for with such a k)."""
    if args.k is None:
        return 5
    ax = args.axis
    if logits.ndim >= 2 and -logits.ndim <= ax < logits.ndim and args.task in (None, "multiclass"):
        c = logits.shape[ax]
        row_shape = logits.shape[:ax % logits.ndim] + logits.shape[ax % logits.ndim + 1:]
        multiclass = args.task == "multiclass" or (c > 1 and target.shape == row_shape)
        if multiclass and args.k > c:
            raise UsageError(f"--k: expected 1 <= K <= {c} (the number of classes) for top_k_accuracy, got {args.k}")
    return int(args.k)


def _fmt(value: Any) -> str:
    return str(value) if isinstance(value, (int, np.integer)) else format(float(value), ".6f")


# the confusion matrix is printed up to this many classes (the JSON output always has it)
_MAX_PRINTED_CLASSES = 20


def _print_report(task: str, result: Dict[str, Any]) -> None:
    """The scalar metrics as a table, then the per-class table, the confusion matrix (small C)
    and one row per group."""
    scalars = {key: v for key, v in result.items() if not isinstance(v, (dict, np.ndarray))}
    width = max(len(key) for key in list(scalars) + ["task"])
    print(f"{'task':<{width}}  {task}")
    for key, value in scalars.items():
        print(f"{key:<{width}}  {_fmt(value)}")
    if "per_class" in result:
        pc = result["per_class"]
        print("\nper class")
        print(f"{'class':>6}  {'precision':>10}  {'recall':>10}  {'f1':>10}  {'support':>12}")
        for c in range(len(pc["f1"])):
            print(f"{c:>6}  {pc['precision'][c]:>10.6f}  {pc['recall'][c]:>10.6f}  {pc['f1'][c]:>10.6f}  "
                  f"{pc['support'][c]:>12g}")
    cm = result.get("confusion_matrix")
    if cm is not None and len(cm) <= _MAX_PRINTED_CLASSES:
        print("\nconfusion matrix (rows: true class, columns: predicted class)")
        cw = max(6, max(len(f"{v:g}") for v in cm.ravel()) if cm.size else 6)
        print(" " * 6 + "".join(f"  {c:>{cw}}" for c in range(len(cm))))
        for c, row in enumerate(cm):
            print(f"{c:>6}" + "".join(f"  {v:>{cw}g}" for v in row))
    groups = result.get("groups")
    if groups:
        names = [key for key in scalars]
        print("\ngroups")
        print(f"{'group':>8}" + "".join(f"  {n:>{max(10, len(n))}}" for n in names))
        for g, sub in groups.items():
            print(f"{g:>8}" + "".join(f"  {_fmt(sub[n]):>{max(10, len(n))}}" for n in names))


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'fastlogits[plot]'") from None
    return plt


def _plot_reliability(plt: Any, curve: Dict[str, np.ndarray], task: str, ece: float, out: IO[bytes],
                      name: str) -> None:
    from ._plot import draw_reliability, reliability_layout

    draw_reliability(plt, reliability_layout(curve, task, ece, name), out)


# --------------------------------------------------------------------------- predict

def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("logits", metavar="LOGITS", help=_INPUTS)
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output, by suffix: .npy (one array), .csv, .jsonl or .parquet/.pq (a table: the id, then the "
                        "predictions; .parquet needs pyarrow)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--proba", action="store_true", help="probabilities (softmax; sigmoid for binary logits)")
    what.add_argument("--log-proba", action="store_true", help="log-probabilities")
    what.add_argument("--topk", type=_positive_int, metavar="K",
                      help="the K largest logits: their indices (topk_index) and, in a table, probabilities (topk_proba)")
    what.add_argument("--threshold", type=float, metavar="T", help="binary labels: sigmoid(x) > T, elementwise")
    p.add_argument("--axis", type=int, default=-1, help="class axis (default -1)")
    p.add_argument("--chunk-rows", type=_positive_int, help="rows per chunk (default: about 32 MiB of logits)")
    p.add_argument("--threads", type=_positive_int, help="threads (default: all CPUs available)")
    p.add_argument("--key", help=_KEY)
    p.add_argument("--column", help=_COLUMN)
    p.add_argument("--id-column", metavar="NAME",
                   help="a column of the Parquet LOGITS passed through as the first column of a table output "
                        "(default: the row number, as 'row')")


class _Prediction(NamedTuple):
    fields: List[Field]
    fn: Callable[[np.ndarray], List[np.ndarray]]
    rows: Union[np.ndarray, ChunkedRows]      # the logits with rows first (chunks are cut along axis 0)


def _prediction(args: argparse.Namespace, x: Union[np.ndarray, ChunkedRows], table: bool) -> _Prediction:
    """What to compute per chunk. 1-D logits are binary: labels ``x > 0`` (or ``--threshold``),
    ``--proba`` the sigmoid; otherwise the class axis is ``--axis`` (moved last)."""
    import fastlogits as fl

    if x.ndim == 1 or args.threshold is not None:
        if args.topk is not None or args.log_proba:
            raise UsageError("--topk and --log-proba need logits with a class axis (2-D or more)")
        if args.proba:
            return _Prediction([Field("proba", x.shape[1:], _float_out(x))], lambda c: [fl.sigmoid(c)], x)
        t = 0.5 if args.threshold is None else args.threshold
        if not 0.0 < t < 1.0:
            raise UsageError(f"--threshold: expected a number in (0, 1), got {t}")
        return _Prediction([Field("label", x.shape[1:], np.dtype(bool))], lambda c: [fl.predict_binary(c, t)], x)
    if x.ndim != 2:
        raise UsageError(f"LOGITS: predict expects 1-D or 2-D logits, got shape {x.shape}")
    ax = args.axis
    if not -2 <= ax < 2:
        raise UsageError(f"--axis: {ax} is out of bounds for 2-D logits")
    # the class axis first: rows are the columns, a transposed view (of a scratch copy when lazy)
    rows = np.asarray(x).T if ax % 2 == 0 else x
    n, c = rows.shape
    if args.proba:
        return _Prediction([Field("proba", (c,), _float_out(x))], lambda b: [fl.softmax(b, axis=1)], rows)
    if args.log_proba:
        return _Prediction([Field("log_proba", (c,), _float_out(x))], lambda b: [fl.log_softmax(b, axis=1)], rows)
    if args.topk is not None:
        k = args.topk
        if k > c:
            raise UsageError(f"--topk: expected 1 <= K <= {c} (the number of classes), got {k}")
        index = Field("topk_index", (k,), np.dtype(np.int64))
        if not table:
            return _Prediction([index], lambda b: [fl.topk(b, k, axis=1)[1]], rows)
        return _Prediction([index, Field("topk_proba", (k,), _float_out(x))], lambda b: _topk_proba(b, k), rows)
    return _Prediction([Field("label", (), np.dtype(np.int64))], lambda b: [fl.predict(b, axis=1)], rows)


def _topk_proba(b: np.ndarray, k: int) -> List[np.ndarray]:
    """The indices of the k largest logits of each row and their softmax probabilities (taken
    from ``fl.softmax`` of the chunk, so exactly the values ``fl.softmax`` gives)."""
    import fastlogits as fl

    index = fl.topk(b, k, axis=1)[1]
    return [index, np.take_along_axis(fl.softmax(b, axis=1), index, axis=1)]


def _float_out(x: Union[np.ndarray, ChunkedRows]) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" or x.dtype.name == "bfloat16" else np.dtype(np.float64)


def _ids(args: argparse.Namespace, ext: str, n: int) -> Any:
    """The ``--id-column`` reader (a ParquetColumn), or None."""
    if args.id_column is None:
        return None
    from ._parquet import ParquetColumn

    if os.path.splitext(args.logits)[1].lower() not in PARQUET:
        raise UsageError("--id-column names a column of a Parquet LOGITS file")
    if ext not in TABLES:
        raise UsageError(f"--id-column needs a table output (.csv, .jsonl, .parquet); a .npy output holds the "
                         f"predictions only, got {args.out}")
    ids = ParquetColumn(args.logits, args.id_column)
    if ids.length != n:
        raise UsageError(f"--id-column: the column has {ids.length} rows, the predictions {n} (the class axis "
                         f"must be the last one to pass an id through)")
    if ext not in PARQUET:
        check_text_id_type(ids.pa, args.logits, args.id_column, ids.type)
    return ids


def _read_rows(args: argparse.Namespace, pred: _Prediction) -> int:
    """Rows read per step: ``--chunk-rows``, else about 32 MiB of logits plus their outputs,
    a multiple of the rows of a stored chunk of a lazily read file (so none is decoded twice)."""
    if args.chunk_rows:
        return int(args.chunk_rows)
    row_logits = pred.rows.dtype.itemsize * int(np.prod(pred.rows.shape[1:]))
    row_out = sum(int(np.prod(f.shape)) * f.dtype.itemsize for f in pred.fields)
    rows = chunk_rows(2 * row_logits + row_out)  # 2x: a softmax of the chunk for topk_proba
    if isinstance(pred.rows, ChunkedRows):
        step = pred.rows.storage_rows
        rows = max(step, rows // step * step)
    return rows


def _write_rows(pred: _Prediction, ext: str, read: int) -> int:
    """Rows computed and written per step: all rows read, or fewer for a text output, whose
    strings take tens of bytes per value."""
    if ext not in (".csv", ".jsonl"):
        return read
    values = sum(int(np.prod(f.shape)) for f in pred.fields)
    return min(read, max(1, _TEXT_VALUES // max(1, values)))


def _run_predict(args: argparse.Namespace, scratch: contextlib.ExitStack) -> int:
    _set_threads(args.threads)
    ext = output_suffix(args.out, inputs=[args.logits])
    x = open_array(args.logits, key=args.key, columns=_columns(args.column))
    pred = _prediction(args, x, ext in TABLES)
    n = pred.rows.shape[0]
    ids = _ids(args, ext, n)
    read = _read_rows(args, pred)
    write = _write_rows(pred, ext, read)
    # pages are handed back behind the cursor when a chunk is a run of the file (rows along its
    # first axis); chunks of a transposed file (--axis 0) cut across all of it
    releaser = PageReleaser(x) if pred.rows is x and isinstance(x, np.ndarray) else None
    update, close = progress_reporter(_progress(), n)
    try:
        with PredictionOutput(args.out, n, pred.fields, id_name=args.id_column,
                              id_type=None if ids is None else ids.type, inputs=[args.logits]) as dest:
            for sl in row_chunks(n, read):
                chunk = pred.rows[sl]
                block = np.asarray(chunk)
                for sub in row_chunks(len(block), write):
                    lo, hi = sl.start + sub.start, sl.start + sub.stop
                    dest.write(lo, pred.fn(block[sub]), None if ids is None else ids.read(lo, hi))
                if releaser is not None:
                    releaser.release(chunk)
                update(sl.stop)
    finally:
        close()
    return 0


# --------------------------------------------------------------------------- info

def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="everything a bug report needs (versions, SIMD, threads, build, OS, CPU, "
                        "optional dependencies) as JSON")


def _run_info(args: argparse.Namespace, scratch: contextlib.ExitStack) -> int:
    import fastlogits as fl

    if args.json:
        print(json.dumps(fl.show_config(mode="dicts"), indent=2))
    else:
        fl.show_config()
    return 0


# --------------------------------------------------------------------------- bench

def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the short run (under a minute): fewer shapes and repeats")
    p.add_argument("--threads", type=_positive_int, help="threads for fastlogits and PyTorch (default: all)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart of the speed-ups (needs matplotlib)")
    p.add_argument("--ops", metavar="NAMES", help="only these operations, comma-separated as in the table "
                   "(e.g. softmax,cross_entropy_and_grad,logsumexp/bf16)")


def _run_bench(args: argparse.Namespace, scratch: contextlib.ExitStack) -> int:
    from . import bench

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fastlogits[plot]'") from None
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops is not None else None
    try:
        bench.cases(args.quick, ops)
    except ValueError as e:
        raise UsageError(f"--ops: {e}") from None
    plot = AtomicFile(args.plot, what="--plot") if args.plot else None
    report = bench.run(quick=args.quick, threads=args.threads, progress=None if args.json else _say, ops=ops)
    print(bench.to_json(report) if args.json else bench.format_table(report))
    if plot is not None:
        with plot as f:
            bench.plot(report, f)
    return 0


def _say(text: str) -> None:
    """A bench progress line on stderr."""
    sys.stderr.write(f"  {text}\n")


# --------------------------------------------------------------------------- dispatch

class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, contextlib.ExitStack], int]


COMMANDS: List[Command] = [
    Command("score", "metrics of logits against targets (streamed, any file size)", _add_score, _run_score),
    Command("predict", "labels, probabilities or top-k indices of logits, written to --out", _add_predict, _run_predict),
    Command("info", "version, SIMD path and threads (--json: the full report for bug reports)", _add_info, _run_info),
    Command("bench", "time every kernel against NumPy, SciPy and PyTorch; measure the bandwidth", _add_bench, _run_bench),
]


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = _Parser(prog="fastlogits", description="Fast scoring and postprocessing of model logits on the CPU.")
    parser.add_argument("--version", action="version", version=f"fastlogits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for cmd in COMMANDS:
        cmd.add_arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0, or 2 after a one-line error)."""
    args = build_parser().parse_args(argv)
    run = next(cmd.run for cmd in COMMANDS if cmd.name == args.command)
    try:
        with signals_as_exceptions(), contextlib.ExitStack() as scratch:
            return run(args, scratch)
    except Interrupted as exc:
        sys.stderr.write(f"fastlogits: error: {exc}\n")
        return 128 + exc.signum
    except KeyboardInterrupt:  # SIGINT where the handlers could not be installed
        sys.stderr.write("fastlogits: error: interrupted by SIGINT\n")
        return 130
    except (UsageError, FileError, ValueError, TypeError, IndexError, OSError, EOFError, OverflowError,
            MemoryError) as exc:
        sys.stderr.write(f"fastlogits: error: {' '.join(str(exc).split()) or type(exc).__name__}\n")
        return 2
