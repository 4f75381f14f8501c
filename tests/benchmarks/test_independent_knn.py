"""benchmarks/independent_knn.py: its own weighted kNN on hand-computed cases, the torchvision rebuild of a bundled
zoo entry (strict load), the record it compares against, and that it never imports mvssl_hub."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import independent_knn as ik  # noqa: E402

BUNDLED = ROOT / "mvssl_hub" / "bundled" / "mvssl-hub--barlowtwins-resnet18-w16-cifar10"


def unit(deg: float) -> list[float]:
    """A 2-d unit vector at ``deg`` degrees (its cosine with (1, 0) is cos(deg))."""
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_two_separated_clusters_are_recovered() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    bank = torch.cat([centres[0] + 0.3 * torch.randn(50, 3, generator=g), centres[1] + 0.3 * torch.randn(50, 3, generator=g)])
    labels = torch.tensor([0] * 50 + [1] * 50)
    queries = torch.cat([centres[0] + 0.3 * torch.randn(10, 3, generator=g), 7 * centres[1:]])  # scale is irrelevant
    assert ik.knn_predict(bank, labels, queries, k=20).tolist() == [0] * 10 + [1]


def test_weighted_vote_beats_the_majority_and_sums_over_neighbours() -> None:
    # query (1, 0): one class-0 neighbour at sim 1, two class-1 neighbours at sim 0.8
    bank = torch.tensor([unit(0), unit(math.degrees(math.acos(0.8))), unit(-math.degrees(math.acos(0.8)))])
    labels, query = torch.tensor([0, 1, 1]), torch.tensor([[3.0, 0.0]])
    assert math.exp(1 / 0.1) > 2 * math.exp(0.8 / 0.1)  # 22026 > 5962: weighted says 0, the plain majority says 1
    assert ik.knn_predict(bank, labels, query, k=3, temperature=0.1).item() == 0
    assert ik.knn_predict(bank, labels, query, k=3, temperature=100.0).item() == 1  # near-equal weights: majority
    # four class-1 neighbours at sim 0.9: 4 e^9 = 32412 > e^10 = 22026, so the votes are summed, not maxed ...
    bank4 = torch.tensor([unit(0)] + [unit(s * math.degrees(math.acos(0.9))) for s in (1, -1, 1, -1)])
    labels4 = torch.tensor([0, 1, 1, 1, 1])
    assert ik.knn_predict(bank4, labels4, query, k=5).item() == 1
    # ... over the k nearest only: with k = 3 class 1 has 2 e^9 = 16206 < 22026
    assert ik.knn_predict(bank4, labels4, query, k=3).item() == 0
    # a far class-2 crowd outside the k nearest never votes
    bank5 = torch.cat([bank4, torch.tensor([unit(120)] * 10)])
    assert ik.knn_predict(bank5, torch.cat([labels4, torch.full((10,), 2)]), query, k=5, chunk=1).item() == 1
    with pytest.raises(ValueError, match="k=16"):
        ik.knn_predict(bank5, torch.zeros(15, dtype=torch.long), query, k=16)


def test_backbone_rebuilds_the_bundled_width_16_entry_and_refuses_other_archs() -> None:
    from safetensors.torch import load_file

    config = json.loads((BUNDLED / "config.json").read_text())
    net = ik.build_backbone(config["backbone"])
    net.load_state_dict(load_file(str(BUNDLED / "model.safetensors")), strict=True)
    assert not net.training and net(torch.zeros(2, 3, 32, 32)).shape == (2, config["feature_dim"])
    plain = ik.build_backbone({"arch": "resnet18", "small_images": False, "width": 64})
    assert plain.conv1.kernel_size == (7, 7) and plain(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    with pytest.raises(SystemExit, match="resnet50"):
        ik.build_backbone({"arch": "resnet50", "width": 64})


def test_recorded_value_matches_counts_k_and_temperature() -> None:
    config = json.loads((BUNDLED / "config.json").read_text())
    full = next(m["value"] for m in config["metrics"] if m["task"] == "knn" and m["metric"] == "top1")
    cut = next(m["value"] for m in config["metrics"] if m["dataset"] == "cifar10-5k" and m["metric"] == "top1")
    assert ik.recorded_top1(config, 50000, 10000, 200, 0.1) == full
    assert ik.recorded_top1(config, 5000, 1000, 200, 0.1) == cut
    assert ik.recorded_top1(config, 5000, 1000, 20, 0.1) is None and ik.recorded_top1(config, 2000, 400, 200, 0.1) is None


def test_script_runs_on_the_embedded_cut_without_mvssl_hub(tmp_path: Path) -> None:
    out = tmp_path / "knn.json"
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert not any(m.split('.')[0] == 'mvssl_hub' for m in sys.modules), 'mvssl_hub was imported'")
    done = subprocess.run([sys.executable, "-I", "-c", code, str(ROOT / "benchmarks" / "independent_knn.py"),
                           str(BUNDLED), "--data", str(ROOT / "recipes" / "data" / "cifar10-5k"), "--limit", "100",
                           "--k", "10", "--threads", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["bank_images"], result["query_images"], result["recorded_top1"]) == (100, 20, None)
    assert result["sha256_matches_config"] is True and 0 <= result["top1_trained"] <= 100
