"""The pretraining recipe in-process on tiny real data: run states and the export (the checkpoint), bitwise resume,
crash-safe saves, NaN skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import load_recipe, reset_accelerate_state

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"

pytest.importorskip("accelerate")


recipe = load_recipe("pretrain", "pretrain_recipe_run")




def tiny(out: Path, *extra: str) -> list[str]:
    """64 images, batch 16 (4 steps per epoch), width-8 ResNet-18, 32-d projector, 3 views, fp32."""
    return [
        "--data", str(DATA), "--limit", "64", "--eval_limit", "60", "--knn_k", "10",
        "--width", "8", "--proj_dim", "32", "--num_views", "3", "--batch_size", "16", "--epochs", "10",
        "--precision", "fp32", "--output_dir", str(out), "--progress", "false", "--log_every", "1",
        "--run_state_every", "0", *extra,
    ]


def weights_and_optimizer(run_state: Path) -> tuple[dict[str, torch.Tensor], dict]:
    weights = load_file(str(run_state / "model.safetensors"))
    optim = torch.load(run_state / "optimizer.bin", weights_only=True)  # our own file; no arbitrary unpickling
    return weights, optim


def assert_same_state(a: Path, b: Path) -> None:
    wa, oa = weights_and_optimizer(a)
    wb, ob = weights_and_optimizer(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"weight {k} differs"
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for name, value in oa["state"][i].items():
            assert torch.equal(value, ob["state"][i][name]), f"optimizer state {i}.{name} differs"
    sa = json.loads((a / "training_state.json").read_text())
    sb = json.loads((b / "training_state.json").read_text())
    for key in ("global_step", "epoch", "step_in_epoch", "images_seen", "nan_skipped"):
        assert sa[key] == sb[key], key


def test_a_few_steps_write_run_states_and_a_loadable_checkpoint(tmp_path: Path) -> None:
    from mvssl_hub.hub.loading import from_pretrained

    out = tmp_path / "run"
    summary = recipe.main(tiny(out, "--max_steps", "3", "--run_state_every", "2"))
    state = summary["state"]
    assert state["global_step"] == 3 and state["epoch"] == 0 and state["step_in_epoch"] == 3
    run_states = sorted(p.name for p in (out / "run_states").iterdir())
    assert run_states == ["step-00000002", "step-00000003"]
    last = out / "run_states" / "step-00000003"
    marker = json.loads((last / "COMPLETE.json").read_text())
    assert marker["step"] == 3 and "model.safetensors" in marker["files"] and "run_config.json" in marker["files"]
    saved_cfg = json.loads((last / "run_config.json").read_text())
    assert saved_cfg["width"] == 8 and saved_cfg["resolved_beta"] > 0 and saved_cfg["per_process_batch"] == 16
    # the export is a hub checkpoint whose weights are the trained ones
    backbone = from_pretrained(str(out / "export"))
    trained = load_file(str(last / "model.safetensors"))
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, trained[f"backbone.{k}"]), k
    cfg = json.loads((out / "export" / "config.json").read_text())
    (knn,) = cfg["metrics"]
    assert knn["task"] == "knn" and 0 <= knn["value"] <= 100 and knn["random_init"] is not None
    assert cfg["training"]["steps"] == 3 and cfg["training"]["images_per_s"] > 0
    # the card shows the command as typed
    assert cfg["train_config"]["command"].startswith("accelerate launch recipes/pretrain.py ")
    assert "--max_steps 3 --run_state_every 2" in cfg["train_config"]["command"]
    assert cfg["train_config"]["command"] in (out / "export" / "README.md").read_text()
    assert (out / "export" / "projector.safetensors").is_file()
    # the tracker wrote one JSON line per logged step
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(r["images_per_s"] > 0 and r["lr"] == pytest.approx(1e-3) for r in logged)
    # each monitor call is timed (random init + final), so its overhead can be read from one run
    timed = [r["monitor_seconds"] for r in lines if "monitor_seconds" in r]
    assert len(timed) == 2 and all(t > 0 for t in timed)
    assert state["monitor_seconds"] == pytest.approx(sum(timed))
    # running again into the same folder without --resume is refused (no silent overwrite)
    with pytest.raises(recipe.ConfigError, match="already holds run states"):
        recipe.main(tiny(out, "--max_steps", "1"))


def test_monitors_adapt_their_cadence_to_stay_within_their_share(tmp_path: Path) -> None:
    # the rule: run while (spent so far + the last run's cost) <= share x training time
    assert recipe.monitors_affordable(spent=1.0, last_cost=0.5, train_seconds=30.0, max_share=0.05)
    assert not recipe.monitors_affordable(spent=1.0, last_cost=0.6, train_seconds=30.0, max_share=0.05)
    assert not recipe.monitors_affordable(spent=0.0, last_cost=0.1, train_seconds=0.0, max_share=1.0)
    # kNN after every step of a run far too short to afford the monitors between its first and last point:
    # the kNN curve keeps every point, the monitors run at random init and at the end only, and the run says so
    out = tmp_path / "run"
    summary = recipe.main(tiny(out, "--max_steps", "3", "--knn_every", "1"))
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "knn_top1" in r] == [1, 2, 3]
    assert len([r for r in lines if "monitor_seconds" in r]) == 2
    assert summary["state"]["monitors_skipped"] == 2
    # a share outside (0, 1] is refused by name
    with pytest.raises(recipe.ConfigError, match="monitors_max_share"):
        recipe.main(tiny(tmp_path / "bad", "--monitors_max_share", "0"))


def test_interrupt_and_resume_is_bitwise_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   restore_backends) -> None:
    # --deterministic: on a GPU, cuDNN autotuning and non-deterministic kernels would break bitwise equality
    full = recipe.main(tiny(tmp_path / "full", "--max_steps", "7", "--deterministic"))

    # Crash while taking step 6 (index 5); the last run state is step 3 (mid-epoch: epoch 0, step 3 of 4).
    import mvssl_hub.data.sampling as sampling

    real_slice = sampling.process_slice
    calls = {"n": 0}

    def crashing_slice(batch, rank, world):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated interruption")
        return real_slice(batch, rank, world)

    monkeypatch.setattr(sampling, "process_slice", crashing_slice)
    with pytest.raises(KeyboardInterrupt):
        recipe.main(tiny(tmp_path / "cut", "--max_steps", "7", "--run_state_every", "3", "--deterministic"))
    monkeypatch.setattr(sampling, "process_slice", real_slice)
    reset_accelerate_state()
    assert sorted(p.name for p in (tmp_path / "cut" / "run_states").iterdir()) == ["step-00000003"]
    resumed = recipe.main(tiny(tmp_path / "cut", "--max_steps", "7", "--run_state_every", "3", "--resume",
                               "--deterministic"))
    assert torch.are_deterministic_algorithms_enabled()
    assert resumed["state"]["global_step"] == 7
    assert_same_state(full["run_state"], resumed["run_state"])
    # the exported backbones are identical too
    a = load_file(str(full["export"] / "model.safetensors"))
    b = load_file(str(resumed["export"] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_of_the_old_layout_resumes_bitwise_with_the_old_flag_names(tmp_path: Path) -> None:
    """Before mvssl-hub 0.2.0 a run folder kept its run states in checkpoints/, their run_config.json spoke of
    save_every and keep_checkpoints, and so did the command line: such a run resumes bit for bit, its run states
    moved to run_states/ (one rename), and the old flags still work, with a warning naming the new ones."""
    import hashlib

    quick = ["--eval_split", "", "--knn_random_init", "false", "--export", "false"]
    full = recipe.main(tiny(tmp_path / "full", "--max_steps", "5", *quick))
    reset_accelerate_state()
    old_flags = ["--save_every", "1", "--keep_checkpoints", "3"]
    args = tiny(tmp_path / "old", *quick)
    del args[args.index("--run_state_every"):args.index("--run_state_every") + 2]  # the old names only
    with pytest.warns(FutureWarning, match="'save_every' is now 'run_state_every'"):
        recipe.main([*args, "--max_steps", "2", *old_flags])
    old = tmp_path / "old" / "checkpoints"
    (tmp_path / "old" / "run_states").rename(old)  # laid out, and written, as mvssl-hub 0.1 did
    for folder in old.glob("step-*"):
        saved = json.loads((folder / "run_config.json").read_text())
        for new_key, old_key in (("run_state_every", "save_every"), ("run_state_every_seconds", "save_every_seconds"),
                                 ("keep_run_states", "keep_checkpoints")):
            saved[old_key] = saved.pop(new_key)
        (folder / "run_config.json").write_text(json.dumps(saved))
        marker = json.loads((folder / "COMPLETE.json").read_text())
        marker["files"]["run_config.json"] = hashlib.sha256((folder / "run_config.json").read_bytes()).hexdigest()
        (folder / "COMPLETE.json").write_text(json.dumps(marker))
    reset_accelerate_state()
    with pytest.warns(FutureWarning, match="'keep_checkpoints' is now 'keep_run_states'"):
        resumed = recipe.main([*args, "--max_steps", "5", "--resume", *old_flags])
    assert not old.exists() and sorted(p.name for p in (tmp_path / "old" / "run_states").iterdir()) == [
        "step-00000003", "step-00000004", "step-00000005"]  # resumed from step 2 (keep 3), in the new folder
    assert resumed["state"]["global_step"] == 5
    assert_same_state(full["run_state"], resumed["run_state"])


def test_crash_mid_save_keeps_the_previous_run_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    out = tmp_path / "run"
    real_save_state = Accelerator.save_state
    calls = {"n": 0}

    def failing_save_state(self, output_dir=None, **kw):
        calls["n"] += 1
        result = real_save_state(self, output_dir, **kw)
        if calls["n"] == 2:  # second run state: files written, then the process dies before completion
            (Path(output_dir) / "model.safetensors").write_bytes(b"truncated")
            raise OSError("disk full (simulated)")
        return result

    monkeypatch.setattr(Accelerator, "save_state", failing_save_state)
    with pytest.raises(OSError, match="simulated"):
        recipe.main(tiny(out, "--max_steps", "6", "--run_state_every", "2"))
    monkeypatch.setattr(Accelerator, "save_state", real_save_state)
    root = out / "run_states"
    names = sorted(p.name for p in root.iterdir())
    assert names == [".tmp-step-00000004", "step-00000002"]
    manager = recipe.RunStateManager(root)
    assert manager.latest() == root / "step-00000002"

    reset_accelerate_state()
    resumed = recipe.main(tiny(out, "--max_steps", "6", "--run_state_every", "2", "--resume"))
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000006"]  # keep 2, tmp cleaned
    reset_accelerate_state()
    full = recipe.main(tiny(tmp_path / "full", "--max_steps", "6"))
    assert_same_state(full["run_state"], resumed["run_state"])


def test_a_corrupt_run_state_is_ignored_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe.main(tiny(out, "--max_steps", "4", "--run_state_every", "2", "--export", "false", "--knn_random_init", "false"))
    root = out / "run_states"
    newest = root / "step-00000004"
    with open(newest / "optimizer.bin", "ab") as f:  # bit rot after completion: sha256 no longer matches
        f.write(b"x")
    assert recipe.RunStateManager(root).latest() == root / "step-00000002"


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mvssl_hub import losses  # the recipe imports build_loss from here when main() runs

    real_build = losses.build_loss
    calls = {"n": 0}
    nan_at: set[int] = {2}

    def build_nan_loss(*args, **kwargs):
        inner = real_build(*args, **kwargs)

        def loss(z):
            calls["n"] += 1
            value = inner(z)
            return value * float("nan") if calls["n"] in nan_at else value

        return loss

    monkeypatch.setattr(losses, "build_loss", build_nan_loss)
    summary = recipe.main(tiny(tmp_path / "one", "--max_steps", "4", "--export", "false"))
    assert summary["state"]["nan_skipped"] == 1 and summary["state"]["global_step"] == 4

    reset_accelerate_state()
    nan_at.update(range(3, 100))
    calls["n"] = 0
    with pytest.raises(recipe.NonFiniteLossError, match=r"3 consecutive non-finite losses.*step-00000002"):
        recipe.main(tiny(tmp_path / "many", "--max_steps", "8", "--run_state_every", "2", "--max_nan_steps", "3"))


def test_only_the_newest_run_states_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe.main(tiny(out, "--max_steps", "4", "--run_state_every", "1", "--keep_run_states", "2", "--export", "false"))
    assert sorted(p.name for p in (out / "run_states").iterdir()) == ["step-00000003", "step-00000004"]


def test_run_states_every_few_seconds_of_training(tmp_path: Path) -> None:
    """--run_state_every_seconds bounds what a kill loses in training time, whatever a step costs."""
    out = tmp_path / "run"
    recipe.main(tiny(out, "--max_steps", "3", "--run_state_every_seconds", "1e-6", "--keep_run_states", "5",
                     "--export", "false", "--knn_random_init", "false", "--eval_split", ""))
    assert sorted(p.name for p in (out / "run_states").iterdir()) == [f"step-0000000{i}" for i in (1, 2, 3)]


def test_lars_trains_and_a_time_spanned_schedule_ends_with_the_budget(tmp_path: Path) -> None:
    """optimizer lars (Barlow Twins as published) runs the recipe; with schedule_time the cosine spans the time
    budget: the run stops far short of its planned steps, yet its last learning rate is near zero."""
    pytest.importorskip("timm")
    out = recipe.main(tiny(tmp_path / "lars", "--optimizer", "lars", "--lr", "0.1", "--lr_bias", "0.0024",
                           "--schedule", "cosine", "--warmup_steps", "2", "--epochs", "100000", "--time_budget", "3",
                           "--schedule_time", "--knn_random_init", "false", "--eval_split", ""))
    planned = 100_000 * 4  # epochs x steps per epoch: far more than any CPU makes in 3 s
    assert out["stopped_by"] == "time_budget" and out["state"]["global_step"] < planned // 100
    rows = [json.loads(x) for x in (tmp_path / "lars" / "logs" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    # by its steps the cosine would have barely begun (lr ~ 0.1); by the clock it has ended
    assert lrs[-1] < 1e-6 and all(0 <= lr <= 0.1 for lr in lrs)
    losses = torch.tensor([r["loss"] for r in rows if "loss" in r])
    assert out["config"]["optimizer"] == "lars" and len(losses) > 0 and torch.isfinite(losses).all()


@pytest.mark.parametrize(("flags", "key"), [(["--lr_bias", "0.01"], "lr_bias"),
                                            (["--schedule_time"], "schedule_time")])
def test_options_that_need_another_option_name_it(flags: list[str], key: str, tmp_path: Path) -> None:
    from mvssl_hub.errors import ConfigError

    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        recipe.main(tiny(tmp_path / "bad", *flags))
