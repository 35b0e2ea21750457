"""The report of ``fastlogits bench``: the table printed by the command line, its JSON and its
plot (matplotlib, the ``plot`` extra, imported only there)."""
from __future__ import annotations

import json
from typing import IO, Any, Dict, Optional, Union

from ._roofline import CACHE_SHAPES, DRIFT_LIMIT


def _cell(value: Optional[float], width: int, fmt: str) -> str:
    """A right-aligned table cell; '-' where a peer is not installed or does not apply."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def _rates(r: Optional[Dict[str, float]]) -> str:
    return "-" if not r else ", ".join(f"{k} {v:.2f}" for k, v in r.items())


# peers of a few cases only (the evaluation cases): a column each when some result has them
EXTRA_PEERS = {"sklearn": "x sklearn", "torchmetrics": "x tmetrics"}


def format_table(report: Dict[str, Any]) -> str:
    bw = report["bandwidth"]
    extra = [p for p in EXTRA_PEERS if any(f"speedup_vs_{p}" in r for r in report["results"])]
    lines = [
        f"fastlogits {report['fastlogits']} ({report['isa']}), {report['threads']} thread(s); "
        f"measured bandwidth: read {bw['read_GBps']:.1f} GB/s, non-temporal copy {bw['copy_GBps']:.1f} GB/s; "
        f"probe (G op/s per core, {report['threads']} at once): {_rates(report.get('rates'))}"
        + (f"; non-temporal stores: {report['stream']}" if report.get("stream") else "")
        + (f"; subnormal products: {report['subnormals']}" if report.get("subnormals") else ""),
        f"{'operation':<28}{'shape':>14}{'fl warm ms':>11}{'fl cold ms':>11}{'med ms':>9}{'Gelem/s':>9}{'% bw':>7}"
        f"{'% roof':>8}{'x ref':>8}{'x scipy':>9}{'x numpy':>9}{'x base':>8}{'x torch':>9}"
        + "".join(f"{EXTRA_PEERS[p]:>11}" for p in extra),
    ]
    for r in report["results"]:
        warm = r.get("fastlogits_warm_s")
        median = r.get("fastlogits_warm_median_s", r.get("fastlogits_cold_median_s"))
        by = {"arithmetic": "a", "memory": "m"}[r["roofline_by"]] if r.get("roofline_s") else " "
        roof = f"{r['pct_of_roofline']:>6.0f}%{by}" if r.get("roofline_s") else f"{'-':>8}"
        lines.append(
            f"{r['op']:<28}{r['shape'][0]:>8}x{r['shape'][1]:<6}"
            f"{_cell(warm and warm * 1e3, 10, '.2f')} {r['fastlogits_cold_s'] * 1e3:>10.2f}"
            f"{_cell(median and median * 1e3, 9, '.2f')}"
            f"{r['gelem_per_s']:>9.2f}{r['pct_of_bandwidth']:>6.0f}%{roof}"
            + _cell(r.get("speedup_vs_reference"), 8, ".1f")
            + "".join(_cell(r.get(f"speedup_vs_{p}"), 9, ".1f") for p in ("scipy", "numpy"))
            + _cell(r.get("speedup_vs_baseline"), 8, ".2f")
            + _cell(r.get("speedup_vs_torch"), 9, ".1f")
            + "".join(_cell(r.get(f"speedup_vs_{p}"), 11, ".1f") for p in extra)
        )
    lines.append("x peer = peer time / fastlogits time (warm where there is an output); % bw = bytes that must "
                 "move / time, over the read bandwidth (loss, reductions) or the copy bandwidth (outputs); "
                 "med ms = median of the repeats of the best path (warm where there is one); % roof = "
                 "max(memory bound, arithmetic bound) / time, m or a for the bound that is larger (from "
                 f"cache, {', '.join(f'{n}x{c}' for n, c in CACHE_SHAPES)}: arithmetic only); x base = "
                 "fastlogits' baseline on the same logits (decoding: one logsumexp for sample, "
                 "cross_entropy(reduction='none') for token_logprobs) / this one.")
    if "drift" in report:
        drift = ", ".join(f"{k.split('_')[0]} {100 * v:+.0f}%" for k, v in report["drift"].items())
        lines.append(f"bandwidth at the end: {drift}"
                     + (f"; UNSTABLE: moved more than {100 * DRIFT_LIMIT:.0f}%, the timings are not comparable"
                        if report["unstable"] else ""))
    return "\n".join(lines)


def to_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def plot(report: Dict[str, Any], path: Union[str, IO[bytes]]) -> None:
    """Bar charts of the speed-ups against each peer and of the % of the roofline of each case
    (needs matplotlib, the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    labels = [f"{r['op']}\n{r['shape'][0]}x{r['shape'][1]}" for r in results]
    peers = [p for p in ("reference", "scipy", "numpy", "torch", *EXTRA_PEERS)
             if any(f"speedup_vs_{p}" in r for r in results)]
    fig, (ax, ax_roof) = plt.subplots(2, 1, figsize=(max(8, 0.6 * len(labels) * len(peers)), 9), sharex=True)
    width = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        vals = [r.get(f"speedup_vs_{p}", 0.0) for r in results]
        ax.bar([j + i * width for j in range(len(results))], vals, width, label=p)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("speed-up of fastlogits (x)")
    unstable = " (bandwidth UNSTABLE during the run)" if report.get("unstable") else ""
    ax.set_title(f"fastlogits {report['fastlogits']} ({report['isa']}, {report['threads']} threads){unstable}")
    ax.legend()
    centres = [j + 0.4 - width / 2 for j in range(len(results))]
    ax_roof.bar(centres, [r.get("pct_of_roofline", 0.0) for r in results], 0.6,
                color=["tab:blue" if r.get("roofline_by") == "memory" else "tab:orange" for r in results])
    ax_roof.axhline(100.0, color="black", linewidth=0.8)
    ax_roof.axhline(80.0, color="grey", linewidth=0.8, linestyle="--")
    ax_roof.set_ylabel("% of roofline (blue: memory, orange: arithmetic)")
    ax_roof.set_xticks(centres)
    ax_roof.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
