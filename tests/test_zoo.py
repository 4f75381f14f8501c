"""Every published zoo entry, re-verified: bundled files match their pinned sha256, weights load strictly into the
torchvision architecture, the card is the one generated from config.json, and kNN on the shipped CIFAR-10 cut
is within 0.5 points of what the card records. A stale or hand-edited entry fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import mvssl_hub
from mvssl_hub.data.splits import load_split
from mvssl_hub.eval.probes import extract_features, knn_accuracy
from mvssl_hub.hub.card import render_card
from mvssl_hub.hub.schema import read_config
from mvssl_hub.registry import registered_weights
from mvssl_hub.safe_io import sha256_file
from mvssl_hub.zoo import ENTRIES_FILE

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "recipes" / "data" / "cifar10-5k"
SHIPPED = json.loads(ENTRIES_FILE.read_text()) if ENTRIES_FILE.is_file() else {}
MEMBERS = [(builder, name) for builder, slot in sorted(SHIPPED.items()) for name in slot["entries"]]


def _weights(builder: str, name: str):
    return registered_weights()[builder][name].value


def test_the_zoo_ships_entries_and_each_builder_defaults_to_one():
    assert MEMBERS, f"{ENTRIES_FILE} lists no published weights"
    for builder, slot in SHIPPED.items():
        enum = registered_weights()[builder]
        assert enum.DEFAULT is enum[slot["default"]]
    total = sum(f.stat().st_size for f in (ROOT / "mvssl_hub" / "bundled").rglob("*") if f.is_file())
    assert total < 6.5 * 2**20 + 50e6, f"bundled snapshots take {total} bytes"  # the w16 pair + the flagship's 50 MB


@pytest.mark.parametrize("builder, name", MEMBERS)
def test_bundled_files_match_the_pinned_sha256(builder, name):
    w = _weights(builder, name)
    folder = w.bundled_path()
    for file, digest in w.sha256.items():
        assert sha256_file(folder / file) == digest, f"{folder / file} differs from the pinned sha256"
    cfg = read_config(folder / "config.json")
    assert {n: i["sha256"] for n, i in cfg["files"].items()} == {n: d for n, d in w.sha256.items() if n != "config.json"}
    assert cfg["metrics"] == w.metrics and cfg["backbone"] == w.meta["backbone"]


@pytest.mark.parametrize("builder, name", MEMBERS)
def test_cards_are_generated_from_config_json_never_edited(builder, name):
    w = _weights(builder, name)
    cfg = read_config(w.bundled_path() / "config.json")
    tag = (cfg.get("train_config") or {}).get("recipe_version")
    card = render_card(cfg, repo_id=w.repo_id, revision=tag, builder=builder)
    assert (w.bundled_path() / "README.md").read_text() == card
    assert (ROOT / "model_cards" / f"{builder}.md").read_text() == card


@pytest.mark.parametrize("builder, name", MEMBERS)
def test_strict_load_into_the_torchvision_architecture(builder, name):
    from safetensors.torch import load_file

    w = _weights(builder, name)
    state = load_file(str(w.bundled_path() / "model.safetensors"))
    plain = torchvision.models.resnet18(weights=None)
    plain.fc = torch.nn.Identity()
    assert set(state) == set(plain.state_dict())  # torchvision's key names, every one of them
    model = mvssl_hub.build_backbone(**w.meta["backbone"])  # a torchvision ResNet at this width
    assert isinstance(model, torchvision.models.ResNet)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("builder, name", MEMBERS)
def test_knn_on_the_shipped_cut_matches_the_card(builder, name):
    w = _weights(builder, name)
    model = mvssl_hub.get_model(builder, weights=f"{type(registered_weights()[builder]['DEFAULT']).__name__}.{name}",
                                local_files_only=True)
    recorded = [m for m in w.metrics if m["task"] == "knn" and m["metric"] == "top1" and m["dataset"] == EMBEDDED.name]
    assert len(recorded) == 1, w.metrics
    rec = recorded[0]
    assert "k=200" in rec["protocol"] and "bank: train (5000 images)" in rec["protocol"]
    bank, queries = load_split(str(EMBEDDED), "train"), load_split(str(EMBEDDED), "test")
    tf = w.transforms()
    f_bank = extract_features(model, bank.images, tf, bf16=False)
    f_query = extract_features(model, queries.images, tf, bf16=False)
    top1 = knn_accuracy(f_bank, bank.labels, f_query, queries.labels, k=200, temperature=0.1)["top1"]
    assert abs(top1 - rec["value"]) <= 0.5, (top1, rec)
    assert rec["random_init"] is not None and rec["value"] > rec["random_init"]


@pytest.mark.parametrize("builder, name", MEMBERS)
def test_default_weights_load_offline_by_name_and_through_torch_hub(builder, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    by_name = mvssl_hub.get_model(builder, weights="DEFAULT")
    by_hub = torch.hub.load(str(ROOT), builder, source="local", weights="DEFAULT")
    assert torch.equal(by_name(x), by_hub(x)) and by_name(x).shape == (2, by_name.feature_dim)


def test_enum_names_follow_torchvision_case() -> None:
    from mvssl_hub.zoo import enum_name

    assert enum_name("barlowtwins_resnet18_w16") == "BarlowTwins_ResNet18_W16_Weights"
    assert enum_name("vicreg_resnet50") == "VICReg_ResNet50_Weights"
    assert enum_name("barlowtwins_resnet18_cifar10") == "BarlowTwins_ResNet18_CIFAR10_Weights"
