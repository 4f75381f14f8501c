"""save_pretrained / from_pretrained / push_to_hub / update_metrics: checkpoints on disk and on the Hub.

A checkpoint is a folder (or a Hub model repo) with ``model.safetensors`` (+ ``projector.safetensors``),
``config.json`` and ``README.md``; see :mod:`mvssl_hub.checkpoint` for the format and its checks.
The Hub endpoint is read when a call is made (``endpoint=`` argument, else
``huggingface_hub.constants.ENDPOINT``), never cached at import.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .backbones import ResNetBackbone
from .checkpoint import (
    CARD_FILE, CONFIG_FILE, MODEL_FILE, PROJECTOR_FILE, atomic_write_folder, build_checkpoint_files,
    check_expected, config_bytes, load_checkpoint_files, load_config, read_config, refuse_pickle, sha256_file,
    verify_sha256, with_metrics,
)
from .errors import CheckpointError, IntegrityError
from .model_card import render_card

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint at the given path / repo, or (offline) nothing cached for it; the message says how to fetch it."""


# ---------------------------------------------------------------------------------------------------- saving

def save_pretrained(
    model: nn.Module, save_dir: str | os.PathLike[str], *, method: str | None = None, beta: float | None = None,
    num_views: int | None = None, train_config: dict | None = None, dataset: dict | None = None,
    transforms: dict | None = None, metrics: list[dict] | None = None, training: dict | None = None,
    include_projector: bool = False, dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``model.safetensors`` (+ ``projector.safetensors``), ``config.json`` and ``README.md`` atomically.

    ``model`` is an SSLModel or ResNetBackbone (DDP / torch.compile wrappers are unwrapped). ``metrics``
    are records {task, metric, value, random_init, dataset, split, protocol, date}; ``dataset`` has
    id, revision, split, fraction; ``transforms`` preset, eval_size, eval_resize, mean, std; ``training``
    hardware, wall_clock_s, images_per_s, steps, epochs. Returns the folder.
    """
    files, cfg = build_checkpoint_files(
        model, method=method, beta=beta, num_views=num_views, train_config=train_config, dataset=dataset,
        transforms=transforms, metrics=metrics, training=training, include_projector=include_projector,
        dtype=dtype,
    )
    files[CONFIG_FILE] = config_bytes(cfg)
    files[CARD_FILE] = render_card(cfg).encode("utf-8")
    return atomic_write_folder(Path(save_dir), files)


def update_metrics(save_dir: str | os.PathLike[str], metrics: list[dict]) -> None:
    """Merge metric records into config.json (same (task, metric, dataset, split) replaces) and regenerate README.md.

    The weights files are carried over unchanged (their sha256 is checked first); the swap is atomic.
    """
    save_dir = Path(save_dir)
    if isinstance(metrics, dict):
        metrics = [metrics]
    cfg = with_metrics(load_config(save_dir), metrics)
    files: dict[str, bytes] = {}
    for name, info in cfg["files"].items():
        verify_sha256(save_dir / name, info["sha256"], str(save_dir / CONFIG_FILE))
        files[name] = (save_dir / name).read_bytes()
    files[CONFIG_FILE] = config_bytes(cfg)
    files[CARD_FILE] = render_card(cfg).encode("utf-8")
    atomic_write_folder(save_dir, files)


# --------------------------------------------------------------------------------------------------- loading

def parse_source(repo_id_or_dir: str | os.PathLike[str], revision: str | None) -> tuple[str, str | None, bool]:
    """(location, revision, is_local). Accepts a folder, ``org/name``, ``hf-hub:org/name[@rev]``."""
    src = os.fspath(repo_id_or_dir)
    if src.startswith("hf-hub:"):
        src = src[len("hf-hub:"):]
        if "@" in src:
            src, rev = src.split("@", 1)
            if revision is not None and revision != rev:
                raise ValueError(f"revision {revision!r} contradicts the one in the name ({rev!r})")
            revision = rev
        return src, revision, False
    if Path(src).exists():
        return src, revision, True
    if _REPO_ID.match(src) and not src.startswith((".", "/")):
        return src, revision, False
    raise CheckpointNotFoundError(f"{src!r} is neither an existing folder nor a Hub repo id 'org/name'")


def _offline(local_files_only: bool) -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return local_files_only or env or bool(constants.HF_HUB_OFFLINE)


def hub_download(
    repo_id: str, filename: str, revision: str | None, *, cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None, local_files_only: bool, force_download: bool = False,
) -> Path:
    """hf_hub_download with errors translated: nothing cached offline / no such repo -> CheckpointNotFoundError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=local_files_only, force_download=force_download,
        ))
    except LocalEntryNotFoundError:
        raise CheckpointNotFoundError(
            f"{filename} of {where} is not in the local cache{f' {cache_dir}' if cache_dir else ''} and the Hub "
            "cannot be reached (offline mode or no connection). Fetch it once with network access, e.g. "
            f"mvssl_hub.from_pretrained({repo_id!r}{f', revision={revision!r}' if revision else ''}) or "
            f"`hf download {repo_id}{f' --revision {revision}' if revision else ''}`, with HF_HUB_OFFLINE unset."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"Hub repo {repo_id!r} not found (or private without a token), and there is no local folder {repo_id!r}"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
    except EntryNotFoundError:
        raise CheckpointNotFoundError(
            f"{where} has no {filename}: not an mvssl-hub checkpoint (expected {MODEL_FILE} and {CONFIG_FILE})"
        ) from None


def fetch_verified(
    repo_id: str, filename: str, commit: str | None, sha256: str, *, cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None, local_files_only: bool,
) -> Path:
    """Download (or take from the cache) one file and check its sha256 before it is used.

    A cached file that fails the check is re-downloaded once with a warning that says so; offline, or
    if a fresh download fails the check, IntegrityError says which file and both hashes.
    """
    from huggingface_hub import try_to_load_from_cache

    was_cached = isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=commit), str)
    path = hub_download(repo_id, filename, commit, cache_dir=cache_dir, endpoint=endpoint,
                        local_files_only=local_files_only)
    found = sha256_file(path)
    if found == sha256:
        return path
    where = f"{repo_id}@{commit}"
    if not was_cached:
        raise IntegrityError(
            f"{filename} downloaded from {where} has sha256 {found}, expected {sha256}: the served file is not "
            "the one the checkpoint was published with"
        )
    if local_files_only:
        raise IntegrityError(
            f"cached {filename} of {where} at {path} is corrupted: sha256 {found}, expected {sha256}. Offline, so it "
            f"was not re-downloaded: delete {path.resolve()} and load again with network access."
        )
    warnings.warn(
        f"cached {filename} of {where} at {path} is corrupted (sha256 {found}, expected {sha256}); re-downloading it",
        RuntimeWarning, stacklevel=3,
    )
    path = hub_download(repo_id, filename, commit, cache_dir=cache_dir, endpoint=endpoint,
                        local_files_only=False, force_download=True)
    found = sha256_file(path)
    if found != sha256:
        raise IntegrityError(
            f"{filename} downloaded from {where} has sha256 {found}, expected {sha256}: the served file is not "
            "the one the checkpoint was published with"
        )
    return path


