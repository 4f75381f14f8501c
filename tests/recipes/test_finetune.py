"""recipes/finetune.py: a tiny backbone fine-tunes for short epochs, reports metrics, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import mvssl_hub
from mvssl_hub import build_backbone
from mvssl_hub.errors import ConfigError
from mvssl_hub.hub.format import save_pretrained

from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"


@pytest.fixture(scope="module")
def recipe():
    if not (DATA / "train.parquet").exists():
        pytest.skip("embedded CIFAR-10 subset missing")
    return load_recipe("finetune", "mvssl_finetune_recipe")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    bb = build_backbone("resnet18", small_images=True, width=8)
    return save_pretrained(bb, tmp_path / "pretrained" / "export", transforms={"preset": "cifar10", "eval_size": 32})


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    # 64 images, batch 32: 2 steps per epoch, 2 epochs; 48 test images.
    return ["--model", str(model), "--data", str(DATA), "--limit", "64", "--eval_limit", "48", "--batch_size", "32",
            "--epochs", "2", "--precision", "fp32", "--lr_backbone", "1e-3", "--lr_head", "1e-2",
            "--warmup_epochs", "0.5", "--output_dir", str(out), "--progress", "false", *extra]


def test_finetune_runs_reports_and_resumes_exactly(recipe, checkpoint: Path, tmp_path: Path) -> None:
    source_config, source_card = (checkpoint / "config.json").read_bytes(), (checkpoint / "README.md").read_bytes()
    full = recipe.main(_args(checkpoint.parent, tmp_path / "full"))
    hist = full["history"]
    assert [h["step"] for h in hist] == [2, 4] and [h["epoch"] for h in hist] == [1, 2]
    for h in hist:
        assert 0 <= h["test_top1"] <= h["test_top5"] <= 100 and h["train_loss"] > 0
    # the classifier learns something on its own training batches within 4 steps
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]

    # final metrics: results JSON and the export's config.json; the source checkpoint is left untouched
    saved = json.loads((tmp_path / "full" / "finetune_results.json").read_text())
    assert saved["records"] == full["records"]
    assert (checkpoint / "config.json").read_bytes() == source_config and (checkpoint / "README.md").read_bytes() == source_card
    export_cfg = json.loads((tmp_path / "full" / "export" / "config.json").read_text())
    recs = {r["metric"]: r for r in export_cfg["metrics"]}
    assert set(recs) == {"top1", "top5"} and all(r["task"] == "finetune" for r in recs.values())
    assert recs["top1"]["value"] == pytest.approx(hist[-1]["test_top1"], abs=1e-3)
    assert recs["top1"]["split"] == "test" and recs["top1"]["dataset"] == DATA.name  # a name, not a local path
    assert export_cfg["base_model"] == "pretrained" and export_cfg["num_classes"] == 10
    head = load_file(str(tmp_path / "full" / "export" / "head.safetensors"))
    assert head["weight"].shape == (10, 64) and head["bias"].shape == (10,)
    # the documented call loads the classifier: images -> logits, equal to backbone + head by hand
    classifier = mvssl_hub.from_pretrained(tmp_path / "full" / "export")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.linear(classifier.backbone(x), head["weight"], head["bias"])
    assert classifier(x).shape == (2, 10) and torch.allclose(classifier(x), expected, atol=1e-5)
    card = ModelCard.load(tmp_path / "full" / "export" / "README.md")
    assert card.data.base_model == "pretrained"
    # the card describes a classifier: its task, its output shape and the loader that returns it
    assert card.data.pipeline_tag == "image-classification" and "image-feature-extraction" not in card.data.tags
    assert "logits `(N, 10)`" in card.text and "classifier = mvssl_hub.from_pretrained(" in card.text
    assert "get_model(" not in card.text and "projector" not in card.text.lower()
    # class names and transforms travel with the export: one line classifies one PIL image
    from PIL import Image

    names = export_cfg["class_names"]
    assert len(names) == 10 and names[0] == "airplane" and "airplane, automobile" in card.text
    image = Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy())
    assert classifier.predict(image) in names
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    expected = [names[i] for i in classifier(classifier.transforms(batch)).argmax(1).tolist()]
    assert classifier.predict(batch) == expected
    from mvssl_hub.errors import CheckpointError
    from mvssl_hub.hub.schema import validate_config

    with pytest.raises(CheckpointError, match="class_names"):
        validate_config({**export_cfg, "class_names": names[:9]})  # 9 names for 10 classes

    # interrupted after epoch 1, then resumed: the same trajectory and the same final weights
    # killed during step 3 (after epoch 1's run state), then resumed
    real_loss, calls = torch.nn.functional.cross_entropy, {"n": 0}

    def dies_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed (simulated)")
        return real_loss(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "cross_entropy", dies_at_step_3)
        with pytest.raises(KeyboardInterrupt):
            recipe.main(_args(checkpoint.parent, tmp_path / "split"))
    resumed = recipe.main(_args(checkpoint.parent, tmp_path / "split", "--resume"))
    assert resumed["steps"] == 4
    assert [h["step"] for h in resumed["history"]] == [2, 4]
    for a, b in zip(resumed["history"], hist, strict=True):
        assert a["test_top1"] == b["test_top1"] and a["test_top5"] == b["test_top5"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    w_full = load_file(str(tmp_path / "full" / "export" / "model.safetensors"))
    w_resumed = load_file(str(tmp_path / "split" / "export" / "model.safetensors"))
    for key in w_full:
        torch.testing.assert_close(w_resumed[key], w_full[key], rtol=1e-5, atol=1e-6)
    # the backbone really changed during fine-tuning
    w_start = load_file(str(checkpoint / "model.safetensors"))
    assert not torch.equal(w_full["layer1.0.conv1.weight"], w_start["layer1.0.conv1.weight"])


def test_finetune_refuses_resume_with_changed_settings_and_bad_config(recipe, checkpoint: Path, tmp_path: Path) -> None:
    recipe.main(_args(checkpoint, tmp_path / "run", "--max_steps", "1", "--epochs", "1", "--export", "false"))
    with pytest.raises(ConfigError, match="lr_head"):
        recipe.main(_args(checkpoint, tmp_path / "run", "--resume", "--epochs", "1", "--lr_head", "0.5"))
    with pytest.raises(ConfigError, match="already holds run states"):
        recipe.main(_args(checkpoint, tmp_path / "run", "--epochs", "1"))
    with pytest.raises(ConfigError, match="'model'"):
        recipe.main(["--data", str(DATA)])
    with pytest.raises(ConfigError, match="label_smoothing"):
        recipe.main(_args(checkpoint, tmp_path / "x", "--label_smoothing", "1.5"))


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    from mvssl_hub.train.schedule import lr_factor

    f = [lr_factor(s, 20, warmup_steps=4) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[3:], f[4:], strict=False)) and f[-1] < 0.02
    assert lr_factor(20, 20, warmup_steps=4) == 0.0
    assert [lr_factor(s, 20, warmup_steps=2, schedule="constant") for s in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 1.0]


def test_a_short_finetune_gets_a_whole_schedule(recipe, checkpoint: Path, tmp_path: Path) -> None:
    """--max_steps shortens the schedule: warm-up and cosine decay fit in the run, and it still exports."""
    short = recipe.main(_args(checkpoint.parent, tmp_path / "short", "--epochs", "30", "--max_steps", "3",
                              "--warmup_epochs", "10"))
    assert short["steps"] == 3 and Path(short["export"], "head.safetensors").is_file()
    lrs = [json.loads(line).get("lr_head") for line in (tmp_path / "short" / "logs" / "finetune.jsonl").read_text()
           .splitlines()]
    lrs = [x for x in lrs if x is not None]
    assert lrs and lrs[-1] < 1e-2 * 0.5  # past the peak and decaying at the end of a 3-step run


def test_a_time_budget_ends_the_run_and_its_schedule_together(recipe, checkpoint: Path, tmp_path: Path) -> None:
    """--time_budget: the run stops when the budget is spent, with a test and an export, its learning rate decayed."""
    assert recipe.schedule_position(5, 100, elapsed=1.0, time_budget=None) == 5
    assert recipe.schedule_position(5, 100, elapsed=1.0, time_budget=4.0) == 25.0  # a quarter of the time
    assert recipe.schedule_position(50, 100, elapsed=1.0, time_budget=4.0) == 50  # steps ahead of the clock
    assert recipe.schedule_position(5, 100, elapsed=9.0, time_budget=4.0) == 100.0  # never past the end
    run = recipe.main(_args(checkpoint.parent, tmp_path / "timed", "--epochs", "1000", "--time_budget", "1",
                            "--warmup_epochs", "1"))
    assert 1 <= run["steps"] < 2000 and run["train_seconds"] >= 1.0
    assert Path(run["export"], "head.safetensors").is_file() and run["records"]
    last = run["history"][-1]
    assert last["step"] == run["steps"] and last["lr_head"] == 0.0  # the cosine reached its end with the budget
    with pytest.raises(ConfigError, match="time_budget"):
        recipe.main(_args(checkpoint.parent, tmp_path / "bad", "--time_budget", "0"))


def test_the_head_starts_as_a_linear_probe_on_the_frozen_features(recipe, checkpoint: Path, tmp_path: Path) -> None:
    """LP-FT: with learning rates 0 the exported head is exactly the linear probe fitted on the same features."""
    from mvssl_hub.data.splits import load_split
    from mvssl_hub.eval.probes import extract_features, linear_probe

    run = recipe.main(_args(checkpoint.parent, tmp_path / "lpft", "--max_steps", "1", "--lr_backbone", "0",
                            "--lr_head", "0", "--head_probe_epochs", "5"))
    classifier = mvssl_hub.from_pretrained(run["export"])
    backbone = mvssl_hub.from_pretrained(checkpoint)
    train, test = load_split(str(DATA), "train", limit=64), load_split(str(DATA), "test", limit=48)
    feats = [extract_features(backbone, split.images, classifier.transforms, batch_size=512, device="cpu",
                              bf16=False, channels_last=True) for split in (train, test)]
    probe = linear_probe(feats[0], train.labels, feats[1], test.labels, epochs=5, num_classes=10, device="cpu",
                         seed=0, return_head=True)
    assert torch.allclose(classifier.head.weight, probe["head"].weight, atol=1e-5)
    assert torch.allclose(classifier.head.bias, probe["head"].bias, atol=1e-5)
    assert run["probe_top1"] == pytest.approx(probe["top1"])
    assert "linear probe on the frozen features" in run["records"][0]["protocol"]
    # --head_init random keeps nn.Linear's initialisation: no probe is fitted
    plain = recipe.main(_args(checkpoint.parent, tmp_path / "plain", "--max_steps", "1", "--head_init", "random"))
    assert plain["probe_top1"] is None and "new linear head" in plain["records"][0]["protocol"]


def test_a_non_finite_step_is_skipped_and_too_many_stop_the_run(recipe, checkpoint: Path, tmp_path: Path) -> None:
    """The fine-tune's step is guarded as pretraining's is: a batch whose loss is NaN changes no weight and no
    BatchNorm statistic; max_nan_steps of them in a row stop the run, naming the last good run state."""
    real_loss, calls = torch.nn.functional.cross_entropy, {"n": 0, "nan_from": 1}

    def nan_loss(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] >= calls["nan_from"] else value

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "cross_entropy", nan_loss)
        run = recipe.main(_args(checkpoint.parent, tmp_path / "nan", "--max_steps", "1", "--head_init", "random"))
        assert run["steps"] == 1 and run["nan_skipped"] == 1
        before, after = (load_file(str(folder / "model.safetensors")) for folder in (checkpoint, tmp_path / "nan" / "export"))
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # BN stats too
        calls.update(n=0, nan_from=2)  # step 1 trains, then every loss is NaN
        with pytest.raises(recipe.NonFiniteLossError, match=r"2 consecutive non-finite losses.*run_states/step-00000002"):
            recipe.main(_args(checkpoint.parent, tmp_path / "stop", "--head_init", "random", "--max_nan_steps", "2"))
