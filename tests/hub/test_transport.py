"""Checkpoints through a loopback Hub with the real huggingface_hub client: push, pull, pin, cache, offline."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors.torch import load_file

import mvssl_hub.hub.weights
from mvssl_hub.backbones import build_backbone
from mvssl_hub.errors import CheckpointError, CheckpointNotFoundError, HubRepoNotFoundError, IntegrityError
from mvssl_hub.hub.format import save_pretrained
from mvssl_hub.hub.loading import from_pretrained, push_to_hub
from mvssl_hub.hub.remote import resolve_hub_checkpoint
from mvssl_hub.hub.schema import load_config
from mvssl_hub.models import SSLModel

from conftest import TINY_SAVE_KWARGS, same_state

# the client uploads LFS bytes with httpx's data= (its own deprecation, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_push_then_load_gives_identical_outputs(pushed, hub):
    model, folder, repo, commit = pushed
    state = hub.state.repos[("model", repo)]
    assert state.tags["v1"] == commit == state.branches["main"]
    assert sorted(state.commits[commit].files) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors", "projector.safetensors"]
    assert state.commits[commit].files["model.safetensors"].lfs  # weights went through the LFS batch API
    loaded = from_pretrained(repo, with_projector=True)
    assert isinstance(loaded, SSLModel)
    views = X.unsqueeze(0).expand(2, -1, -1, -1, -1)
    assert torch.equal(loaded(views), model(views))
    for source, rev in ((repo, "v1"), (repo, commit), (f"hf-hub:{repo}@v1", None), (f"hf-hub:{repo}", None)):
        assert same_state(from_pretrained(source, rev), model.backbone), (source, rev)
    assert from_pretrained(repo).mvssl_config == load_config(folder)


def test_card_on_the_hub_has_repo_id_and_eval_results(pushed):
    _, folder, repo, _ = pushed
    card = ModelCard.load(hf_hub_download(repo, "README.md", revision="v1"))
    assert f'mvssl_hub.from_pretrained("{repo}", revision="v1")' in card.text
    cfg = load_config(folder)
    assert sorted((r.metric_config, r.metric_value) for r in card.data.eval_results) == sorted(
        (f"{m['task']}/{m['metric']}", m["value"]) for m in cfg["metrics"])


def test_revisions_are_pinned_by_tag_and_sha(pushed, tmp_path):
    model, _, repo, commit1 = pushed
    torch.manual_seed(5)
    other = build_backbone("resnet18", width=8).eval()
    d2 = save_pretrained(other, tmp_path / "v2", **TINY_SAVE_KWARGS)
    commit2 = push_to_hub(d2, repo, revision_tag="v2", commit_message="second version")
    assert commit2 != commit1
    assert same_state(from_pretrained(repo, "v1"), model.backbone)
    assert same_state(from_pretrained(repo, commit1), model.backbone)
    assert same_state(from_pretrained(repo), other) and same_state(from_pretrained(repo, "v2"), other)
    with pytest.raises(CheckpointNotFoundError, match="revision 'v9' not found"):
        from_pretrained(repo, "v9")


def test_existing_tag_is_not_moved(pushed, hub):
    _, folder, repo, _ = pushed
    n_commits = len(hub.state.repos[("model", repo)].commits)
    with pytest.raises(ValueError, match="tag 'v1' already exists"):
        push_to_hub(folder, repo, revision_tag="v1")
    assert len(hub.state.repos[("model", repo)].commits) == n_commits


@pytest.mark.parametrize("status", [401, 403, 500])
def test_push_does_not_mistake_auth_or_server_errors_for_a_new_repo(tiny_ckpt, hub, monkeypatch, status):
    import hub_server

    route = hub_server._Handler._route

    def failing_refs(self, method, path, query, body):
        if path.endswith("/refs"):
            return self._error(status, None, f"injected {status}")
        return route(self, method, path, query, body)

    monkeypatch.setattr(hub_server._Handler, "_route", failing_refs)
    with pytest.raises(HfHubHTTPError, match=str(status)) as info:
        push_to_hub(tiny_ckpt, "org/refs-fail", revision_tag="v1")
    assert not isinstance(info.value, RepositoryNotFoundError)
    assert ("model", "org/refs-fail") not in hub.state.repos  # nothing was created or committed


def test_pinned_config_hash_checked_without_revision(pushed):
    _, _, repo, _ = pushed
    common = dict(with_projector=False, cache_dir=None, endpoint=None, local_files_only=False)
    with pytest.raises(IntegrityError, match=r"config\.json downloaded from .* expected 1111"):
        resolve_hub_checkpoint(repo, None, config_sha256="1" * 64, **common)
    good = hashlib.sha256(Path(hf_hub_download(repo, "config.json")).read_bytes()).hexdigest()
    cfg, paths, _ = resolve_hub_checkpoint(repo, None, config_sha256=good, **common)
    assert sorted(paths) == ["model.safetensors"]


def test_private_push_and_explicit_endpoint(tiny_ckpt, hub, monkeypatch):
    # the client's import-time endpoint points elsewhere: only endpoint= reaches the loopback Hub
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "https://huggingface.co/{repo_id}/resolve/{revision}/{filename}")
    commit = push_to_hub(tiny_ckpt, "org/private-one", private=True, endpoint=hub.url)
    assert hub.state.repos[("model", "org/private-one")].private
    loaded = from_pretrained("org/private-one", commit, endpoint=hub.url)
    assert loaded.mvssl_config["files"] == load_config(tiny_ckpt)["files"]


def test_push_refuses_a_corrupted_folder(tiny_ckpt, hub):
    path = tiny_ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors: sha256"):
        push_to_hub(tiny_ckpt, "org/broken")
    assert ("model", "org/broken") not in hub.state.repos


def test_offline_load_from_cache_makes_no_request(pushed, hub, monkeypatch):
    model, _, repo, commit = pushed
    from_pretrained(repo, "v1")  # fills the cache (and refs/v1)
    from_pretrained(repo)  # refs/main
    n = len(hub.state.requests)
    _go_offline(monkeypatch)
    assert same_state(from_pretrained(repo, "v1"), model.backbone)
    assert same_state(from_pretrained(repo), model.backbone)  # main, from refs/main
    assert same_state(from_pretrained(repo, commit), model.backbone)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert same_state(from_pretrained(repo, "v1", local_files_only=True), model.backbone)
    assert len(hub.state.requests) == n


def test_offline_with_nothing_cached_says_how_to_fetch(pushed, hub, monkeypatch):
    _, _, repo, _ = pushed
    n = len(hub.state.requests)
    # only the environment variable, set after huggingface_hub was imported: still honoured, no request made
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert constants.HF_HUB_OFFLINE is False
    with pytest.raises(CheckpointNotFoundError) as info:
        from_pretrained(repo, "v1")
    assert len(hub.state.requests) == n
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "config.json of org/bt-r18-tiny@v1 is not in the local cache" in msg
    assert "HF_HUB_OFFLINE unset" in msg and f"hf download {repo} --revision v1" in msg


def _cached_weights(repo: str, commit: str) -> Path:
    return Path(hf_hub_download(repo, "model.safetensors", revision=commit, local_files_only=True))


def test_cached_file_corrupted_after_download_is_redownloaded(pushed, monkeypatch):
    model, _, repo, commit = pushed
    from_pretrained(repo, "v1")
    cached = _cached_weights(repo, commit)
    good = cached.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    cached.write_bytes(bytes(bad))  # through the snapshot symlink: the blob itself is damaged
    with pytest.warns(RuntimeWarning, match=r"cached model\.safetensors .* is corrupted .* re-downloading"):
        loaded = from_pretrained(repo, "v1")
    assert same_state(loaded, model.backbone)
    assert _cached_weights(repo, commit).read_bytes() == good


def test_cached_file_corrupted_offline_raises_naming_the_file(pushed, monkeypatch):
    _, _, repo, commit = pushed
    from_pretrained(repo, "v1")
    cached = _cached_weights(repo, commit)
    cached.write_bytes(cached.read_bytes()[:-8] + b"\0" * 8)
    _go_offline(monkeypatch)
    with pytest.raises(IntegrityError, match=r"cached model\.safetensors of org/bt-r18-tiny@[0-9a-f]{40} at .* is "
                                             r"corrupted.*not re-downloaded: delete"):
        from_pretrained(repo, "v1")


def test_corrupted_file_served_by_the_hub(pushed, hub):
    _, _, repo, _ = pushed
    hub.state.tamper(repo, "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh download is not "cached": no re-download warning
        with pytest.raises(IntegrityError, match="downloaded from org/bt-r18-tiny@.* the served file is not"):
            from_pretrained(repo)


def test_missing_repo_and_non_checkpoint_repo(hub):
    with pytest.raises(HubRepoNotFoundError, match=r"'org/nothing' is neither a local folder \(no such folder: .*\) "
                                                   r"nor a Hub repo that could be loaded: the Hub at http://127\.0\.0\.1:\d+ "
                                                   r"has no repo 'org/nothing'"):
        from_pretrained("org/nothing")
    with pytest.raises(HubRepoNotFoundError, match=r"^the Hub at .* has no repo 'org/nothing'"):  # no folder meant
        from_pretrained("hf-hub:org/nothing")
    api = HfApi(endpoint=hub.url)
    api.create_repo("org/just-a-readme")
    api.upload_file(path_or_fileobj=b"# hello\n", path_in_repo="README.md", repo_id="org/just-a-readme")
    with pytest.raises(CheckpointNotFoundError, match="has no config.json: not an mvssl-hub checkpoint"):
        from_pretrained("org/just-a-readme")


_CHILD = """
import sys, time
from pathlib import Path
from safetensors.torch import save_file
from mvssl_hub.hub.loading import from_pretrained
repo, out, me, other = sys.argv[1:]
Path(me).touch()
deadline = time.time() + 60
while not Path(other).exists() and time.time() < deadline:  # start both downloads together
    time.sleep(0.01)
