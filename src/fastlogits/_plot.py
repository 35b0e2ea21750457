"""The reliability diagram of ``fastlogits score --plot``: what is drawn (``reliability_layout``,
plain data, tested) apart from how (``draw_reliability``, matplotlib).

Top panel, one column per bin of :func:`calibration_curve`: the bar is the observed accuracy
(binary: the observed rate of positives), a black tick the bin's mean confidence (mean
predicted probability), and a red hatched bar the gap between them; each bar carries its row
count, so a bin of 4 rows does not look as solid as one of 70 000. Bottom panel: the rows per
bin, with the total N. The legend sits right of the panels, outside the data. Binary tasks are
drawn with ``kind="positive"`` (bins of ``p = P(y = 1)``: top-label bins below 0.5 would
always be empty), and the title says so; the ECE shown is the ``ece`` metric (top-label).
"""
from __future__ import annotations

from typing import IO, Any, Dict

import numpy as np


def reliability_kind(task: str) -> str:
    """The binning the diagram uses for a task."""
    return "positive" if task == "binary" else "top_label"


def reliability_layout(curve: Dict[str, np.ndarray], task: str, ece: float, name: str) -> Dict[str, Any]:
    """Everything the diagram shows, from ``calibration_curve(..., kind=reliability_kind(task))``."""
    lo, hi = curve["edges_low"], curve["edges_high"]
    count = curve["count"]
    filled = count > 0
    acc, conf = curve["accuracy"], curve["confidence"]
    positive = reliability_kind(task) == "positive"
    total = int(count.sum())
    what = "positive-class probability p = P(y = 1)" if positive else "top-label confidence"
    return {
        "centers": (lo + hi) / 2,
        "width": hi - lo,
        "filled": filled,
        "accuracy": np.where(filled, acc, 0.0),
        "confidence": conf,
        "gap_bottom": np.where(filled, np.fmin(acc, conf), 0.0),
        "gap_height": np.where(filled, np.abs(acc - conf), 0.0),
        "count": count,
        "total": total,
        "labels": {
            "bar": "observed rate of positives" if positive else "accuracy",
            "marker": "mean predicted p" if positive else "mean confidence",
            "gap": "gap (calibration error)",
            "diagonal": "perfect calibration",
        },
        "xlabel": what,
        "ylabel": "observed rate of y = 1" if positive else "accuracy",
        "title": (f"Reliability of {name} ({task}{': bins of p' if positive else ''})\n"
                  f"ECE (top-label) = {ece:.4f}, N = {total:,}"),
    }


def draw_reliability(plt: Any, layout: Dict[str, Any], out: IO[bytes]) -> None:
    """The diagram of ``layout`` as a PNG into ``out``."""
    f = layout["filled"]
    x, w, lab = layout["centers"], layout["width"], layout["labels"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="gray", lw=1, label=lab["diagonal"])
    top.bar(x[f], layout["accuracy"][f], width=w[f], color="C0", edgecolor="black", lw=0.6, label=lab["bar"])
    # hatched, without a face: over an accuracy bar (under-confidence) the bar stays visible
    top.bar(x[f], layout["gap_height"][f], bottom=layout["gap_bottom"][f], width=w[f], facecolor="none",
            hatch="///", edgecolor="C3", lw=0.8, label=lab["gap"])
    top.scatter(x[f], layout["confidence"][f], marker="_", s=220, linewidths=2.2, color="black", zorder=3,
                label=lab["marker"])
    for xi, yi, n in zip(x[f], np.fmax(layout["accuracy"], layout["confidence"])[f], layout["count"][f]):
        top.annotate(f"{int(n):,}", (xi, min(yi, 1.0)), xytext=(0, 2), textcoords="offset points",
                     ha="center", va="bottom", fontsize=6.5, rotation=90 if len(x) > 12 else 0)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.12)
    top.set_ylabel(layout["ylabel"])
    top.set_title(layout["title"], fontsize=10)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.bar(x, layout["count"], width=w, color="0.6", edgecolor="black", lw=0.6)
    bottom.set_ylabel("rows per bin")
    bottom.set_xlabel(layout["xlabel"])
    bottom.text(1.01, 0.5, f"N = {layout['total']:,}", transform=bottom.transAxes, va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
