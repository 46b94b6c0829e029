"""Loss curves of training runs, from their metrics.jsonl (one line per optimizer step), as a PNG.

    plot_loss_curves({"stage4/512": "results/runs/stage4/512/metrics.jsonl"}, "loss.png")
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (a missing file = no rows); a torn or malformed line (a run killed while
    writing it) is skipped with a warning."""
    from longvila.utils.logging import get_logger

    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                get_logger().warning(f"{path}:{i}: not a JSON line, skipped")
    return rows


def plot_loss_curves(runs: dict[str, str | Path], png: str | Path, title: str = "training loss") -> int:
    """Loss (left) and learning rate (right) per optimizer step, one line per run; returns the runs plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.8))
    plotted = 0
    for name, path in runs.items():
        rows = read_metrics(path)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], marker="o", markersize=3, label=name)
        ax_lr.plot(steps, [r["lr"] for r in rows], label=name)
        plotted += 1
    ax_loss.set(xlabel="optimizer step", ylabel="loss (global token mean)", title=title)
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="schedule")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return plotted
