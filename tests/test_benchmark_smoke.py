"""The benchmarks added with the network race and the channels_last study run end to end in smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_channels_last_safety_finds_the_narrow_strided_1x1_fault_or_none(tmp_path: Path) -> None:
    out = tmp_path / "cls.json"
    done = subprocess.run([sys.executable, "benchmarks/channels_last_safety.py", "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["cases"]) == 4 and result["cpu"] and result["torch"]
    # whatever this CPU does, every fault it shows lies inside the hazard rule the library routes around
    assert result["faulty_all_strided_1x1_below_8_channels"] is True
    exact = {(c["in_channels"], c["kernel"], c["stride"]) for c in result["cases"] if c["outcome"] == "exact"}
    assert {(8, 1, 2), (4, 3, 2), (4, 1, 1)} <= exact


def test_network_race_smoke_runs_candidates_then_the_winner_at_4_views(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/studies/network_race.py", "run", "--smoke", "--root",
                           str(tmp_path / "runs"), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "network_race.json").read_text())
    assert len(result["curves_cpu_seconds_vs_knn"]) == 3 and all(result["finished"].values())
    assert result["winner"] in {"resnet18 small stem w32", "resnet18 small stem w64"}  # the smoke's two
    assert f"{result['winner']} 4 views" in result["steps"]
    assert (tmp_path / "out" / "network_race.png").stat().st_size > 1000
