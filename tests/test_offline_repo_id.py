"""A zoo entry loads by its Hub repo id offline, as it does by name: the verified bundled snapshot answers; so it does
when the Hub has no such repo (with a warning). A name that is neither a folder nor a reachable repo fails at once."""

from __future__ import annotations

import socket
import time

import pytest
import torch
from huggingface_hub import constants

import mvssl_hub
from mvssl_hub.errors import HubRepoNotFoundError, HubUnreachableError

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


@pytest.mark.parametrize("revision", [None, "v1"])  # the card's first load line names the tag
def test_a_hub_without_the_zoo_repo_answers_with_the_bundled_snapshot_and_a_warning(hub, revision) -> None:
    with pytest.warns(RuntimeWarning, match=r"has no repo 'mvssl-hub/[^']*' .*; loading zoo entry barlowtwins_resnet18_w16 "
                                            r"\(.*\) from its verified bundled snapshot"):
        by_id = mvssl_hub.from_pretrained(ENTRY.repo_id, revision)
    by_name = mvssl_hub.get_model("barlowtwins_resnet18_w16", weights="DEFAULT")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_id(x), by_name(x))
    assert any(path.endswith("/config.json") for _, path in hub.state.requests)  # the Hub was asked first
    with pytest.raises(HubRepoNotFoundError, match="has no repo 'someone/else'"):  # no entry: nothing to fall back on
        mvssl_hub.from_pretrained("someone/else")


def _unused_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["unused loopback port", "http://mvssl-hub-test.invalid"])
def test_neither_a_folder_nor_a_reachable_repo_fails_at_once_naming_both(empty_cache, tmp_path, monkeypatch,
                                                                         endpoint) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder, so "runs/does_not_exist" could be a repo id
    if endpoint == "unused loopback port":
        endpoint = f"http://127.0.0.1:{_unused_loopback_port()}"
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as raised:
        mvssl_hub.from_pretrained("runs/does_not_exist", endpoint=endpoint)
    assert time.monotonic() - start < 3.0  # huggingface_hub alone retries for about 25 s
    said = str(raised.value)
    assert f"'runs/does_not_exist' is neither a local folder (no such folder: {tmp_path / 'runs'}" in said
    assert f"the Hub at {endpoint} cannot be reached" in said and said.count("\n") == 0


def test_evaluate_on_a_missing_run_folder_says_so_at_once(empty_cache, tmp_path, monkeypatch) -> None:
    from mvssl_hub.errors import ConfigError

    from conftest import load_recipe

    evaluate = load_recipe("evaluate", "missing_folder_evaluate")
    monkeypatch.chdir(tmp_path)  # the network is absent here: conftest refuses every non-loopback connection
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"'runs/does_not_exist' is neither a local folder .* nor a Hub repo that "
                                          r"could be loaded: .* cannot be reached"):
        evaluate.main(["runs/does_not_exist", "--progress", "false"])
    assert time.monotonic() - start < 3.0
