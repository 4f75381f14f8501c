"""Resume never destroys a run: damaged run states are moved aside with a reason, interrupted saves are recovered,
and the log holds each step once, whenever the run was killed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from mvssl_hub.errors import ConfigError
from mvssl_hub.safe_io import atomic_write_folder, clean_leftovers
from mvssl_hub.train.run_state import (
    MARKER_FILE,
    RUN_CONFIG_FILE,
    STATE_FILE,
    RunStateManager,
    adopt_old_layout,
    read_run_config,
    run_states_dir,
)

from conftest import load_recipe, reset_accelerate_state

pytest.importorskip("accelerate")
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
recipe = load_recipe("pretrain", "pretrain_recipe_run_state")
DATA = Path(__file__).resolve().parents[2] / "recipes" / "data" / "cifar10-5k"


def tiny(out: Path, *extra: str) -> list[str]:
    return ["--data", str(DATA), "--limit", "32", "--eval_split", "", "--width", "8", "--proj_dim", "16",
            "--batch_size", "16", "--epochs", "4", "--precision", "fp32", "--output_dir", str(out), "--progress",
            "false", "--log_every", "1", "--export", "false", "--keep_run_states", "3", *extra]


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 3 steps with a run state saved after each (step-1, -2, -3)."""
    out = tmp_path_factory.mktemp("run_state") / "run"
    reset_accelerate_state()
    recipe.main(tiny(out, "--max_steps", "3", "--run_state_every", "1"))
    reset_accelerate_state()
    return out


@pytest.fixture
def run(three_steps: Path, tmp_path: Path) -> Path:
    shutil.copytree(three_steps, tmp_path / "run")
    return tmp_path / "run"