model = from_pretrained(repo, "v1", with_projector=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
"""


def test_two_processes_loading_at_once(pushed, hf_home, tmp_path):
    """Both processes download into the same empty cache at once; both succeed and no partial file remains."""
    model, _, repo, _ = pushed
    outs = [tmp_path / f"child{i}.safetensors" for i in range(2)]
    flags = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, repo, str(outs[i]), str(flags[i]), str(flags[1 - i])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [r[1].decode()[-2000:] for r in results]
    expected = model.state_dict()
    for o in outs:
        got = load_file(str(o))
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert len(list(hf_home.rglob("model.safetensors"))) == 1  # one snapshot entry
    assert [p for p in hf_home.rglob("*") if p.name.endswith(".incomplete")] == []


def test_publish_recipe_pushes_a_run_folder_and_prints_the_entry(tiny_model, tmp_path, hub, capsys):
    from mvssl_hub.hub.weights import make_weights_enum

    from conftest import load_recipe

    publish = load_recipe("publish", "publish_recipe")
    run = tmp_path / "run"
    save_pretrained(tiny_model, run / "export", **TINY_SAVE_KWARGS)
    out = publish.main([str(run), "--repo-id", "org/from-recipe"])
    assert out["tag"] == "v1"  # train_config.recipe_version
    assert hub.state.repos[("model", "org/from-recipe")].tags["v1"] == out["commit"]
    printed = capsys.readouterr().out
    entry = json.loads(printed.split("\n", 1)[1])[out["member"]]
    assert out["member"] == "CIFAR10_V1" and entry["revision"] == out["commit"]
    enum = make_weights_enum("BarlowTwins_ResNet18_Weights", {out["member"]: entry})  # one data entry suffices
    assert same_state(mvssl_hub.hub.weights.load_weights(enum.DEFAULT.value),
                      tiny_model.backbone)


def test_trained_checkpoint_round_trip_from_pretrained_and_torch_hub(hub, tmp_path):
    """A few real optimisation steps, push, then load by repo id and by torch.hub weights: identical outputs."""
    from mvssl_hub.hub.weights import make_weights_enum, weights_entry_from_checkpoint
    from mvssl_hub.losses import build_loss
    from mvssl_hub.models import build_ssl_model
    from mvssl_hub.zoo import register_weights

    torch.manual_seed(0)
    model = build_ssl_model("resnet18", small_images=True, width=8, proj_dim=32)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn, opt = build_loss("barlowtwins", 0.02), torch.optim.Adam(model.parameters(), lr=1e-3)
    views = torch.randn(2, 8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model.train()
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(views)).backward()
        opt.step()
    model.eval()
    assert not torch.equal(model.state_dict()["backbone.conv1.weight"],
                           initial["backbone.conv1.weight"])
    folder = save_pretrained(model, tmp_path / "trained", include_projector=True, **TINY_SAVE_KWARGS)
    push_to_hub(folder, "org/trained", revision_tag="v1")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    ref = model.backbone(x)
    assert torch.equal(from_pretrained("org/trained", "v1")(x), ref)
    enum = make_weights_enum("BarlowTwins_ResNet18_Weights",
                             {"CIFAR10_TRAINED": weights_entry_from_checkpoint("org/trained", "v1",
                                                                                  builder="barlowtwins_resnet18")})
    previous = register_weights("barlowtwins_resnet18", enum)
    try:
        root = Path(__file__).resolve().parents[2]
        hub_model = torch.hub.load(str(root), "barlowtwins_resnet18", source="local",
                                   weights="BarlowTwins_ResNet18_Weights.CIFAR10_TRAINED")
        assert torch.equal(hub_model(x), ref)
    finally:
        register_weights("barlowtwins_resnet18", previous)


def test_loopback_hub_serves_dataset_repos_and_snapshots(hub, tmp_path):
    """Dataset repos work too (create, upload, tree listing, snapshot_download, resolve by tag and sha)."""
    from huggingface_hub import snapshot_download

    api = HfApi(endpoint=hub.url)
    api.create_repo("org/tiny-data", repo_type="dataset")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 100 + b"PAR1")
    (tmp_path / "data" / "test.parquet").write_bytes(b"PAR1 small PAR1")
    info = api.upload_folder(folder_path=tmp_path / "data", path_in_repo="data", repo_id="org/tiny-data",
                             repo_type="dataset")
    api.create_tag("org/tiny-data", tag="1.0", repo_type="dataset")
    assert sorted(api.list_repo_files("org/tiny-data", repo_type="dataset")) == [
        ".gitattributes", "data/test.parquet", "data/train.parquet"]
    local = Path(snapshot_download("org/tiny-data", repo_type="dataset", revision="1.0"))
    assert (local / "data" / "train.parquet").read_bytes() == (tmp_path / "data" / "train.parquet").read_bytes()
    assert local.name == info.oid  # the snapshot is the commit the tag points at
    path = hf_hub_download("org/tiny-data", "data/test.parquet", repo_type="dataset", revision=info.oid)
    assert Path(path).read_bytes() == b"PAR1 small PAR1"


@pytest.mark.parametrize("curves", ["/etc/hostname", "../secret.png", "sub/plot.png", ".hidden.png", "notes.txt"])
def test_a_config_file_name_must_be_a_plain_name_in_the_folder(tiny_ckpt, hub, curves):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    cfg["training"] = {**(cfg.get("training") or {}), "curves": curves}
    (tiny_ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"training\.curves"):
        load_config(tiny_ckpt)
    with pytest.raises(CheckpointError, match=r"training\.curves"):
        push_to_hub(tiny_ckpt, "org/leak")
    assert ("model", "org/leak") not in hub.state.repos


def test_push_uploads_only_the_checkpoints_own_files(tiny_ckpt, hub, tmp_path):
    secret = tmp_path / "private.png"
    secret.write_bytes(b"\x89PNG private")
    (tiny_ckpt / "notes.txt").write_text("not part of the format")
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    cfg["training"] = {**(cfg.get("training") or {}), "curves": "training_curves.png"}
    (tiny_ckpt / "config.json").write_text(json.dumps(cfg))
    (tiny_ckpt / "training_curves.png").symlink_to(secret)  # a plain name that leads out of the folder
    with pytest.raises(CheckpointError, match=r"training\.curves = 'training_curves\.png' is a link"):
        push_to_hub(tiny_ckpt, "org/linked")
    (tiny_ckpt / "training_curves.png").unlink()
    (tiny_ckpt / "training_curves.png").write_bytes(b"\x89PNG own")
    push_to_hub(tiny_ckpt, "org/own")
    assert sorted(HfApi().list_repo_files("org/own")) == sorted(
        [".gitattributes", "README.md", "config.json", "model.safetensors", "projector.safetensors",
         "training_curves.png"])


def test_cache_eviction_never_deletes_outside_the_repos_blobs(tmp_path):
    from mvssl_hub.hub.transport import evict_cached_file

    repo = tmp_path / "hub" / "models--org--x"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "blobs"  # a folder of the same name, outside the cache
    outside.mkdir(parents=True)
    victim = outside / "precious"
    victim.write_text("keep me")
    link = repo / "snapshots" / "c0ffee" / "model.safetensors"
    link.symlink_to(victim)
    evict_cached_file(link)
    assert not link.is_symlink() and victim.read_text() == "keep me"
    own = repo / "blobs" / "abc"
    own.write_text("cached")
    link.symlink_to(own)
    evict_cached_file(link)
    assert not link.is_symlink() and not own.exists()
