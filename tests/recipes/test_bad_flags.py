"""Every bad flag fails fast with one line naming itself (exit code 2), before any data or model is built."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from mvssl_hub.errors import ConfigError
from mvssl_hub.train.config import Check

from conftest import load_recipe

pytest.importorskip("accelerate")
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
ROOT = Path(__file__).resolve().parents[2]
DEMO = ["--config", str(ROOT / "recipes" / "configs" / "demo.yaml"), "--max_steps", "1", "--progress", "false"]
pretrain = load_recipe("pretrain", "bad_flags_pretrain")
finetune = load_recipe("finetune", "bad_flags_finetune")
evaluate = load_recipe("evaluate", "bad_flags_evaluate")


@pytest.mark.parametrize(("flags", "message"), [
    (["--width", "100000"], r"'width' = 100000: must be in 1\.\.1024"),
    (["--width", "1024"], r"width 1024.*GiB before activations"),  # in range, but not in this machine's memory
    (["--proj_dim", "60000"], r"proj_dim 60000.*GiB"),
    (["--num_views", "100000"], r"'num_views' = 100000: must be <= 256"),
    (["--image_size", "100000"], r"'image_size' = 100000"),
    (["--weight_decay", "inf"], r"'weight_decay' = inf: must be a finite number"),
    (["--knn_temperature", "inf"], r"'knn_temperature' = inf: must be a finite number"),
    (["--lr", "nan"], r"'lr' = nan: must be a finite number"),
    (["--data", "./no/such/data"], r"'data' = './no/such/data'.*no such file or folder"),
    (["--data", "a/b/c"], r"'data' = 'a/b/c'.*no such file or folder"),
])
def test_pretrain_refuses(flags: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        pretrain.main([*DEMO, "--output_dir", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run" / "run_states").exists()


def test_an_output_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigError, match=r"'output_dir' = .*taken'.*is a file, not a folder"):
        pretrain.main([*DEMO, "--output_dir", str(tmp_path / "taken")])


@pytest.mark.parametrize("recipe", ["finetune", "evaluate"])
def test_a_missing_model_folder_is_named_without_a_hub_request(recipe: str, tmp_path: Path) -> None:
    main = {"finetune": finetune, "evaluate": evaluate}[recipe].main
    with pytest.raises(ConfigError, match=r"'model' = '\./runs/nope'.*no such folder"):
        main(["./runs/nope", "--output_dir", str(tmp_path / "ft")] if recipe == "finetune" else ["./runs/nope"])


def test_finetune_refuses_an_infinite_warmup() -> None:
    with pytest.raises(ConfigError, match=r"'warmup_epochs' = inf: must be a finite number"):
        finetune.main(["some/model", "--warmup_epochs", "inf"])


def test_the_command_line_gets_one_error_line_and_exit_code_2() -> None:
    done = subprocess.run([sys.executable, "recipes/pretrain.py", *DEMO, "--width", "100000"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: config key 'width' = 100000: must be in 1..1024 (64 is torchvision's network)"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "-1"], r"'lr' = -1.0: must be > 0"),
    (["--weight_decay", "-1"], r"'weight_decay' = -1.0: must be >= 0"),
    (["--label_smoothing", "5"], r"'label_smoothing' = 5.0: must be in \[0, 1\)"),
    (["--k", "0"], r"'k' = 0: must be >= 1"),
    (["--temperature", "0"], r"'temperature' = 0.0: must be > 0"),
    (["--epochs", "0"], r"'epochs' = 0: must be >= 1"),
    (["--views", "0"], r"'views' = 0: must be >= 1"),
    (["--probe_batch_size", "0"], r"'probe_batch_size' = 0: must be >= 1"),
    (["--fraction", "1.5"], r"'fraction' = 1.5: must be in \(0, 1\]"),
    (["--image_size", "100000"], r"'image_size' = 100000: must be <= 8192"),
    (["--monitor_images", "4"], r"'monitor_images' = 4: must be >= 8"),
])
def test_evaluate_refuses(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):  # before the model is looked for
        evaluate.main(["./runs/nope", *flags])


def test_evaluate_gets_one_error_line_too() -> None:
    done = subprocess.run([sys.executable, "recipes/evaluate.py", "runs/nope", "--lr", "-1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["error: config key 'lr' = -1.0: must be > 0"]


RECIPE_CONFIGS = {"pretrain": "PretrainConfig", "finetune": "FinetuneConfig", "evaluate": "EvaluateConfig",
                  "publish": "PublishConfig", "campaign": "CampaignConfig", "release_zoo": "ReleaseConfig"}
TOOLS = {"campaign", "release_zoo"}  # the maintainers' tools (tools/), which take the recipes' command line
ANY_VALUE = {"seed", "beta"}  # every integer is a seed; beta is a number or "auto" (checked in __post_init__)


@pytest.mark.parametrize("name", sorted(RECIPE_CONFIGS))
def test_every_numeric_flag_of_every_recipe_declares_its_range(name: str) -> None:
    module = importlib.import_module(f"tools.{name}") if name in TOOLS else load_recipe(name, f"ranges_{name}")
    config = getattr(module, RECIPE_CONFIGS[name])
    hints = typing.get_type_hints(config, include_extras=True)
    unchecked = []
    for field in dataclasses.fields(config):
        hint = hints[field.name]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        numeric = {int, float} & set(typing.get_args(base) or (base,))
        rules = [r for r in getattr(hint, "__metadata__", ()) if isinstance(r, Check)]
        if numeric and not rules and field.name not in ANY_VALUE:
            unchecked.append(field.name)
    folder = "tools" if name in TOOLS else "recipes"
    assert unchecked == [], f"{folder}/{name}.py: numeric flags without a declared range: {unchecked}"
