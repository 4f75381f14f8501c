"""The one-call GPU campaign round trip on the CPU: pack the data, train a smoke chunk into parts, unpack them;
a missing or corrupted part is refused by name, and an earlier run is never replaced without --replace."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[2]

from tools import gpu_campaign  # noqa: E402  (the command line)
from tools.remote_gpu import calibrate, settings  # noqa: E402
from tools.remote_gpu.train import learn_gate  # noqa: E402

from harness import EMBEDDED_DATA  # noqa: E402

PART_MIB = 0.2  # the smoke export is ~0.9 MiB: several parts


def test_pack_train_unpack_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "gpudata" / "cifar10"
    packed = gpu_campaign.main(["pack", "--source", str(EMBEDDED_DATA), "--data_dir", str(data),
                                "--test_rows", "64", "--no_wheels"])
    assert packed["test_rows"] == 64 and packed["travel_bytes"] > packed["tree_bytes"] > 0
    assert "gpu_campaign.py train" in packed["command"] and len(packed["command"]) < 2000
    import pyarrow.parquet as pq

    assert pq.read_metadata(data / "test.parquet").num_rows == 64
    assert (data / "train.parquet").read_bytes() == (EMBEDDED_DATA / "train.parquet").read_bytes()

    out = tmp_path / "out"
    result = gpu_campaign.main(["train", "--smoke", "--data", str(data), "--root", str(tmp_path / "device"),
                                "--out", str(out), "--part_mib", str(PART_MIB)])
    info = json.loads((out / "gpu_campaign.json").read_text())
    assert info == json.loads(json.dumps(result)) and info["benchmark"] == "gpu_campaign"
    assert info["campaign_exit_code"] == 0 and info["export"] and info["steps"] > 0 and info["smoke"]
    parts = sorted(out.glob("gpu_campaign.tar.part-*"))
    assert [p.name for p in parts] == [p["name"] for p in info["parts"]] and len(parts) >= 2
    assert all(p.stat().st_size <= PART_MIB * 2**20 for p in parts) and len(parts) + 3 <= 8
    timing = json.loads((out / "pipeline_gpu.json").read_text())["results"][0]  # the step against the backbone
    assert info["pipeline"]["views_per_s"] == timing["views_per_s"] and timing["ratio_recipe_over_backbone"] > 0
    assert hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest() == info["sha256"]
    assert "--- " in (out / "gpu_campaign.log").read_text()  # the pretraining log is in it
    calibration = info["calibration"]  # the smoke train calibrates for 2 s, and its epochs reach the campaign
    assert isinstance(calibration, dict) and isinstance(calibration["epochs"], int) and calibration["epochs"] >= 1
    assert f"--epochs {calibration['epochs']}" in info["campaign_command"]
    assert calibration["schedule_share"] == settings.SCHEDULE_SHARE and calibration["steps_per_second"] > 0
    assert "accelerator" in info["campaign_record"]

    with pytest.raises(SystemExit, match="smoke run"):  # never into the real cache by mistake
        gpu_campaign.main(["unpack", str(out)])
    where = ["--runs_root", str(tmp_path / "cache"), "--results", str(tmp_path / "results")]
    done = gpu_campaign.main(["unpack", str(out), *where])
    run = tmp_path / "cache" / "campaign-gpu" / "barlowtwins_resnet18_cifar10_v2"
    assert done["run"] == run and {"model.safetensors", "config.json"} <= {p.name for p in (run / "export").iterdir()}
    records = tmp_path / "results" / "barlowtwins_resnet18_cifar10_v2_gpu"
    assert {p.name for p in records.iterdir()} == {"campaign.jsonl", "metrics.jsonl", "training_curves.png",
                                                   "gpu_campaign.json"}
    assert (run / "logs" / "metrics.jsonl").read_bytes() == (records / "metrics.jsonl").read_bytes()

    with pytest.raises(SystemExit, match="--replace"):  # an earlier run stays unless asked
        gpu_campaign.main(["unpack", str(out), *where])
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    middle = bad / info["parts"][1]["name"]
    blob = bytearray(middle.read_bytes())
    blob[100] ^= 0xFF
    middle.write_bytes(bytes(blob))
    with pytest.raises(SystemExit, match=f"part {middle} is corrupted"):
        gpu_campaign.main(["unpack", str(bad), *where, "--replace"])
    (bad / info["parts"][-1]["name"]).unlink()
    shutil.copy2(out / info["parts"][1]["name"], middle)
    with pytest.raises(SystemExit, match=f"part {bad / info['parts'][-1]['name']} is missing"):
        gpu_campaign.main(["unpack", str(bad), *where, "--replace"])
    assert not (run.parent / "barlowtwins_resnet18_cifar10_v2.previous-1").exists()  # refused before touching the run
    assert sorted(p.name for p in run.parent.iterdir()) == ["barlowtwins_resnet18_cifar10_v2"]  # no temp leftovers
    gpu_campaign.main(["unpack", str(out), *where, "--replace"])  # the same good parts again: the old run moves aside
    assert (run.parent / "barlowtwins_resnet18_cifar10_v2.previous-1" / "export" / "model.safetensors").is_file()
    assert (records / "lost-1" / "campaign.jsonl").is_file() and (run / "export" / "config.json").is_file()



def test_a_records_only_run_brings_back_its_curve_without_weights(tmp_path: Path) -> None:
    """A comparison run (the classic recipe): no export is made or packed; its metrics come back and unpack."""
    out = tmp_path / "out"
    info = gpu_campaign.main(["train", "--smoke", "--records_only", "--calibrate", "0", "--budget", "1", "--entry",
                              "barlowtwins_resnet18_cifar10_classic", "--extra", "--proj_dim 64",
                              "--root", str(tmp_path / "device"), "--out", str(out)])
    assert info["records_only"] and not info["export"] and info["campaign_exit_code"] == 0
    assert "--export false" in info["campaign_command"] and info["calibration"] is None
    assert not any(m.startswith("export/") for m in info["members"]) and "logs/metrics.jsonl" in info["members"]
    where = ["--runs_root", str(tmp_path / "cache"), "--results", str(tmp_path / "results")]
    gpu_campaign.main(["unpack", str(out), *where])
    records = tmp_path / "results" / "barlowtwins_resnet18_cifar10_classic_gpu"
    rows = [json.loads(line) for line in (records / "metrics.jsonl").read_text().splitlines()]
    assert any("knn_random_init" in r for r in rows) and any("loss" in r for r in rows)
    assert not (tmp_path / "cache" / "campaign-gpu" / "barlowtwins_resnet18_cifar10_classic" / "export").exists()

def test_the_device_flags_are_the_preset_s_but_the_clock_and_cadence() -> None:
    from mvssl_hub.train.config import parse_config
    from recipes import load_recipe

    pretrain = load_recipe("pretrain")
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{settings.ENTRY}.yaml"
    base = parse_config(pretrain.PretrainConfig, ["--config", str(preset)])
    extra = calibrate.campaign_extra(False, 60.0, 120.0, 16).split()
    cfg = parse_config(pretrain.PretrainConfig, ["--config", str(preset), *extra])
    assert (cfg.clock, cfg.knn_every_seconds, cfg.run_state_every_seconds, cfg.decode_workers) == ("wall", 60, 120, 16)
    changed = {k for k in vars(cfg) if getattr(cfg, k) != getattr(base, k)}
    assert changed - pretrain.RESUMABLE_CHANGES <= {"clock"}  # the recipe itself is the preset's (its clock may be wall already)


def test_the_script_starts_as_the_device_runs_it_with_nothing_installed_or_on_the_path() -> None:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "tools/gpu_campaign.py", "train", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--deadline" in done.stdout


def write_metrics(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def step_row(step: int, seconds: float, per_epoch: int = 50) -> dict:
    return {"step": step, "time": 1e9 + seconds, "loss": 100.0 / step, "lr": 1e-3, "epoch": step / per_epoch,
            "nan_skipped": 0, "train_seconds": seconds}


def test_step_rate_times_the_second_half_of_the_logged_steps(tmp_path: Path) -> None:
    # steps 10..100, 50 steps/epoch: a slow warm-up (5 steps/s to step 50), then 20 steps/s
    seconds = {10 * i: 2.0 * i if i <= 5 else 10.0 + 0.5 * (i - 5) for i in range(1, 11)}
    rows = [step_row(s, t) for s, t in seconds.items()]
    rows.insert(2, {"step": 20, "time": 1e9 + 4.0, "knn_top1": 40.0, "train_seconds": 4.0})  # a kNN point: ignored
    rows = [{"config": {"epochs": 7}}, {"step": 0, "time": 1e9, "knn_random_init": 10.0, "train_seconds": 0.0},
            *rows]
    metrics = write_metrics(tmp_path / "logs" / "metrics.jsonl", rows)
    rate, per_epoch = calibrate.step_rate(metrics)
    assert rate == pytest.approx((100 - 50) / (12.5 - 10.0))  # 20 steps/s: from step 50 (row 5 of 10) to step 100
    assert rate != pytest.approx(90 / 10.5)  # not the whole log's (warm-up included)
    assert per_epoch == pytest.approx(50.0)


def test_step_rate_refuses_fewer_than_three_steps_naming_the_file(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path / "metrics.jsonl", [{"config": {"epochs": 7}}, step_row(10, 1.0),
                                                         {"step": 10, "knn_top1": 40.0, "train_seconds": 1.0},
                                                         step_row(20, 2.0)])
    with pytest.raises(ValueError, match=re.escape(str(metrics)) + ": 2 logged training steps"):
        calibrate.step_rate(metrics)


def test_epochs_for_applies_the_share_and_clamps() -> None:
    share = settings.SCHEDULE_SHARE
    assert 0 < share < 1
    assert calibrate.epochs_for(10.0, 100.0, 100.0, share=1.0) == 10
    assert calibrate.epochs_for(10.0, 100.0, 100.0, share=0.5) == 5
    assert calibrate.epochs_for(10.0, 100.0, 100.0) == int(10 * 100 * share // 100)  # the default share
    assert calibrate.epochs_for(10.0, 100.0, 100.0, share=0.39) == 3  # whole epochs, rounded down
    assert calibrate.epochs_for(0.01, 390.0, 10.0) == 1  # never 0 epochs
    assert calibrate.epochs_for(1e6, 10.0, 1e4) == settings.MAX_EPOCHS
    assert calibrate.epochs_for(1e6, 10.0, 1e4, most=12) == 12
    # the H200 call of 2026-12-04: calibration timed 59.8 steps/s, the campaign averaged 44.4 over a 330 s budget;
    # the schedule sized now from the calibration ends inside that budget at the campaign's rate
    epochs = calibrate.epochs_for(59.82, 390.0, 330.0)
    assert epochs * 390 / 44.4 <= 330 and epochs * 390 / 59.82 >= 0.6 * 330


def test_resumed_epochs_need_a_run_states_folder_and_the_config_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert calibrate.resumed_epochs(run) is None  # nothing there
    write_metrics(run / "logs" / "metrics.jsonl", [{"config": {"epochs": 45, "batch_size": 128}}, step_row(10, 1.0)])
    assert calibrate.resumed_epochs(run) is None  # a log but no run state: nothing to resume
    (run / "checkpoints").mkdir()  # run states as laid out before mvssl-hub 0.2.0
    assert calibrate.resumed_epochs(run) == 45
    (run / "checkpoints").rename(run / "run_states")
    assert calibrate.resumed_epochs(run) == 45
    (run / "logs" / "metrics.jsonl").unlink()
    assert calibrate.resumed_epochs(run) is None  # a run state without its log


def test_the_calibration_run_times_the_step_alone(tmp_path: Path) -> None:
    cmd = calibrate.calibration_command(Path("preset.yaml"), "data", tmp_path, 25.0, "--clock wall --threads 4")
    flags = dict(zip(cmd[2::2], cmd[3::2]))  # after the interpreter and the script: flag, value, flag, value...
    assert cmd[1].endswith("pretrain.py") and flags["--config"] == "preset.yaml" and flags["--data"] == "data"
    assert flags["--output_dir"] == str(tmp_path)
    assert flags["--time_budget"] == "25" and flags["--clock"] == "wall" and flags["--threads"] == "4"
    assert all(flags[f] == "0" for f in ("--knn_every", "--knn_every_seconds", "--run_state_every", "--run_state_every_seconds"))
    assert flags["--monitors"] == flags["--export"] == flags["--knn_random_init"] == "false"


def test_compile_pays_only_when_its_faster_steps_outrun_its_compile_time() -> None:
    eager = {"steps_per_second": 10.0, "first_logged_step_seconds": 2.0}
    fast = {"steps_per_second": 13.0, "first_logged_step_seconds": 32.0}  # 30 s later: the compile
    assert calibrate.compile_pays(eager, fast, budget=300) == (True, 30.0)  # 13 x 270 > 10 x 300
    assert calibrate.compile_pays(eager, fast, budget=100) == (False, 30.0)  # 13 x 70 < 10 x 100
    slower = {"steps_per_second": 9.0, "first_logged_step_seconds": 1.0}
    assert calibrate.compile_pays(eager, slower, budget=300) == (False, 0.0)


def test_a_preset_without_a_passing_learn_check_gets_no_gpu_time(tmp_path: Path) -> None:
    """Outside smoke mode, train refuses an entry the CPU learn check has not passed, before anything runs."""
    with pytest.raises(SystemExit, match="no preset named 'barlowtwins_resnet18_cifar10_classic'"):
        learn_gate("barlowtwins_resnet18_cifar10_classic", print)


def test_the_race_runs_its_three_arms_and_brings_back_results_curves_and_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gpu_campaign.main(["race", "--smoke", "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"fair_race.json", "fair_race.png", "fair_race.log",
                                               "fair_race_recommended.jsonl", "fair_race_paper_baseline.jsonl",
                                               "fair_race_published.jsonl"}  # 6 of the 8 files that come back
    assert result["benchmark"] == "fair_race" and set(result["arms"]) == {"recommended", "paper_baseline", "published"}
    assert all(r["exit"] == 0 for r in result["ran"]["runs"].values())
    for arm, found in result["arms"].items():  # each arm's own recipe ran, beside its random init
        rows = [json.loads(line) for line in (out / f"fair_race_{arm}.jsonl").read_text().splitlines()]
        cfg = next(r["config"] for r in rows if "config" in r)
        assert found["knn_random_init"] is not None and found["steps"] > 0
        assert cfg["optimizer"] == ("lars" if arm == "published" else "adam") and cfg["schedule_time"]
    assert set(result["recommended_vs"]) == {"paper_baseline", "published"}
