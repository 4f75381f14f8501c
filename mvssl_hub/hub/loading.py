"""The Hub wing's two verbs: :func:`from_pretrained` (a folder or Hub repo -> a model) and :func:`push_to_hub`
(a model or a checkpoint folder -> one Hub commit).

Loading goes strictly down the layers: source -> a published entry's verified bundled snapshot, the Hub
transport (sha256-verified files) or the local folder -> the format (config, headers, shapes, metadata,
tensors) -> ``load_state_dict(strict=True)``. The model classes know nothing of this: these are free functions
that take or return a model, as ``torchvision.models`` and ``timm.models._hub`` have them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import HubRepoNotFoundError, HubUnreachableError
from .format.assemble import model_from_state
from .format.read import CheckpointState, read_checkpoint, read_checkpoint_folder
from .format.write import save_pretrained
from .remote import resolve_hub_checkpoint, upload_checkpoint
from .schema import CONFIG_FILE, check_expected
from .transport import parse_source
from .weights import Weights, load_weights, published_entry

logger = logging.getLogger(__name__)


def from_pretrained(
    repo_id_or_dir: str | os.PathLike[str], revision: str | None = None, *, with_projector: bool = False,
    token: str | bool | None = None, cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False,
    force_download: bool = False, endpoint: str | None = None, **expected: Any,
) -> nn.Module:
    """Load a checkpoint from a folder, a Hub repo (``org/name``, ``hf-hub:org/name@rev``) or the cache.

    Returns the backbone ((N, 3, H, W) -> (N, feature_dim)) in eval mode, with ``with_projector`` the SSLModel,
    or the classifier of a fine-tuned checkpoint; ``.mvssl_config`` holds the parsed config.

    The Hub arguments are huggingface_hub's: ``revision`` (branch, tag or commit), ``token``, ``cache_dir``,
    ``local_files_only`` (or ``HF_HUB_OFFLINE=1``: only the cache answers), ``force_download``, ``endpoint``
    (default ``HF_ENDPOINT`` or huggingface.co). When the Hub cannot be reached, only the cache answers, at once.

    A zoo entry's repo id (``mvssl_hub/zoo_weights.json``) loads like its builder: at the pinned commit from the
    verified bundled snapshot; at another revision from the Hub, and from the bundled snapshot when the Hub cannot
    be asked or has no such repo (with a warning). ``expected`` kwargs (arch, small_images, width, method,
    projector, proj_dim, num_views, beta, feature_dim) must agree with the checkpoint, else ValueError naming both.
    """
    name = os.fspath(repo_id_or_dir)
    if not name.startswith("hf-hub:") and not os.path.exists(name) and published_entry(name):
        name = f"hf-hub:{name}"  # a zoo repo id, even beside a folder named like its org
    src, revision, is_local = parse_source(name, revision)
    if is_local:
        if revision is not None:
            raise ValueError(f"revision={revision!r} given for a local folder {src!r}")
        state = read_checkpoint_folder(Path(src), with_projector=with_projector)
        check_expected(state.config, expected, str(Path(src) / CONFIG_FILE))
        return model_from_state(state)
    hub: dict[str, Any] = dict(token=token, cache_dir=cache_dir, local_files_only=local_files_only, endpoint=endpoint)
    entry = published_entry(src, revision)
    if entry is not None and revision == entry.revision and not force_download:
        return _from_entry(entry, with_projector, hub, expected)
    try:
        cfg, paths, commit = resolve_hub_checkpoint(src, revision, with_projector=with_projector,
                                                    force_download=force_download, **hub)
    except (HubUnreachableError, HubRepoNotFoundError) as e:
        if entry is not None:
            _say_the_entry_answers(entry, e)
            return _from_entry(entry, with_projector, hub, expected)
        if name.startswith("hf-hub:"):
            raise
        raise type(e)(f"{name!r} is neither a local folder (no such folder: {Path(name).absolute()}) nor a Hub repo "
                      f"that could be loaded: {e}") from None
    state: CheckpointState = read_checkpoint(cfg, paths, with_projector=with_projector, source=f"{src}@{commit}")
    check_expected(state.config, expected, state.source)
    return model_from_state(state)


def _from_entry(entry: Weights, with_projector: bool, hub: dict[str, Any], expected: Mapping[str, Any]) -> nn.Module:
    model = load_weights(entry, with_projector=with_projector, **hub)
    check_expected(model.mvssl_config, expected, f"{entry.repo_id}@{entry.revision}")
    return model


def _say_the_entry_answers(entry: Weights, error: Exception) -> None:
    """Offline the bundled snapshot answering is the normal case (a log line); a Hub that has no such repo or
    revision is a surprise worth a warning (the entry's repo was never pushed there, or was deleted)."""
    where = f"zoo entry {entry.builder} ({entry.repo_id}@{entry.revision[:12]})"
    if isinstance(error, HubUnreachableError):
        logger.info("the Hub cannot be asked; loading %s from its bundled snapshot", where)
        return
    warnings.warn(f"{error}; loading {where} from its verified bundled snapshot instead", RuntimeWarning, stacklevel=3)


def push_to_hub(
    model_or_folder: nn.Module | str | os.PathLike[str], repo_id: str, *, revision_tag: str | None = None,
    private: bool = False, commit_message: str | None = None, token: str | bool | None = None,
    endpoint: str | None = None, builder: str | None = None, save_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Publish a model or a checkpoint folder to the Hub as one commit (repo created if needed); the commit sha.

    A model (SSLModel, backbone or classifier) is first saved with :func:`mvssl_hub.save_pretrained` into a
    temporary folder, with ``save_kwargs`` (method, transforms, metrics, dataset, ...) for its config and card. A
    folder is verified (config schema, the sha256 of every weights file) and pushed as saved. README.md is
    rendered again with ``repo_id`` (and ``builder``, the zoo builder it is published under) in its load snippets.

    ``revision_tag`` tags the commit (an existing tag is never moved: ValueError); ``token`` (default: ``HF_TOKEN``
    or the saved login, ``hf auth login``) and ``endpoint`` reach every request.
    """
    hub: dict[str, Any] = dict(revision_tag=revision_tag, private=private, commit_message=commit_message, token=token,
                               endpoint=endpoint, builder=builder)
    if isinstance(model_or_folder, nn.Module):
        with tempfile.TemporaryDirectory(prefix="mvssl-push-") as tmp:
            folder = save_pretrained(model_or_folder, Path(tmp) / "checkpoint", **dict(save_kwargs or {}))
            return upload_checkpoint(folder, repo_id, **hub)
    if save_kwargs:
        raise ValueError(f"save_kwargs {sorted(save_kwargs)} describe a model being saved; the folder "
                         f"{os.fspath(model_or_folder)!r} is pushed as it was saved")
    return upload_checkpoint(model_or_folder, repo_id, **hub)


__all__ = ["from_pretrained", "push_to_hub"]
