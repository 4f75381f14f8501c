"""The training-curves figure every pretraining run writes: loss, kNN top-1 and throughput against training time.

matplotlib is imported when a figure is drawn (``pip install mvssl-hub[bench]``); without it no figure is
made and the run says so.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["plot_training_curves", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    """The step records of a ``metrics.jsonl`` (the config line skipped), in file order."""
    if not path.is_file():
        return []
    return [rec for rec in map(json.loads, path.read_text().splitlines()) if "step" in rec]


def plot_training_curves(metrics: Path, png: Path, title: str = "", random_init_knn: float | None = None) -> bytes | None:
    """Draw loss, kNN top-1 (the same network at random init dashed) and images/s against training time (minutes
    of the run's clock, evaluation excluded; the step where a record has no time) into ``png``; returns the PNG
    bytes.

    None (and a warning in the log) when matplotlib is missing or nothing was logged.
    """
    records = read_metrics(metrics)
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no training-curves figure (pip install 'mvssl-hub[bench]')")
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("loss", "loss"), ("knn_top1", "kNN top-1 (%)"), ("images_per_s", "images / s"))
    for ax, (key, label) in zip(axes, panels):
        rows = [r for r in records if r.get(key) is not None]
        timed = bool(rows) and all(r.get("train_seconds") is not None for r in rows)
        points = [(r["train_seconds"] / 60 if timed else r["step"], r[key]) for r in rows]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "knn_top1" else None, markersize=3)
        ax.set_xlabel("training time (min)" if timed else "training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if random_init_knn is not None:
        axes[1].axhline(random_init_knn, color="grey", linestyle="--", label=f"random init {random_init_knn:.1f}%")
        axes[1].legend(fontsize=8)
    steps = [r["step"] for r in records]
    axes[1].set_title(f"{max(steps)} steps", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(buffer.getvalue())
    return buffer.getvalue()
