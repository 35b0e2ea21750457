"""The metrics of a scoring from the merged state of all its rows (``finish``).
"""
from __future__ import annotations

from typing import Any, Dict, cast

import numpy as np

from . import _perclass, _rsum
from ._auc import AucData
from ._score_check import (_AP, _CM_METRICS, _METRIC_SUM, _NLL, _NSUMS, _PP, _RANK_METRICS, _TP, _W, PC_ECE,
                           Problem, Spec)
from ._score_state import ScoreState


def _ratio(a: float, b: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(a) / np.float64(b))


def finish(p: Problem, s: Spec, state: ScoreState) -> Dict[str, Any]:
    """The metrics of ``s.names`` from the merged state of all rows."""
    state.fold(s)
    v = _rsum.value(state.sums)
    out: Dict[str, Any] = {}
    cm_names = [m for m in s.names if m in _CM_METRICS]
    if cm_names:
        cm = _perclass.confusion(state.cm, state.cmw, p.c)
        out.update(_perclass.from_confusion(cm, cm_names))
    for m in s.names:
        if m == "count":
            out[m] = state.n_rows
        elif m in _METRIC_SUM:
            out[m] = _ratio(v[_METRIC_SUM[m]], v[_W])
        elif m == "perplexity":
            with np.errstate(over="ignore"):
                out[m] = float(np.exp(_ratio(v[_NLL], v[_W])))
        elif m == "f1":
            out[m] = _ratio(2.0 * v[_TP], v[_PP] + v[_AP]) if v[_PP] + v[_AP] > 0 else 0.0
        elif m in ("precision", "recall"):
            den = v[_PP] if m == "precision" else v[_AP]
            out[m] = _ratio(v[_TP], den) if den > 0 else 0.0
        elif m == "classwise_ece":
            out[m] = _perclass.classwise_ece(cast(np.ndarray, state.pc), s.bins, v[_W])
        elif m in _RANK_METRICS:
            out[m] = _rank_metric(p, s, state, m)
        elif m == "ece":
            _, correct, conf = np.split(v[_NSUMS:], 3)
            out[m] = _ratio(_rsum.value(_rsum.of(np.abs(correct - conf))), v[_W])
    return {m: out[m] for m in s.names}


def _rank_metric(p: Problem, s: Spec, state: ScoreState, m: str) -> float:
    """roc_auc / average_precision (binary, multilabel macro) and their one-vs-rest forms."""
    name = "roc_auc" if m.startswith("roc_auc") else "average_precision"
    if not s.auc_bins:
        # not None: the state keeps the scores whenever a ranking metric is asked for, exactly
        return cast(AucData, state.auc).metric(p.task, p.c, name)
    pcs = cast(np.ndarray, state.pc)
    off = 3 * s.bins if s.per_class & PC_ECE else 0
    hist = pcs[:, off:off + 2 * (s.auc_bins + 1)]
    vals = _perclass.binned_auc(hist) if name == "roc_auc" else _perclass.binned_ap(hist)
    return float(vals[0]) if p.task == "binary" else _perclass.macro(vals)