def _snapshot_commit(path: Path) -> str:
    """The commit sha a cached file belongs to (``.../snapshots/<sha>/<file>``)."""
    name = path.parent.name
    if not _COMMIT.match(name):
        raise CheckpointError(f"cannot tell the commit of cached file {path}")
    return name


def resolve_hub_checkpoint(
    repo_id: str, revision: str | None, *, with_projector: bool, cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None, local_files_only: bool, config_sha256: str | None = None,
    files_sha256: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Path], str]:
    """(validated config, verified local paths of the weights files, commit sha) of a Hub checkpoint.

    All files come from the same commit: config.json is fetched at ``revision``, the weights at the commit
    it resolved to. ``config_sha256`` / ``files_sha256`` (from a published-weights entry) pin the hashes;
    otherwise the weights are checked against the sha256 recorded in config.json.
    """
    offline = _offline(local_files_only)
    if config_sha256 is not None:  # pinned whenever given, whatever the revision
        cfg_path = fetch_verified(repo_id, CONFIG_FILE, revision, config_sha256, cache_dir=cache_dir,
                                  endpoint=endpoint, local_files_only=offline)
    else:
        cfg_path = hub_download(repo_id, CONFIG_FILE, revision, cache_dir=cache_dir, endpoint=endpoint,
                                local_files_only=offline)
    commit = _snapshot_commit(cfg_path)
    cfg = read_config(cfg_path)
    names = [MODEL_FILE] + ([PROJECTOR_FILE] if with_projector else [])
    paths = {}
    for name in names:
        if name not in cfg["files"]:
            raise CheckpointError(f"{repo_id}@{commit} has no {name} (config.json lists {sorted(cfg['files'])})")
        want = cfg["files"][name]["sha256"]
        if files_sha256 is not None and files_sha256.get(name, want) != want:
            raise IntegrityError(
                f"{repo_id}@{commit}: config.json records sha256 {want} for {name} but the published entry pins "
                f"{files_sha256[name]}"
            )
        paths[name] = fetch_verified(repo_id, name, commit, want, cache_dir=cache_dir, endpoint=endpoint,
                                     local_files_only=offline)
    return cfg, paths, commit


