"""Every bad flag fails fast with one line naming itself (exit code 2), before any data or model is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mvssl_hub.errors import ConfigError

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
    assert not (tmp_path / "run" / "checkpoints").exists()


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
