"""recipes/evaluate.py end to end on the embedded CIFAR-10 subset: metrics land in config.json, card and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mvssl_hub import build_backbone
from mvssl_hub.data.splits import load_split
from mvssl_hub.eval.probes import extract_features, knn_accuracy
from mvssl_hub.hub.format import save_pretrained
from mvssl_hub.views import VIEW_PRESETS, EvalTransform

from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "recipes" / "data" / "cifar10-5k"
TRANSFORMS = {"preset": "cifar10", "eval_size": 32}


@pytest.fixture(scope="module")
def recipe():
    if not (DATA / "train.parquet").exists():
        pytest.skip("embedded CIFAR-10 subset missing")
    return load_recipe("evaluate", "mvssl_evaluate_recipe")


def _backbone(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("resnet18", small_images=True, width=8)


def test_evaluate_writes_metrics_beside_random_init(recipe, tmp_path: Path) -> None:
    # A "trained" model that differs from the seed-0 random init, saved the way pretrain.py exports.
    model = _backbone(seed=3)
    ckpt = save_pretrained(model, tmp_path / "run" / "export", transforms=TRANSFORMS,
                           train_config={"seed": 0})
    out = recipe.main([str(tmp_path / "run"), "--data", str(DATA), "--limit", "300", "--protocol", "both",
                       "--k", "20", "--epochs", "3", "--batch-size", "128", "--bf16", "off", "--no-progress",
                       "--record"])

    cfg = json.loads((ckpt / "config.json").read_text())
    recs = {(r["task"], r["metric"]): r for r in cfg["metrics"]}
    assert set(recs) == {("knn", "top1"), ("knn", "top5"), ("linear_probe", "top1"), ("linear_probe", "top5")}
    for r in recs.values():
        # a local folder is named by its last component; a --limit run has a split name of its own
        assert r["dataset"] == DATA.name and r["split"] == "test[:300]" and r["random_init"] is not None
        assert 0.0 <= r["value"] <= 100.0 and len(r["date"]) == 10
    assert "k=20, T=0.1" in recs[("knn", "top1")]["protocol"]
    assert "3 epochs" in recs[("linear_probe", "top1")]["protocol"]

    # The recorded kNN numbers are what the probes compute directly, for the model and a seed-0 random init.
    train, test = load_split(str(DATA), "train", limit=300), load_split(str(DATA), "test", limit=300)
    tf = EvalTransform(VIEW_PRESETS["cifar10"])

    def knn(bb: torch.nn.Module) -> dict[str, float]:
        a = extract_features(bb, train.images, tf, bf16=False)
        b = extract_features(bb, test.images, tf, bf16=False)
        return knn_accuracy(a, train.labels, b, test.labels, k=20)

    direct, direct_random = knn(model), knn(_backbone(seed=0))
    assert recs[("knn", "top1")]["value"] == pytest.approx(direct["top1"], abs=1e-3)
    assert recs[("knn", "top1")]["random_init"] == pytest.approx(direct_random["top1"], abs=1e-3)
    assert recs[("knn", "top5")]["value"] == pytest.approx(direct["top5"], abs=1e-3)

    # JSON results and the model card carry the same numbers.
    saved = json.loads((ckpt / "eval_results.json").read_text())
    assert saved["records"] == out["records"] == cfg["metrics"]
    assert saved["results"]["trained"]["knn"]["top1"] == pytest.approx(direct["top1"])
    card = (ckpt / "README.md").read_text()
    assert f"{recs[('knn', 'top1')]['value']:.2f}" in card


def test_evaluate_random_init_uses_the_same_seed(recipe, tmp_path: Path) -> None:
    # The checkpoint IS the seed-5 random init: trained and random-init scores must coincide exactly.
    ckpt = save_pretrained(_backbone(seed=5), tmp_path / "ckpt", transforms=TRANSFORMS)
    before = (ckpt / "config.json").read_text()
    out = recipe.main([str(ckpt), "--data", str(DATA), "--limit", "200", "--protocol", "knn", "--k", "10",
                       "--seed", "5", "--bf16", "off", "--no-progress",
                       "--output", str(tmp_path / "res.json")])
    assert (ckpt / "config.json").read_text() == before  # untouched without --record
    assert [r["task"] for r in out["records"]] == ["knn", "knn"]
    for r in out["records"]:
        assert r["value"] == r["random_init"]
    assert json.loads((tmp_path / "res.json").read_text())["seed"] == 5


def test_find_checkpoint_resolution(tmp_path: Path) -> None:
    from mvssl_hub.hub.format import find_checkpoint

    ckpt = save_pretrained(_backbone(0), tmp_path / "a" / "export", transforms=TRANSFORMS)
    assert find_checkpoint(tmp_path / "a") == ckpt
    assert find_checkpoint(ckpt) == ckpt
    nested = save_pretrained(_backbone(0), tmp_path / "b" / "final" / "best", transforms=TRANSFORMS)
    assert find_checkpoint(tmp_path / "b") == nested
    save_pretrained(_backbone(0), tmp_path / "b" / "other", transforms=TRANSFORMS)
    with pytest.raises(ValueError, match="several checkpoint folders"):
        find_checkpoint(tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        find_checkpoint(tmp_path / "empty")


def test_evaluate_a_hub_repo_id_through_the_loopback_hub(recipe, tmp_path: Path, hub) -> None:
    from mvssl_hub.hub.loading import push_to_hub

    local = save_pretrained(_backbone(seed=2), tmp_path / "local", transforms=TRANSFORMS)
    push_to_hub(local, "org/tiny-eval")
    common = ["--data", str(DATA), "--limit", "150", "--protocol", "knn", "--k", "10", "--bf16", "off",
              "--no-progress"]
    from_hub = recipe.main(["org/tiny-eval", *common, "--output", str(tmp_path / "hub.json")])
    from_dir = recipe.main([str(local), *common, "--output", str(tmp_path / "dir.json")])
    assert from_hub["checkpoint"] is None  # nothing written into the (read-only) Hub cache
    assert json.loads((tmp_path / "hub.json").read_text())["records"] == from_hub["records"]
    assert [r["value"] for r in from_hub["records"]] == [r["value"] for r in from_dir["records"]]
    assert [r["random_init"] for r in from_hub["records"]] == [r["random_init"] for r in from_dir["records"]]


def test_two_processes_gather_every_feature_then_probe_on_the_main_process_alone(recipe, tmp_path: Path) -> None:
    # Under `accelerate launch`, the other processes stop once the last feature is gathered: the main process's
    # probes (minutes on a large split) never hold a collective open, so a collective limit far shorter than the
    # probe does not stop the evaluation. Before, the other process waited for the probe at a barrier and the
    # limit killed the run.
    from _dist_helpers import accelerate_launch

    model = _backbone(seed=3)
    save_pretrained(model, tmp_path / "run" / "export", transforms=TRANSFORMS, train_config={"seed": 0})
    out = tmp_path / "two.json"
    args = [str(ROOT / "recipes" / "evaluate.py"), str(tmp_path / "run"), "--data", str(DATA), "--limit", "300",
            "--protocol", "both", "--k", "20", "--epochs", "12000", "--batch-size", "128", "--bf16", "off",
            "--no-progress", "--no-baseline", "--no-monitors", "--dist_timeout_minutes", "0.05", "--output", str(out)]
    run = accelerate_launch(args, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["num_processes"] == 2 and set(summary["results"]["trained"]) == {"knn", "linear_probe"}
    if summary["probe_seconds"]["trained"] <= 0.05 * 60:  # 6,000 epochs took 4.6 s on the 2-core EPYC: twice that leaves a margin
        pytest.skip(f"the probe took {summary['probe_seconds']['trained']} s, within the 3 s limit: nothing tested")
