"""benchmarks/studies/beta_study.py: beta grid, Spearman and the per-d agreement on synthetic cells (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mvssl_hub.losses import recommended_beta

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "studies" / "beta_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("beta_study_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["beta_study_under_test"] = module
    spec.loader.exec_module(module)
    return module


def ref_spearman(x: list[float], y: list[float]) -> float:
    def avg_ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v)
        return np.array([(a < e).sum() + ((a == e).sum() + 1) / 2 for e in a])  # average rank of ties

    return float(np.corrcoef(avg_ranks(x), avg_ranks(y))[0, 1])


def test_spearman_matches_reference_with_ties(study) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 4, 10).astype(float).tolist()
        y = rng.normal(size=10).tolist()
        assert study.spearman(x, y) == pytest.approx(ref_spearman(x, y), abs=1e-12)
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert study.spearman([1, 2], [1, 2]) is None and study.spearman([1, 1, 1], [1, 2, 3]) is None


def test_variant_betas(study) -> None:
    dims = [64, 256, 1024, 2048]
    assert study.variant_beta("barlowtwins", "fixed", 64, dims, 4) == 0.001  # method.md's tuned beta at d = 2048
    rec = recommended_beta("barlowtwins", 256, 4)
    assert study.variant_beta("barlowtwins", "recommended", 256, dims, 4) == rec
    assert study.variant_beta("barlowtwins", "half", 256, dims, 4) == rec / 2
    assert study.variant_beta("barlowtwins", "twice", 256, dims, 4) == rec * 2


def test_analyze_picks_and_agreement(study) -> None:
    variants = ["fixed", "recommended", "half", "twice"]
    cells = {}
    for d, knn_best in ((64, "twice"), (256, "half")):
        for i, v in enumerate(variants):
            good = v == knn_best
            cells[f"d{d}_{v}"] = {
                "d": d, "variant": v, "beta": 0.01, "status": "done", "knn_top1": 50.0 + 10 * good + i,
                "monitors": {f"{s}/{m}": (1.0 + 0.01 * i if m == "alpha_req" and good else
                                          3.0 + i if m == "alpha_req" else 10.0 + 5 * good + 0.1 * i)
                             for s in ("backbone", "projector") for m in ("rankme", "alpha_req", "lidar")},
            }
    out = study.analyze(cells, [64, 256, 1024], variants)
    assert out["num_cells"] == 8 and "1024" not in out["best_beta_per_d"]
    for d, best in (("64", "twice"), ("256", "half")):
        row = out["best_beta_per_d"][d]
        assert row["knn"] == best
        assert row["backbone/rankme"] == {"pick": best, "matches_knn": True}
        assert row["projector/alpha_req"]["pick"] == best  # closest to 1
    assert out["agreement_over_complete_rows"]["backbone/lidar"] == "2/2"
    assert out["spearman_with_knn"]["backbone/rankme"]["within_d_rows"] == 2


def _load(name: str):
    path = _PATH.parent / f"{name}.py"
    sys.path.insert(0, str(_PATH.parent))
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pareto_frontier_keeps_only_undominated_points() -> None:
    pareto = _load("pareto")
    pts = [{"seconds": s, "error": e, "run": str(i)} for i, (s, e) in
           enumerate([(10, 70), (20, 60), (20, 65), (30, 62), (40, 50), (5, 80), (40, 55)])]
    front = pareto.pareto_front(pts)
    assert [(p["seconds"], p["error"]) for p in front] == [(5, 80), (10, 70), (20, 60), (40, 50)]
    # brute force: a point is on the front iff no other point is as fast and more accurate (or faster, as accurate)
    for p in pts:
        dominated = any(q is not p and q["seconds"] <= p["seconds"] and q["error"] <= p["error"]
                        and (q["seconds"], q["error"]) != (p["seconds"], p["error"]) for q in pts)
        assert (p in front) == (not dominated)


def test_pareto_collects_both_studies_on_one_clock() -> None:
    pareto = _load("pareto")
    beta = {"cells": {"d64_half": {"d": 64, "variant": "half", "beta": 0.01, "status": "done",
                                   "train_seconds": 180.0, "knn_top1": 40.0}}}
    views = {"runs": {"m4_f0.5": {"num_views": 4, "fraction": 0.5, "status": "done", "knn_random_init": 26.0,
                                  "points": [{"step": 10, "train_seconds": 50.0, "knn_top1": 30.0},
                                             {"step": 20, "train_seconds": 100.0, "knn_top1": 41.0}]}}}
    points = pareto.collect(beta, views)
    assert [(p["seconds"], p["error"], p["final"]) for p in points] == [(180.0, 60.0, True), (50.0, 70.0, False),
                                                                         (100.0, 59.0, True)]
    assert [p["seconds"] for p in pareto.pareto_front(points)] == [50.0, 100.0]
