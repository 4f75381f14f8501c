"""A campaign continues an entry's training chunk after chunk, keeps its schedule, and records every chunk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mvssl_hub.errors import ConfigError
from tools import campaign

from conftest import reset_accelerate_state

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[2]
TINY = ("--limit 64 --eval_limit 64 --batch_size 16 --width 8 --knn_k 10 --knn_every_seconds 0 "
        "--run_state_every_seconds 0 --run_state_every 1 --log_every 1")


def chunk(tmp_path: Path) -> dict:
    reset_accelerate_state()
    return campaign.main(["cifar10_bt_resnet18_w16", "--data", str(ROOT / "recipes" / "data" / "cifar10-5k"),
                          "--root", str(tmp_path / "cache"), "--results", str(tmp_path / "results"),
                          "--chunk_seconds", "3", "--milestone_seconds", "5", f"--extra={TINY}", "--eval_limit", "64",
                          "--quiet", "false"])


def test_two_chunks_continue_one_run_and_record_a_milestone(tmp_path: Path) -> None:
    first = chunk(tmp_path)
    second = chunk(tmp_path)
    assert first["restarted"] and not second["restarted"] and first["exit_code"] == second["exit_code"] == 0
    assert 0 < first["step_after"] == second["step_before"] < second["step_after"]
    assert second["train_seconds_after"] >= 6 and second["cpu"].endswith(")")  # "<model name> (<ISA>)"
    assert "error" not in second["milestone"] and "knn" in json.dumps(second["milestone"])  # crossed 5 s
    assert "milestone" not in first
    run = tmp_path / "cache" / "campaign" / "cifar10_bt_resnet18_w16"
    steps = [r["step"] for r in map(json.loads, (run / "logs" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == list(range(1, second["step_after"] + 1))  # one log across chunks, no step twice
    saved = json.loads(next((run / "run_states").glob("step-*/run_config.json")).read_text())
    assert saved["epochs"] == 100 and saved["schedule"] == "constant"  # the preset's schedule, whatever the chunk
    records = (tmp_path / "results" / "cifar10_bt_resnet18_w16" / "campaign.jsonl").read_text().splitlines()
    assert len(records) == 2 and (tmp_path / "results" / "cifar10_bt_resnet18_w16" / "metrics.jsonl").is_file()
    import torch

    assert all("accelerator" in r for r in (first, second, *map(json.loads, records)))  # the GPU is named, if any
    if not torch.cuda.is_available():  # this CPU-only machine: no GPU to name
        assert first["accelerator"] is None and second["accelerator"] is None


def test_an_unknown_entry_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match=r"'entry' = 'nope': no such preset; known: \[.*cifar10_bt_resnet18_w16"):
        campaign.main(["nope"])


def chunk_until(tmp_path: Path, until: str) -> dict:
    reset_accelerate_state()
    return campaign.main(["cifar10_bt_resnet18_w16", "--data", str(ROOT / "recipes" / "data" / "cifar10-5k"),
                          "--root", str(tmp_path / "cache"), "--results", str(tmp_path / "results"),
                          "--chunk_seconds", "3", "--until_seconds", until, f"--extra={TINY}", "--quiet", "false"])


def test_until_seconds_caps_the_campaign_and_a_lost_state_keeps_its_records(tmp_path: Path) -> None:
    first = chunk_until(tmp_path, "2")  # the chunk is cut to the 2 s left
    assert first["exit_code"] == 0 and 2 <= first["train_seconds_after"] < 3
    assert chunk_until(tmp_path, "2")["finished"]  # nothing left to train: no run
    results = tmp_path / "results" / "cifar10_bt_resnet18_w16"
    old_metrics = (results / "metrics.jsonl").read_text()
    shutil.rmtree(tmp_path / "cache")  # a new machine: the run state is gone, the repository's records are not
    ended = chunk_until(tmp_path, "2")  # the records say this fixed-length campaign ended: it is not redone
    assert ended["finished"] and ended["step_after"] == first["step_after"]
    assert (results / "metrics.jsonl").read_text() == old_metrics and not (results / "lost-1").exists()
    again = chunk_until(tmp_path, "5")  # a longer campaign: the lost attempt's records move aside, it starts over
    assert again["restarted"] and again["step_before"] == 0
    assert (results / "lost-1" / "metrics.jsonl").read_text() == old_metrics
    assert len((results / "lost-1" / "campaign.jsonl").read_text().splitlines()) == 1
    assert len((results / "campaign.jsonl").read_text().splitlines()) == 1  # the new attempt's own record
