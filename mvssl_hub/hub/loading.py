"""``from_pretrained``: a checkpoint folder or Hub repo -> a model, strictly down the layers.

source -> transport (Hub files, sha256-verified) or the local folder -> format (config, headers, shapes,
metadata, tensors) -> ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..backbones import ResNetBackbone
from .format import model_from_state, read_checkpoint, read_checkpoint_folder, save_pretrained
from .schema import CONFIG_FILE, check_expected
from .transport import parse_source, push_to_hub, resolve_hub_checkpoint


def from_pretrained(
    repo_id_or_dir: str | os.PathLike[str], revision: str | None = None, *, with_projector: bool = False,
    local_files_only: bool = False, cache_dir: str | os.PathLike[str] | None = None, endpoint: str | None = None,
    token: str | bool | None = None, force_download: bool = False, **expected: Any,
) -> ResNetBackbone | nn.Module:
    """Load a checkpoint from a folder, a Hub repo (``org/name``, ``hf-hub:org/name@rev``) or the cache.

    Returns the backbone ((N, 3, H, W) -> (N, feature_dim)) in eval mode, or with ``with_projector`` the
    SSLModel; ``.mvssl_config`` holds the parsed config. ``expected`` kwargs (arch, small_images, width,
    method, projector, proj_dim, num_views, beta, feature_dim) must agree with the checkpoint, else
    ValueError naming both values. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``) only the cache
    is used. ``token``, ``cache_dir``, ``force_download`` are huggingface_hub's.
    """
    src, revision, is_local = parse_source(repo_id_or_dir, revision)
    if is_local:
        if revision is not None:
            raise ValueError(f"revision={revision!r} given for a local folder {src!r}")
        state = read_checkpoint_folder(Path(src), with_projector=with_projector)
    else:
        cfg, paths, commit = resolve_hub_checkpoint(
            src, revision, with_projector=with_projector, cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=local_files_only, token=token, force_download=force_download,
        )
        state = read_checkpoint(cfg, paths, with_projector=with_projector, source=f"{src}@{commit}")
    where = state.source if not is_local else str(Path(src) / CONFIG_FILE)
    check_expected(state.config, expected, where)
    return model_from_state(state)


def push_model_to_hub(model: nn.Module, repo_id: str, *, revision_tag: str | None = None, private: bool = False,
                      commit_message: str | None = None, token: str | None = None, endpoint: str | None = None,
                      **save_kwargs: Any) -> str:
    """Save ``model`` as a checkpoint in a temporary folder and push it (one commit, optional tag); the sha."""
    with tempfile.TemporaryDirectory(prefix="mvssl-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "checkpoint", **save_kwargs)
        return push_to_hub(folder, repo_id, revision_tag=revision_tag, private=private,
                           commit_message=commit_message, token=token, endpoint=endpoint)


__all__ = ["from_pretrained", "push_model_to_hub"]
