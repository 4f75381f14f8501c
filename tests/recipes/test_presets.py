"""The STL-10 and ImageNet-100 presets run end to end on generated stand-ins: cached, and streaming."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import RECIPES, load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: _standins

from _standins import imagenet100_standin, stl10_standin

pytest.importorskip("accelerate")

recipe = load_recipe("pretrain", "pretrain_recipe_presets")
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")



def tiny(config: str, data: Path, out: Path, *extra: str) -> list[str]:
    """The preset as shipped, on the stand-in: width 8, 32 training images, batch 16, 2 steps, fp32.

    Later flags override earlier ones: the 128 px presets pass ``--batch_size 8`` to halve the compute."""
    return ["--config", str(RECIPES / "configs" / config), "--data", str(data), "--eval_data", str(data),
            "--width", "8", "--limit", "32", "--batch_size", "16", "--max_steps", "2", "--eval_limit", "20",
            "--knn_k", "5", "--precision", "fp32", "--output_dir", str(out), "--progress", "false",
            "--run_state_every", "0", "--knn_random_init", "false", *extra]


def check_run(summary: dict, out: Path, size: int, data: Path, knn: bool = True) -> dict:
    assert summary["state"]["global_step"] == 2 and summary["stopped_by"] == "completed"
    assert (out / "run_states" / "step-00000002" / "COMPLETE.json").is_file()
    cfg = json.loads((out / "export" / "config.json").read_text())
    assert cfg["dataset"]["id"] == data.name and (out / "export" / "model.safetensors").is_file()  # no local path
    if knn:
        (metric,) = cfg["metrics"]
        assert 0 <= metric["value"] <= 100
    assert cfg["transforms"]["eval_size"] == size
    return cfg


def test_stl10_preset_with_the_resized_cache(tmp_path: Path) -> None:
    data = stl10_standin(tmp_path / "stl10")
    cache = tmp_path / "cache"
    summary = recipe.main(tiny("stl10_bt_d256_m4.yaml", data, tmp_path / "run", "--cache_dir", str(cache)))
    cfg = check_run(summary, tmp_path / "run", 96, data)
    assert cfg["train_config"]["arch"] == "resnet50" and cfg["train_config"]["split"] == "unlabeled"
    assert len(list(cache.glob("*.u8"))) == 3  # unlabeled (train), train (kNN bank), test (kNN queries)


def test_imagenet100_preset_mixed_size_jpegs(tmp_path: Path) -> None:
    data = imagenet100_standin(tmp_path / "in100")
    summary = recipe.main(tiny("imagenet100_bt_d256_m4.yaml", data, tmp_path / "run", "--decode_workers", "2",
                               "--batch_size", "8"))
    cfg = check_run(summary, tmp_path / "run", 128, data)
    assert cfg["train_config"]["image_size"] == 146 and cfg["transforms"]["eval_resize"] == 146


def test_imagenet100_preset_streaming(tmp_path: Path) -> None:
    data = imagenet100_standin(tmp_path / "in100")
    summary = recipe.main(tiny("imagenet100_vicreg_d256_m4.yaml", data, tmp_path / "run", "--streaming", "true",
                               "--stream_workers", "2", "--stream_window", "32",
                               "--batch_size", "8", "--eval_split", ""))
    cfg = check_run(summary, tmp_path / "run", 128, data, knn=False)
    assert cfg["train_config"]["streaming"] is True and cfg["train_config"]["method"] == "vicreg"
