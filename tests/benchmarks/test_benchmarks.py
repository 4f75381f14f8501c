"""Every script in benchmarks/ and benchmarks/studies/ runs in smoke mode and writes a result in the harness's
envelope, to a temporary folder (never benchmarks/results/): a rename or a broken import fails here, at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from harness import RESULTS, check_envelope  # noqa: E402

NOT_SCRIPTS = {"harness.py": "the harness itself (a library)",
               "readme_tables.py": "not a measurement: tests/benchmarks/test_readme_tables.py runs its --check",
               "zoo_table.py": "not a measurement: renders mvssl_hub/zoo_weights.json (tests/benchmarks/test_readme_tables.py)",
               "independent_knn.py": "no harness (it imports nothing of mvssl_hub): tests/benchmarks/test_independent_knn.py runs it",
               "fair_race.py": "three pretraining runs: tests/tools/test_gpu_campaign.py runs its smoke through the GPU call"}
ACTION = {"network_race.py": ["run"], "time_to_accuracy.py": ["run"], "recipe_race.py": ["analyze"]}  # their command line starts with an action
SCRIPTS = sorted(p.relative_to(BENCH).as_posix() for p in [*BENCH.glob("*.py"), *BENCH.glob("studies/*.py")]
                 if p.name not in NOT_SCRIPTS)


def channels_last_safety(result: dict, out: Path) -> None:
    assert len(result["cases"]) == 4
    # whatever this CPU does, every fault it shows lies inside the hazard rule the library routes around
    assert result["faulty_all_inside_hazard_rule"] is True
    exact = {(c["in_channels"], c["kernel"], c["stride"]) for c in result["cases"] if c["outcome"] == "exact"}
    assert {(16, 1, 2), (4, 3, 2), (4, 1, 1)} <= exact


def network_race(result: dict, out: Path) -> None:  # two candidates, then the winner again at 4 views
    assert len(result["curves_cpu_seconds_vs_knn"]) == 3 and all(result["finished"].values())
    assert result["winner"] in {"resnet18 small stem w32", "resnet18 small stem w64"}
    assert f"{result['winner']} 4 views" in result["steps"]
    assert out.with_suffix(".png").stat().st_size > 1000


def pipeline(result: dict, out: Path) -> None:  # the recipe's own step, the same on pre-made views, the backbone
    row = result["results"][0]
    assert set(row["median_seconds_per_step"]) == {"recipe", "premade", "backbone"}
    assert all(s > 0 for s in row["median_seconds_per_step"].values())
    assert all(len(v) == result["settings"]["repeats"] == 2 for v in row["seconds_per_step"].values())
    assert row["views_per_s"]["recipe"] * row["median_seconds_per_step"]["recipe"] == pytest.approx(2 * 16)
    assert result["settings"]["width"] == 4 and not any(str(ROOT) in a for a in result["settings"]["recipe_args"])


def data_scale(result: dict, out: Path) -> None:  # every path read the embedded cut, and the plot was drawn
    runs = result["runs"]["64"]
    assert set(runs) == {"cold_cache_build", "full_size", "in_memory", "cached", "streaming"}
    assert all(r["first_batch"] == [32, 3, 16, 16] for r in runs.values())
    assert out.with_suffix(".png").stat().st_size > 1000


def demo_gain(result: dict, out: Path) -> None:
    assert [r["path"] for r in result["runs"]] == ["native"] and result["runs"][0]["steps"] == 2


def monitor_overhead(result: dict, out: Path) -> None:  # the A/B, then the recipe mode beside it
    assert result["median_step_s"] > 0 and result["monitor"]["32"]["median_total_s"] > 0
    recipe = json.loads(out.with_name(f"{out.stem}_recipe.json").read_text())
    check_envelope(recipe, "monitor_overhead")
    assert recipe["monitor_calls_during_training"] == 1


def recipe_race(result: dict, out: Path) -> None:  # two tiny campaigns of the real presets, then the ratios
    assert set(result["curves"]) == {"barlowtwins_resnet18_cifar10", "barlowtwins_resnet18_cifar10_classic"}
    assert result["rows"] and all(r["ratio"] is None or r["ratio"] >= 0 for r in result["rows"])
    assert result["reached"] == sum(r["ratio"] is not None for r in result["rows"])
    assert out.with_suffix(".png").stat().st_size > 1000


CHECKS = {"recipe_race": recipe_race, "channels_last_safety": channels_last_safety, "network_race": network_race, "data_scale": data_scale,
          "demo_gain": demo_gain, "monitor_overhead": monitor_overhead, "pipeline": pipeline}


def results_snapshot() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in RESULTS.rglob("*") if p.is_file()}


def test_every_script_is_listed() -> None:
    assert "studies/network_race.py" in SCRIPTS and "augment_speed.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_writes_an_envelope(script: str, tmp_path: Path) -> None:
    name = Path(script).stem
    before = results_snapshot()
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MVSSL_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(BENCH / script), *ACTION.get(Path(script).name, []), "--smoke",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    result = json.loads(out.read_text())
    check_envelope(result, name)
    CHECKS.get(name, lambda *_: None)(result, out)
    assert results_snapshot() == before, "a smoke run wrote into benchmarks/results/"
