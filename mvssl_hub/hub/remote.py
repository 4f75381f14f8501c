"""A checkpoint in a Hub repo: fetched (its config checked first) and published (the folder checked first).

:func:`resolve_hub_checkpoint` downloads ``config.json``, validates it, and fetches the weights files it lists at
the commit the config resolved to, each against its sha256; :func:`upload_checkpoint` checks a local checkpoint
folder (config schema, the sha256 of every weights file), renders its card for the repo and hands the files to the
transport for one commit. The transport (:mod:`.transport`) moves the files; what a checkpoint is stays here and in
the format below it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, IntegrityError
from ..safe_io import sha256_file
from .card import render_card
from .format.read import verify_sha256, weights_to_read
from .schema import CARD_FILE, CONFIG_FILE, WEIGHTS_FILES, load_config, read_config
from .transport import (
    REPO_ID,
    fetch_verified,
    hub_download,
    is_offline,
    snapshot_commit,
    unreachable_reason,
    upload_files,
)


def resolve_hub_checkpoint(
    repo_id: str, revision: str | None, *, with_projector: bool, cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None, local_files_only: bool = False, config_sha256: str | None = None,
    files_sha256: dict[str, str] | None = None, token: str | bool | None = None, force_download: bool = False,
) -> tuple[dict[str, Any], dict[str, Path], str]:
    """(validated config, verified local paths of the weights files, commit sha) of a Hub checkpoint.

    All files come from the same commit: config.json is fetched at ``revision``, the weights at the commit
    it resolved to. ``config_sha256`` / ``files_sha256`` (from a published-weights entry) pin the hashes;
    otherwise the weights are checked against the sha256 recorded in config.json.
    """
    offline = is_offline(local_files_only)
    unreachable = None if offline else unreachable_reason(endpoint)  # then only the cache can answer, at once
    kw: dict[str, Any] = dict(cache_dir=cache_dir, endpoint=endpoint, local_files_only=offline or bool(unreachable),
                              token=token, force_download=force_download and not unreachable)
    if config_sha256 is not None:  # pinned whenever given, whatever the revision
        cfg_path = fetch_verified(repo_id, CONFIG_FILE, revision, config_sha256, unreachable=unreachable, **kw)
    else:
        cfg_path = hub_download(repo_id, CONFIG_FILE, revision, unreachable=unreachable, **kw)
    commit = snapshot_commit(cfg_path)
    cfg = read_config(cfg_path)
    paths = {}
    for name in weights_to_read(cfg, with_projector):
        if name not in cfg["files"]:
            raise CheckpointError(f"{repo_id}@{commit} has no {name} (config.json lists {sorted(cfg['files'])})")
        want = cfg["files"][name]["sha256"]
        if files_sha256 is not None and files_sha256.get(name, want) != want:
            raise IntegrityError(
                f"{repo_id}@{commit}: config.json records sha256 {want} for {name} but the published entry pins "
                f"{files_sha256[name]}"
            )
        paths[name] = fetch_verified(repo_id, name, commit, want, unreachable=unreachable, **kw)
    return cfg, paths, commit


def hub_file_hashes(repo_id: str, revision: str | None, *, cache_dir: str | os.PathLike[str] | None = None,
                    endpoint: str | None = None, token: str | bool | None = None,
                    ) -> tuple[dict[str, Any], dict[str, str], str]:
    """(config, sha256 of config.json and of every weights file as the Hub serves them, commit sha)."""
    kw: dict[str, Any] = dict(cache_dir=cache_dir, endpoint=endpoint, token=token)
    cfg_path = hub_download(repo_id, CONFIG_FILE, revision, **kw)
    commit = snapshot_commit(cfg_path)
    cfg = read_config(cfg_path)
    sha = {CONFIG_FILE: sha256_file(cfg_path)}
    for name, info in cfg["files"].items():
        sha[name] = sha256_file(fetch_verified(repo_id, name, commit, info["sha256"], **kw))
    return cfg, sha, commit


def upload_list(folder: Path, cfg: dict[str, Any]) -> list[str]:
    """The checkpoint's own files to upload, besides config.json and the card: the weights files the validated
    config lists, and its figure (``training.curves``, a plain name by then) when that is a regular file of
    the folder itself. A symlink is refused (it could point anywhere on disk); nothing else is ever sent."""
    names = [name for name in WEIGHTS_FILES if name in cfg["files"]]
    curves = (cfg.get("training") or {}).get("curves")
    if curves:
        path = folder / curves  # a plain name (validate_config): only a symlink can lead out of the folder
        if path.is_symlink():
            raise CheckpointError(f"{folder / CONFIG_FILE}: training.curves = {curves!r} is a link out of the "
                                  "checkpoint folder; refusing to upload it")
        if path.is_file():
            names.append(curves)
    return names


def default_commit_message(cfg: dict[str, Any]) -> str:
    """The default commit message: method, architecture, width and library version of the checkpoint."""
    bb = cfg["backbone"]
    return (f"Upload {cfg.get('method') or 'ssl'} {bb['arch']}" + (f" (width {bb['width']})" if "width" in bb else "")
            + " checkpoint, mvssl-hub "
            f"{cfg['library_version']}")


def upload_checkpoint(
    save_dir: str | os.PathLike[str], repo_id: str, *, revision_tag: str | None = None, private: bool = False,
    commit_message: str | None = None, token: str | bool | None = None, endpoint: str | None = None,
    builder: str | None = None,
) -> str:
    """Upload a checkpoint folder as one commit (repo created if needed), tag it, return the commit sha
    (:func:`mvssl_hub.push_to_hub` is the public verb, for a model or a folder).

    The folder is verified first (config valid, sha256 of every weights file); README.md is re-rendered
    with the repo id in its load snippets (and ``builder``, the zoo builder it is published under, if given).
    An existing ``revision_tag`` is never moved: ValueError.
    """
    if not REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    folder = Path(save_dir)
    cfg = load_config(folder)
    for name, info in cfg["files"].items():
        verify_sha256(folder / name, info["sha256"], str(folder / CONFIG_FILE))
    card = render_card(cfg, repo_id=repo_id, revision=revision_tag, builder=builder).encode("utf-8")
    return upload_files(folder, [*upload_list(folder, cfg), CONFIG_FILE], {CARD_FILE: card}, repo_id,
                        message=commit_message or default_commit_message(cfg), revision_tag=revision_tag,
                        private=private, token=token, endpoint=endpoint)


__all__ = ["default_commit_message", "hub_file_hashes", "resolve_hub_checkpoint", "upload_checkpoint", "upload_list"]
