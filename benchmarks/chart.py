"""Draw a run's summary (``results/latest.json``) as a PNG: jobq's advantage over each peer.

    python -m benchmarks.chart RESULTS.json OUT.png

Runs in the peers' environment (it has matplotlib; jobq's does not need it). One group of bars
per peer, one bar per workload, on a log scale: above 1 jobq did better (rates jobq/peer,
latencies peer/jobq), below 1 the peer did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.summary import COLUMNS


def draw(report: dict[str, Any], out: Path) -> None:
    rows = [r for r in report["summary"]["rows"] if any(r["advantage"].values())]
    columns = [c for c in COLUMNS if any(r["advantage"].get(c.key) for r in rows)]
    labels = [f"{r['peer']}\n({r['store']})" for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.25 * len(rows) + 2), 4.8), dpi=110)
    width = 0.8 / max(1, len(columns))
    for i, col in enumerate(columns):
        xs = [k + (i - (len(columns) - 1) / 2) * width for k in range(len(rows))]
        ys = [r["advantage"].get(col.key) or 0.0 for r in rows]
        bars = ax.bar(xs, [y if y > 0 else float("nan") for y in ys], width, label=col.label)
        for bar, y in zip(bars, ys, strict=True):
            if y > 0:
                ax.annotate(
                    f"{y:.1f}" if y < 10 else f"{y:.0f}",
                    (bar.get_x() + bar.get_width() / 2, y),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("times better than the peer (log; >1: jobq ahead)")
    params = report.get("params", {})
    machine = report.get("machine", {})
    ax.set_title(
        f"jobq vs peers, one run on {machine.get('cpus', '?')} CPUs, {report.get('when', '')}\n"
        f"drain N={params.get('n', '?'):,}, bulk N={params.get('bulk_n', '?'):,}, durable "
        "settings (Redis peers: what the server keeps); jobq on SQLite vs huey, "
        "on PostgreSQL vs the rest",
        fontsize=8,
    )
    top = max((y for r in rows for y in r["advantage"].values() if y), default=1.0)
    bottom = min((y for r in rows for y in r["advantage"].values() if y), default=1.0)
    ax.set_ylim(min(0.5, bottom / 1.5), max(2.0, top * 2.5))
    ax.legend(
        fontsize=7,
        ncols=min(len(columns), 6),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        frameon=False,
    )
    ax.grid(axis="y", which="both", alpha=0.25)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    draw(json.loads(Path(args[0]).read_text()), Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
