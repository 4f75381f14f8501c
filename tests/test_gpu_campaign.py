"""The one-call GPU campaign round trip on the CPU: pack the data, train a smoke chunk into parts, unpack them;
a missing or corrupted part is refused by name, and an earlier run is never replaced without --replace."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_campaign  # noqa: E402

PART_MIB = 0.2  # the smoke export is ~0.9 MiB: several parts


def test_pack_train_unpack_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "gpudata" / "cifar10"
    packed = gpu_campaign.main(["pack", "--source", str(gpu_campaign.EMBEDDED_DATA), "--data_dir", str(data),
                                "--test_rows", "64", "--no_wheels"])
    assert packed["test_rows"] == 64 and packed["travel_bytes"] > packed["tree_bytes"] > 0
    assert "gpu_campaign.py train" in packed["command"] and len(packed["command"]) < 2000
    import pyarrow.parquet as pq

    assert pq.read_metadata(data / "test.parquet").num_rows == 64
    assert (data / "train.parquet").read_bytes() == (gpu_campaign.EMBEDDED_DATA / "train.parquet").read_bytes()

    out = tmp_path / "out"
    result = gpu_campaign.main(["train", "--smoke", "--data", str(data), "--root", str(tmp_path / "device"),
                                "--out", str(out), "--part_mib", str(PART_MIB)])
    info = json.loads((out / "gpu_campaign.json").read_text())
    assert info == json.loads(json.dumps(result)) and info["benchmark"] == "gpu_campaign"
    assert info["campaign_exit_code"] == 0 and info["export"] and info["steps"] > 0 and info["smoke"]
    parts = sorted(out.glob("gpu_campaign.tar.part-*"))
    assert [p.name for p in parts] == [p["name"] for p in info["parts"]] and len(parts) >= 2
    assert all(p.stat().st_size <= PART_MIB * 2**20 for p in parts) and len(parts) + 2 <= 8
    assert hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest() == info["sha256"]
    assert "--- " in (out / "gpu_campaign.log").read_text()  # the pretraining log is in it

    with pytest.raises(SystemExit, match="smoke run"):  # never into the real cache by mistake
        gpu_campaign.main(["unpack", str(out)])
    where = ["--runs_root", str(tmp_path / "cache"), "--results", str(tmp_path / "results")]
    done = gpu_campaign.main(["unpack", str(out), *where])
    run = tmp_path / "cache" / "campaign-gpu" / "barlowtwins_resnet18_cifar10"
    assert done["run"] == run and {"model.safetensors", "config.json"} <= {p.name for p in (run / "export").iterdir()}
    records = tmp_path / "results" / "barlowtwins_resnet18_cifar10_gpu"
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
    assert not (run.parent / "barlowtwins_resnet18_cifar10.previous-1").exists()  # refused before touching the run
    assert sorted(p.name for p in run.parent.iterdir()) == ["barlowtwins_resnet18_cifar10"]  # no temp leftovers
    gpu_campaign.main(["unpack", str(out), *where, "--replace"])  # the same good parts again: the old run moves aside
    assert (run.parent / "barlowtwins_resnet18_cifar10.previous-1" / "export" / "model.safetensors").is_file()
    assert (records / "lost-1" / "campaign.jsonl").is_file() and (run / "export" / "config.json").is_file()


def test_the_device_flags_are_the_preset_s_but_the_clock_and_cadence() -> None:
    from mvssl_hub.train.config import parse_config
    from recipes import load_recipe

    pretrain = load_recipe("pretrain")
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{gpu_campaign.ENTRY}.yaml"
    base = parse_config(pretrain.PretrainConfig, ["--config", str(preset)])
    extra = gpu_campaign.campaign_extra(False, 60.0, 120.0, 16).split()
    cfg = parse_config(pretrain.PretrainConfig, ["--config", str(preset), *extra])
    assert (cfg.clock, cfg.knn_every_seconds, cfg.save_every_seconds, cfg.decode_workers) == ("wall", 60, 120, 16)
    changed = {k for k in vars(cfg) if getattr(cfg, k) != getattr(base, k)}
    assert changed - pretrain.RESUMABLE_CHANGES == {"clock"}  # the recipe itself is the preset's


def test_the_script_starts_as_the_device_runs_it_with_nothing_installed_or_on_the_path() -> None:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "benchmarks/gpu_campaign.py", "train", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--deadline" in done.stdout
