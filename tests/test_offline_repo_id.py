"""A zoo entry loads by its Hub repo id offline, as it does by name: the verified bundled snapshot answers."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants

import mvssl_hub
from mvssl_hub.errors import HubUnreachableError

ENTRY = mvssl_hub.get_model_weights("barlowtwins_resnet18_w16").DEFAULT.value


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def offline(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("revision", [None, ENTRY.revision, "v1"])  # none, the pinned commit, the card's tag
def test_repo_id_resolves_to_the_bundled_snapshot_offline(offline, revision) -> None:
    by_id = mvssl_hub.from_pretrained(ENTRY.repo_id, revision)
    by_name = mvssl_hub.get_model("barlowtwins_resnet18_w16", weights="DEFAULT")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_id(x), by_name(x))


def test_the_hub_unreachable_is_the_same_as_offline(empty_cache) -> None:
    # no HF_HUB_OFFLINE: the client tries huggingface.co, which the test network refuses
    model = mvssl_hub.from_pretrained(ENTRY.repo_id, local_files_only=False)
    assert model.mvssl_config["backbone"]["width"] == 16


def test_only_the_pinned_entry_answers(offline) -> None:
    with pytest.raises(HubUnreachableError, match="not in the local cache"):
        mvssl_hub.from_pretrained(ENTRY.repo_id, revision="0" * 40)  # another commit of that repo
    with pytest.raises(HubUnreachableError):
        mvssl_hub.from_pretrained("someone/else")
    with pytest.raises(ValueError, match="width=32 was asked for"):
        mvssl_hub.from_pretrained(ENTRY.repo_id, width=32)  # kwargs are checked as for any load


def test_evaluate_falls_back_to_the_embedded_cut_offline_and_says_so(offline, tmp_path, capsys) -> None:
    from conftest import load_recipe

    evaluate = load_recipe("evaluate", "offline_evaluate")
    out = evaluate.main([ENTRY.repo_id, "--protocol", "knn", "--limit", "200", "--no-baseline", "--no-monitors",
                         "--progress", "false", "--output", str(tmp_path / "ev.json")])
    said = capsys.readouterr().out
    assert "the Hub cannot be reached for uoft-cs/cifar10: using the embedded cut" in said
    assert {r["dataset"] for r in out["records"]} == {"cifar10-5k"}  # recorded under the cut's name
    from mvssl_hub.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'data' = 'uoft-cs/cifar10'.*Hub did not answer"):
        evaluate.main([ENTRY.repo_id, "--data", "uoft-cs/cifar10", "--protocol", "knn", "--progress", "false"])


def test_a_zoo_repo_id_beside_a_folder_named_like_its_org(offline, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ENTRY.repo_id.split("/")[0]).mkdir()  # e.g. a checkout called mvssl-hub
    assert mvssl_hub.from_pretrained(ENTRY.repo_id).mvssl_config["backbone"]["width"] == 16
    from mvssl_hub.hub.loading import from_pretrained as load_any

    with pytest.raises(FileNotFoundError, match=r"no such folder \(for the Hub repo, write 'hf-hub:"):
        load_any(f"{ENTRY.repo_id.split('/')[0]}/not-a-zoo-entry")