def logged_steps(run: Path) -> list[int]:
    records = map(json.loads, (run / "logs" / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in records if "loss" in r]


def rehash(folder: Path, name: str) -> None:
    """Record a changed file's sha256 in the marker, so that only its content is at fault."""
    marker = json.loads((folder / MARKER_FILE).read_text())
    marker["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / MARKER_FILE).write_text(json.dumps(marker))


def test_a_flipped_byte_moves_the_run_state_aside_and_the_run_goes_on(run: Path, capsys) -> None:
    run_states = run / "run_states"
    data = bytearray((run_states / "step-00000003" / "optimizer.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run_states / "step-00000003" / "optimizer.bin").write_bytes(bytes(data))
    summary = recipe.main(tiny(run, "--max_steps", "4", "--run_state_every", "1", "--resume"))
    said = capsys.readouterr().out  # the recipe's log: which run state, which file, why; and where it went on
    assert "step-00000003 is damaged (optimizer.bin: sha256 differs" in said and "moved aside" in said
    assert "resumed from" in said and "step-00000002 at step 2" in said
    (aside,) = (run_states / "damaged").iterdir()  # kept, not deleted
    assert aside.name.startswith("step-00000003-") and (aside / "optimizer.bin").read_bytes() == bytes(data)
    assert summary["state"]["global_step"] == 4
    assert logged_steps(run) == [1, 2, 3, 4]  # step 3 redone from step 2, logged once


def test_no_usable_run_state_stops_with_a_list_and_keeps_everything(run: Path) -> None:
    run_states = run / "run_states"
    for folder in run_states.iterdir():
        (folder / "model.safetensors").write_bytes(b"rot")
    with pytest.raises(ConfigError, match=r"no usable run state.*step-00000001.*step-00000002.*step-00000003"):
        recipe.main(tiny(run, "--max_steps", "4", "--resume"))
    assert len(list((run_states / "damaged").iterdir())) == 3
    reset_accelerate_state()
    recipe.main(tiny(run, "--max_steps", "2", "--overwrite"))  # starting over is asked for explicitly
    assert logged_steps(run) == [1, 2]


@pytest.mark.parametrize("step", [-1, "3", 10**9, True])
def test_training_state_step_is_validated(run: Path, step) -> None:
    newest = run / "run_states" / "step-00000003"
    state = json.loads((newest / STATE_FILE).read_text())
    (newest / STATE_FILE).write_text(json.dumps({**state, "global_step": step}))
    rehash(newest, STATE_FILE)
    manager = RunStateManager(run / "run_states")
    assert "global_step" in manager.problem(newest)
    assert manager.latest() == run / "run_states" / "step-00000002"


def test_a_complete_temporary_run_state_is_recovered(run: Path) -> None:
    run_states = run / "run_states"
    (run_states / "step-00000003").rename(run_states / ".tmp-step-00000003")  # crash after the marker, before the rename
    (run_states / ".tmp-step-00000009").mkdir()  # a partial one: nothing to lose
    summary = recipe.main(tiny(run, "--max_steps", "3", "--resume"))
    assert summary["state"]["global_step"] == 3
    assert sorted(p.name for p in run_states.iterdir()) == ["step-00000001", "step-00000002", "step-00000003"]


def test_resaving_a_step_always_leaves_a_complete_run_state(run: Path) -> None:
    run_states = run / "run_states"
    # a crash while re-saving step 3: the old folder set aside, the new one complete but not yet renamed
    shutil.copytree(run_states / "step-00000003", run_states / ".tmp-step-00000003")
    (run_states / "step-00000003").rename(run_states / ".old-step-00000003")
    manager = RunStateManager(run_states)
    manager.recover()
    assert sorted(p.name for p in run_states.iterdir()) == ["step-00000001", "step-00000002", "step-00000003"]
    assert manager.latest() == run_states / "step-00000003"
    # only the old copy survived: it comes back
    (run_states / "step-00000003").rename(run_states / ".old-step-00000003")
    manager.recover()
    assert manager.latest() == run_states / "step-00000003"
    # a finished run resumed re-saves its last step in place
    summary = recipe.main(tiny(run, "--max_steps", "3", "--run_state_every", "1", "--resume"))
    assert summary["state"]["global_step"] == 3 and manager.latest() == run_states / "step-00000003"


def test_a_run_state_that_kept_its_config_as_config_json_still_resumes(run: Path) -> None:
    """Run states written before the run's config had a name of its own held it as config.json."""
    for folder in (run / "run_states").glob("step-*"):
        (folder / RUN_CONFIG_FILE).rename(folder / "config.json")
        marker = json.loads((folder / MARKER_FILE).read_text())
        marker["files"]["config.json"] = marker["files"].pop(RUN_CONFIG_FILE)
        (folder / MARKER_FILE).write_text(json.dumps(marker))
    newest = run / "run_states" / "step-00000003"
    assert read_run_config(newest)["width"] == 8 and RunStateManager(run / "run_states").latest() == newest
    summary = recipe.main(tiny(run, "--max_steps", "4", "--resume"))
    assert summary["state"]["global_step"] == 4 and logged_steps(run) == [1, 2, 3, 4]
    assert (run / "run_states" / "step-00000004" / RUN_CONFIG_FILE).is_file()  # new saves use the new name


def test_a_kill_while_pruning_leaves_no_incomplete_run_state_and_the_next_run_removes_the_rest(
        run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_states = run / "run_states"
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # the process dies after the prune deleted one file
        if Path(path).name.startswith(".pruned-step-"):
            next(p for p in sorted(Path(path).iterdir()) if p.is_file()).unlink()
            raise KeyboardInterrupt("killed while pruning (simulated)")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr("mvssl_hub.train.run_state.shutil.rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):  # step 4 saved, then step 1 pruned (3 kept)
        recipe.main(tiny(run, "--max_steps", "5", "--run_state_every", "1", "--resume"))
    monkeypatch.undo()
    reset_accelerate_state()
    manager = RunStateManager(run_states)
    assert sorted(p.name for p in run_states.iterdir()) == [
        ".pruned-step-00000001", "step-00000002", "step-00000003", "step-00000004"]
    assert all(manager.problem(p) is None for p in run_states.glob("step-*"))  # every step-* folder is whole
    summary = recipe.main(tiny(run, "--max_steps", "5", "--run_state_every", "1", "--resume"))
    assert summary["state"]["global_step"] == 5
    assert sorted(p.name for p in run_states.iterdir()) == ["step-00000003", "step-00000004", "step-00000005"]


def test_an_incomplete_run_state_older_than_the_kept_ones_is_removed_not_set_aside(run: Path, capsys) -> None:
    # what a kill mid-prune left before prunes renamed first: an old step-* folder that lost its marker and a file
    run_states = run / "run_states"
    (run_states / "step-00000001" / MARKER_FILE).unlink()
    (run_states / "step-00000001" / "model.safetensors").unlink()
    recipe.main(tiny(run, "--max_steps", "4", "--resume", "--keep_run_states", "2"))
    assert sorted(p.name for p in run_states.iterdir()) == ["step-00000003", "step-00000004"]  # no damaged/
    assert "damaged" not in capsys.readouterr().out


def test_a_kill_before_the_first_run_state_logs_no_step_twice(run: Path) -> None:
    shutil.rmtree(run / "run_states")  # steps 1..3 were logged, then the process died before saving
    recipe.main(tiny(run, "--max_steps", "4", "--resume"))
    assert logged_steps(run) == [1, 2, 3, 4]


def test_interrupted_exports_are_tidied(tmp_path: Path) -> None:
    target = tmp_path / "export"
    atomic_write_folder(target, {"a.txt": b"1"})
    (tmp_path / ".export.tmp-abc").mkdir()
    target.rename(tmp_path / ".export.old-def")  # killed between the two renames: only the old folder is left
    assert clean_leftovers(target) == ["removed .export.tmp-abc", "restored export from .export.old-def"]
    assert (target / "a.txt").read_bytes() == b"1" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    (tmp_path / ".export.old-ghi").mkdir()
    assert clean_leftovers(target) == ["removed .export.old-ghi"]


class _OneProcess:
    """What start_or_resume needs of an accelerate.Accelerator, for one process."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def load_state(self, folder: str) -> None:
        pass


def test_a_run_state_past_a_shorter_schedule_is_refused_and_left_in_place(run: Path) -> None:
    run_states = run / "run_states"
    before = sorted(p.name for p in run_states.iterdir())
    saved = read_run_config(run_states / "step-00000003")
    manager = RunStateManager(run_states, keep=3)
    with pytest.raises(ConfigError, match=r"at step 3, past this run's 2 steps"):
        manager.start_or_resume(_OneProcess(), saved, resume=True, overwrite=False, resumable=set(),
                                log_dir=run / "logs", max_step=2)
    assert sorted(p.name for p in run_states.iterdir()) == before  # nothing moved aside, nothing deleted
    state, latest = manager.start_or_resume(_OneProcess(), saved, resume=True, overwrite=False, resumable=set(),
                                            log_dir=run / "logs", max_step=8)
    assert latest == run_states / "step-00000003" and state["global_step"] == 3


def test_an_export_killed_while_carrying_entries_over_keeps_them(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"new")
    old = tmp_path / ".export.old-abc"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"old weights")  # replaced by the new export: dropped
    (old / "eval_results.json").write_text("{}")  # not yet carried over: kept
    clean_leftovers(target, replace=("model.safetensors",))
    assert (target / "model.safetensors").read_bytes() == b"new" and (target / "eval_results.json").is_file()
    assert not old.exists()


def test_tools_find_the_run_states_of_either_layout_and_a_run_moves_the_old_one(tmp_path: Path) -> None:
    """A run folder written before mvssl-hub 0.2.0 holds its run states in checkpoints/: tools reading run folders
    find them there until a run of that folder renames the folder to run_states/ (nothing else moves)."""
    run = tmp_path / "run"
    assert run_states_dir(run) == run / "run_states"  # nothing yet: where a run will put them
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    assert run_states_dir(run) == run / "checkpoints" and adopt_old_layout(run) == run / "checkpoints"
    assert run_states_dir(run) == run / "run_states" and (run / "run_states" / "step-00000002").is_dir()
    assert adopt_old_layout(run) is None  # done once
    (run / "checkpoints").mkdir()  # both present (an old tool wrote again): run_states/ wins, nothing is moved
    assert run_states_dir(run) == run / "run_states" and adopt_old_layout(run) is None
