"""The CPU learn check that gates GPU time (benchmarks/learn_check.py): every preset a GPU call trains has a passing
record of its current bytes in benchmarks/results/learn_check.json, and a missing, stale or failed record is refused
by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import learn_check  # noqa: E402


@pytest.mark.parametrize("name", sorted(learn_check.PRESETS))
def test_every_gpu_preset_learned_on_the_embedded_cut_as_it_is_now(name: str) -> None:
    """A preset edited since its CPU check, or one that did not beat its random init, fails here (and on the GPU)."""
    record = learn_check.require(name)
    assert record["knn_final"] > record["knn_random_init"] and record["steps"] > 0
    assert record["budget_cpu_seconds"] <= 600  # "within a few CPU-minutes"
    assert record["files"] == [str(p.relative_to(ROOT)) for p in learn_check.PRESETS[name]]


def write(path: Path, **record: object) -> Path:
    path.write_text(json.dumps({"checks": {"race_published": record}}))
    return path


def test_require_refuses_a_missing_a_stale_and_a_failed_record_by_name(tmp_path: Path) -> None:
    files = learn_check.PRESETS["race_published"]
    good = {"fingerprint": learn_check.fingerprint(files), "files": [str(p) for p in files], "learned": True,
            "knn_random_init": 26.3, "knn_final": 28.0}
    assert learn_check.require("race_published", write(tmp_path / "ok.json", **good))["knn_final"] == 28.0
    with pytest.raises(SystemExit, match="has no record of race_recommended"):
        learn_check.require("race_recommended", tmp_path / "ok.json")
    with pytest.raises(SystemExit, match="changed since their record"):
        learn_check.require("race_published", write(tmp_path / "stale.json", **{**good, "fingerprint": "0" * 64}))
    with pytest.raises(SystemExit, match="did not learn"):
        learn_check.require("race_published", write(tmp_path / "failed.json", **{**good, "learned": False}))
    with pytest.raises(SystemExit, match="no preset named"):
        learn_check.require("barlowtwins_resnet18_cifar10_classic", tmp_path / "ok.json")


def test_an_arm_is_its_shared_preset_plus_its_own_keys_as_flags(tmp_path: Path) -> None:
    shared, arm = tmp_path / "shared.yaml", tmp_path / "arm.yaml"
    shared.write_text("width: 64\nbatch_size: 128\n")
    arm.write_text("proj_dim: 8192\nbeta: 8.0e-4\nschedule_time: true\nlr_bias: null\n")
    assert learn_check.preset_args((shared, arm)) == ["--config", str(shared), "--proj_dim", "8192", "--beta",
                                                      "0.0008", "--schedule_time", "true", "--lr_bias", "none"]
    assert learn_check.preset_settings((shared, arm))["beta"] == 8e-4
    before = learn_check.fingerprint((shared, arm))
    arm.write_text("proj_dim: 8192\nbeta: 0.0051\nschedule_time: true\nlr_bias: null\n")
    assert learn_check.fingerprint((shared, arm)) != before


def test_the_check_keeps_the_recipe_and_scales_the_schedule_to_the_cut(tmp_path: Path) -> None:
    """Only the data, the width, the clock and the schedule's length change: the warm-up keeps its share."""
    cmd = learn_check.check_command(learn_check.PRESETS["race_published"], tmp_path, 600.0, smoke=False)
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--epochs"] == "1000" and flags["--width"] == "16" and flags["--optimizer"] == "lars"
    assert flags["--schedule_time"] == "true" and flags["--time_budget"] == "600" and flags["--clock"] == "process"
