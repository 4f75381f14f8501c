"""Honest progress: the bar's total and ETA follow the time budget, and the curves are drawn against time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvssl_hub.train.plots import plot_training_curves
from mvssl_hub.train.schedule import expected_total_steps


def test_expected_total_follows_the_time_budget() -> None:
    # 100 steps in the first 50 s of a 300 s budget: 2 steps/s -> 500 more steps, not the 3,900 planned
    assert expected_total_steps(100, 3900, 300.0, 50.0, 0, 0.0) == 600
    assert expected_total_steps(100, 400, 300.0, 50.0, 0, 0.0) == 400  # the plan ends first
    assert expected_total_steps(100, 3900, None, 50.0, 0, 0.0) == 3900  # no budget: the plan
    assert expected_total_steps(700, 3900, 300.0, 310.0, 0, 0.0) == 700  # past the budget: here
    # a resumed run measures its own pace: 20 steps in 10 s since resuming at step 500 / 250 s
    assert expected_total_steps(520, 3900, 300.0, 260.0, 500, 250.0) == 600


def test_curves_are_drawn_against_training_time(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 10.0 - s, "images_per_s": 100.0, "train_seconds": 6.0 * s} for s in range(1, 11)]
    records += [{"step": s, "knn_top1": 20.0 + s, "train_seconds": 6.0 * s} for s in (2, 4, 6, 8, 10)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        assert plot_training_curves(log, tmp_path / "curves.png", random_init_knn=20.0).startswith(b"\x89PNG")
    finally:
        plt.Figure.savefig = real_savefig
    axes = captured["fig"].axes
    assert [ax.get_xlabel() for ax in axes] == ["training time (min)"] * 3
    knn_x = axes[1].lines[0].get_xdata()
    assert list(knn_x) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and len(knn_x) >= 5


def test_the_demo_evaluates_often_enough_for_a_curve_of_five_points() -> None:
    from mvssl_hub.train.config import read_yaml

    demo = read_yaml(Path(__file__).resolve().parents[2] / "recipes" / "configs" / "demo.yaml")
    assert 0 < demo["knn_every_seconds"] <= demo["time_budget"] / 5