def _local_checkpoint(folder: Path, with_projector: bool) -> tuple[dict[str, Any], dict[str, Path]]:
    if folder.is_file():
        refuse_pickle(folder)
        raise CheckpointError(f"{folder}: give the checkpoint folder, not a single file")
    if not (folder / MODEL_FILE).exists():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            refuse_pickle(folder / pickles[0])
    cfg = load_config(folder)
    names = [MODEL_FILE] + ([PROJECTOR_FILE] if with_projector else [])
    paths = {}
    for name in names:
        if name not in cfg["files"]:
            raise CheckpointError(f"{folder}: {name} was not saved (config.json lists {sorted(cfg['files'])}); "
                                  "save with include_projector=True to keep the projector")
        path = folder / name
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: missing, but {CONFIG_FILE} lists it")
        refuse_pickle(path)
        from .checkpoint import read_safetensors_header

        read_safetensors_header(path)  # truncation / corrupted header: the specific error before the hash one
        verify_sha256(path, cfg["files"][name]["sha256"], str(folder / CONFIG_FILE))
        paths[name] = path
    return cfg, paths


def from_pretrained(
    repo_id_or_dir: str | os.PathLike[str], revision: str | None = None, *, with_projector: bool = False,
    local_files_only: bool = False, cache_dir: str | os.PathLike[str] | None = None, endpoint: str | None = None,
    **expected: Any,
) -> ResNetBackbone | nn.Module:
    """Load a checkpoint from a folder, a Hub repo (``org/name``, ``hf-hub:org/name@rev``) or the cache.

    Returns the backbone ((N, 3, H, W) -> (N, feature_dim)) in eval mode, or with ``with_projector`` the
    SSLModel; ``.mvssl_config`` holds the parsed config. ``expected`` kwargs (arch, small_images, width,
    method, projector, proj_dim, num_views, beta, feature_dim) must agree with the checkpoint, else
    ValueError naming both values. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``) only the cache
    is used.
    """
    src, revision, is_local = parse_source(repo_id_or_dir, revision)
    if is_local:
        if revision is not None:
            raise ValueError(f"revision={revision!r} given for a local folder {src!r}")
        cfg, paths = _local_checkpoint(Path(src), with_projector)
        where = str(Path(src) / CONFIG_FILE)
    else:
        cfg, paths, commit = resolve_hub_checkpoint(
            src, revision, with_projector=with_projector, cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=local_files_only,
        )
        where = f"{src}@{commit}"
    check_expected(cfg, expected, where)
    return load_checkpoint_files(cfg, paths, with_projector=with_projector, source=where)


# --------------------------------------------------------------------------------------------------- pushing

def push_to_hub(
    save_dir: str | os.PathLike[str], repo_id: str, *, revision_tag: str | None = None, private: bool = False,
    commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
) -> str:
    """Upload a checkpoint folder as one commit (repo created if needed), tag it, return the commit sha.

    The folder is verified first (config valid, sha256 of every weights file); README.md is re-rendered
    with the repo id in its load snippets. An existing ``revision_tag`` is never moved: ValueError.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    folder = Path(save_dir)
    cfg = load_config(folder)
    for name, info in cfg["files"].items():
        verify_sha256(folder / name, info["sha256"], str(folder / CONFIG_FILE))
    api = HfApi(endpoint=endpoint, token=token)
    if revision_tag is not None:
        try:
            existing = {t.name for t in api.list_repo_refs(repo_id).tags}
        except GatedRepoError:
            raise  # exists, but this token may not read it: not "missing"
        except RepositoryNotFoundError:
            existing = set()  # the repo does not exist yet; 401/403/5xx and other errors propagate
        if revision_tag in existing:
            raise ValueError(f"tag {revision_tag!r} already exists in {repo_id}; a recipe version is published once")
    api.create_repo(repo_id, private=private, exist_ok=True)
    card = render_card(cfg, repo_id=repo_id, revision=revision_tag).encode("utf-8")
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in cfg["files"]]
    ops += [CommitOperationAdd(path_in_repo=CONFIG_FILE, path_or_fileobj=str(folder / CONFIG_FILE)),
            CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card)]
    bb = cfg["backbone"]
    message = commit_message or (
        f"Upload {cfg.get('method') or 'ssl'} {bb['arch']} (width {bb['width']}) checkpoint, mvssl-hub "
        f"{cfg['library_version']}"
    )
    info = api.create_commit(repo_id, operations=ops, commit_message=message)
    commit = info.oid
    if revision_tag is not None:
        api.create_tag(repo_id, tag=revision_tag, revision=commit)
    return commit


__all__ = [
    "CheckpointNotFoundError", "fetch_verified", "from_pretrained", "hub_download", "load_config", "parse_source",
    "push_to_hub", "resolve_hub_checkpoint", "save_pretrained", "update_metrics",
]
