"""benchmarks/studies/fair_race.py's arithmetic: equal budgets that fit the deadline, and the time ratios."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks" / "studies"), str(ROOT / "benchmarks")]

import fair_race  # noqa: E402


def test_every_arm_gets_the_same_budget_and_all_three_fit_the_deadline() -> None:
    assert fair_race.equal_budget(40.0, deadline=1e9) == 40.0  # the asked budget when there is time
    fitted = fair_race.equal_budget(40.0, deadline=195.0)
    assert fitted < 40.0 and 3 * (fitted + fair_race.ARM_OVERHEAD) <= 195.0 + 1e-9
    assert fair_race.equal_budget(40.0, deadline=10.0) == 1.0  # never zero: the arms still run and say so


def test_ratios_count_only_points_after_the_warm_up_and_interpolate_the_recommended_curve() -> None:
    recommended = [(0.0, 30.0), (10.0, 40.0), (20.0, 50.0)]
    baseline = [(0.0, 30.0), (5.0, 31.0), (10.0, 35.0), (20.0, 45.0), (30.0, 60.0)]
    rows = fair_race.ratios(recommended, baseline, after=5.0, until=30.0)
    assert [r["seconds"] for r in rows] == [10.0, 20.0, 30.0]  # 5 s is the warm-up's end: left out
    assert rows[0]["recommended_seconds_to_reach"] == 5.0 and rows[0]["ratio"] == 0.5  # 35% halfway to 40%
    assert rows[1]["recommended_seconds_to_reach"] == 15.0 and rows[1]["ratio"] == 0.75
    assert rows[2]["recommended_seconds_to_reach"] is None and rows[2]["ratio"] is None  # 60% never reached
