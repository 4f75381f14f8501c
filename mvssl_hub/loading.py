"""``from_pretrained``: a checkpoint folder or Hub repo -> a model, strictly down the layers.

source -> transport (Hub files, sha256-verified) or the local folder -> format (config, headers, shapes,
metadata, tensors) -> ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from .backbones import ResNetBackbone
from .checkpoint import CONFIG_FILE, check_expected, model_from_state, read_checkpoint, read_checkpoint_folder
from .hub import parse_source, resolve_hub_checkpoint


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


__all__ = ["from_pretrained"]
