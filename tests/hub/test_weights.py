"""The published-weights registry: empty shipped enums, entry schema, get_model(weights=...) end to end."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants, hf_hub_download

import mvssl_hub
from mvssl_hub.errors import IntegrityError, UnknownModelError
from mvssl_hub.hub.weights import (
    NoPublishedWeightsError,
    Weights,
    make_weights_enum,
    validate_entry,
    weights_entry_from_checkpoint,
)
from mvssl_hub.registry import registered_weights
from mvssl_hub.zoo import BUILDER_SPECS, register_weights

from conftest import same_state

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
BUILDERS = ["barlowtwins_resnet18", "barlowtwins_resnet18_cifar10", "barlowtwins_resnet18_w16", "barlowtwins_resnet50",
            "vicreg_resnet18", "vicreg_resnet18_w16", "vicreg_resnet50"]


def test_builders_without_entries_say_how_to_load_instead(tmp_path):
    assert sorted(registered_weights()) == sorted(BUILDERS) == sorted(BUILDER_SPECS)
    for builder, enum in registered_weights().items():
        assert isinstance(mvssl_hub.get_model(builder, weights=None), torch.nn.Module)
        if len(enum):
            continue
        with pytest.raises(NoPublishedWeightsError, match=f"no weights are published yet for {builder}.*"
                                                          r"mvssl_hub\.from_pretrained"):
            mvssl_hub.get_model(builder, weights="DEFAULT")


def _check_card_agrees(w: Weights) -> None:
    card = ModelCard.load(hf_hub_download(w.repo_id, "README.md", revision=w.revision))
    from_card = sorted((r.metric_config, r.dataset_type, r.dataset_split, r.metric_value)
                       for r in card.data.eval_results or [])
    from_entry = sorted((f"{m['task']}/{m['metric']}", m["dataset"], m["split"], m["value"]) for m in w.metrics)
    assert from_card == from_entry, (w.repo_id, from_card, from_entry)
    assert card.data.library_name == "mvssl-hub"
    cfg = json.loads(Path(hf_hub_download(w.repo_id, "config.json", revision=w.revision)).read_text())
    assert cfg["backbone"] == w.meta["backbone"] and cfg["metrics"] == w.metrics
    assert {n: i["sha256"] for n, i in cfg["files"].items()} == {
        n: s for n, s in w.sha256.items() if n != "config.json"}


def test_registered_entry_has_valid_schema_and_matching_card(published):
    enum = registered_weights()["barlowtwins_resnet18"]
    assert len(enum) == 1  # the dynamically registered entry (DEFAULT is an alias, not a second member)
    for member in enum:
        w = member.value
        assert w.builder == "barlowtwins_resnet18"
        validate_entry(w)
        _check_card_agrees(w)


def test_entry_built_from_pushed_checkpoint(published):
    enum, _, repo, commit = published
    w = enum.DEFAULT.value
    assert enum.DEFAULT is enum.CIFAR10_TINY_V1
    assert (w.builder, w.repo_id, w.revision) == ("barlowtwins_resnet18", repo, commit)
    assert re.fullmatch(r"[0-9a-f]{40}", w.revision)
    assert sorted(w.sha256) == ["config.json", "model.safetensors", "projector.safetensors"]
    for name in sorted(w.sha256):
        data = Path(hf_hub_download(repo, name, revision=commit)).read_bytes()
        assert w.sha256[name] == hashlib.sha256(data).hexdigest()
    assert w.meta["backbone"] == {"arch": "resnet18", "small_images": True, "width": 8}
    assert w.meta["transforms"]["preset"] == "cifar10" and w.meta["recipe"]["recipe_version"] == "v1"
    assert w.transforms()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 3, 32, 32)
    assert w.meta["num_params"] == sum(p.numel() for p in mvssl_hub.build_backbone("resnet18", width=8).parameters())
    assert [m["value"] for m in w.metrics] == [41.5, 45.0]


def test_get_model_with_published_weights(published):
    enum, model, repo, commit = published
    loaded = mvssl_hub.get_model("barlowtwins_resnet18", weights=enum.CIFAR10_TINY_V1)
    assert torch.equal(loaded(X), model.backbone(X))
    assert loaded.mvssl_weights is enum.CIFAR10_TINY_V1.value
    for spec in ("DEFAULT", "CIFAR10_TINY_V1", "BarlowTwins_ResNet18_Weights.CIFAR10_TINY_V1"):
        assert same_state(mvssl_hub.get_model("barlowtwins_resnet18", weights=spec, width=8), model.backbone), spec


def test_published_weights_load_offline_from_cache(published, hub, monkeypatch):
    enum, model, _, _ = published
    mvssl_hub.get_model("barlowtwins_resnet18", weights="DEFAULT")
    n = len(hub.state.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert same_state(mvssl_hub.get_model("barlowtwins_resnet18", weights="DEFAULT"), model.backbone)
    assert len(hub.state.requests) == n


@pytest.mark.parametrize("kwargs, error, message", [
    ({"small_images": False}, ValueError, r"small_images=False\) contradicts the weights .* small_images=True"),
    ({"width": 64}, ValueError, r"width=64\) contradicts the weights .* width=8"),
    ({"proj_dim": 128}, TypeError, r"unexpected keyword argument\(s\) \['proj_dim'\]"),
])
def test_kwargs_contradicting_published_weights(published, kwargs, error, message):
    with pytest.raises(error, match=message):
        mvssl_hub.get_model("barlowtwins_resnet18", weights="DEFAULT", **kwargs)


def test_wrong_weights_names(published):
    enum = published[0]
    with pytest.raises(UnknownModelError, match=r"unknown weights for barlowtwins_resnet18 'CIFAR10_TINY_V2'; "
                                                r"did you mean 'CIFAR10_TINY_V1'"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights="CIFAR10_TINY_V2")
    with pytest.raises(ValueError, match="belong to VICReg_ResNet18_Weights, but barlowtwins_resnet18 takes"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights="VICReg_ResNet18_Weights.CIFAR10_TINY_V1")
    with pytest.raises(ValueError, match="are for barlowtwins_resnet18, not vicreg_resnet18"):
        mvssl_hub.get_model("vicreg_resnet18", weights=enum.DEFAULT)
    with pytest.raises(TypeError, match="weights must be None, 'DEFAULT'"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights=3)
    with pytest.raises(ValueError, match="is for barlowtwins_resnet18, not vicreg_resnet18"):
        register_weights("vicreg_resnet18", enum)


def test_pinned_hashes_are_enforced(published):
    enum, _, _, _ = published
    w = enum.DEFAULT.value
    bad_model = Weights(**{**w.__dict__, "sha256": {**w.sha256, "model.safetensors": "0" * 64}})
    with pytest.raises(IntegrityError, match="published entry pins 0000"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights=bad_model)
    bad_config = Weights(**{**w.__dict__, "sha256": {**w.sha256, "config.json": "1" * 64}})
    # the cached config.json fails the pinned hash: re-downloaded once (with a warning), then refused
    with pytest.warns(RuntimeWarning, match="re-downloading"), \
            pytest.raises(IntegrityError, match=r"config\.json downloaded from .* has sha256 .* expected 1111"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights=bad_config)


def test_hand_made_weights_entry_is_validated(published):
    w = published[0].DEFAULT.value
    unpinned = Weights(**{**w.__dict__, "revision": "main"})
    with pytest.raises(ValueError, match="revision 'main' must be a full 40-hex commit sha"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights=unpinned)
    short_hash = Weights(**{**w.__dict__, "sha256": {**w.sha256, "model.safetensors": "abc"}})
    with pytest.raises(ValueError, match=r"sha256\['model.safetensors'\] = 'abc' must be a 64-hex digest"):
        mvssl_hub.get_model("barlowtwins_resnet18", weights=short_hash)


def test_cached_published_file_corrupted_is_redownloaded(published):
    enum, model, repo, commit = published
    mvssl_hub.get_model("barlowtwins_resnet18", weights="DEFAULT")
    cached = Path(hf_hub_download(repo, "model.safetensors", revision=commit, local_files_only=True))
    good = cached.read_bytes()
    cached.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    with pytest.warns(RuntimeWarning, match="is corrupted .* re-downloading"):
        loaded = mvssl_hub.get_model("barlowtwins_resnet18", weights="DEFAULT")
    assert same_state(loaded, model.backbone) and cached.read_bytes() == good


def test_entries_are_validated(published, tiny_ckpt):
    entry = {k: v for k, v in published[0].DEFAULT.value.__dict__.items()}
    with pytest.raises(ValueError, match="revision 'main' must be a full 40-hex commit sha"):
        make_weights_enum("E", {"A": {**entry, "revision": "main"}})
    with pytest.raises(ValueError, match=r"meta missing \['transforms'\]"):
        make_weights_enum("E", {"A": {**entry, "meta": {k: v for k, v in entry["meta"].items() if k != "transforms"}}})
    with pytest.raises(ValueError, match="meta says barlowtwins/.* but the builder vicreg_resnet18 is vicreg"):
        register_weights("vicreg_resnet18", {"A": {**entry, "builder": "vicreg_resnet18"}})
    with pytest.raises(UnknownModelError, match="did you mean 'barlowtwins_resnet18'"):
        register_weights("barlowtwins_resnet81", {"A": {**entry, "builder": "barlowtwins_resnet81"}})
    with pytest.raises(ValueError, match="is a local folder; a weights entry needs a checkpoint pushed"):
        weights_entry_from_checkpoint(str(tiny_ckpt))
