"""The checkpoint format: a folder of ``model.safetensors`` (+ ``projector.safetensors``), ``config.json``, ``README.md``.

Folder <-> (validated config, state dicts), one job per module:

- :mod:`.read`: find a checkpoint folder and read it, every check before a tensor is allocated (config, sha256,
  headers against the shapes the config implies, metadata), then NaN/Inf refused;
- :mod:`.write`: ``save_pretrained`` (weights files, config.json, the card, atomically) and the in-place updates
  (``update_metrics``, ``refresh_checkpoint``);
- :mod:`.assemble`: the model a checked checkpoint describes, loaded ``strict=True``;
- :mod:`.unwrap`: DDP / torch.compile wrappers taken off before a save.

Models are built a layer up (:mod:`mvssl_hub.hub.loading`); this package's names stay importable from here.
"""

from .assemble import model_from_state
from .read import (
    CheckpointState,
    check_header_against,
    check_metadata_against,
    expected_state,
    expected_tensors,
    find_checkpoint,
    is_checkpoint_folder,
    local_weights_paths,
    meta_backbone,
    read_checkpoint,
    read_checkpoint_folder,
    read_weights,
    verify_sha256,
    weights_to_read,
)
from .unwrap import unwrap_model
from .write import (
    build_checkpoint_files,
    refresh_checkpoint,
    resnet_timm_fields,
    save_pretrained,
    tidy_interrupted_save,
    update_metrics,
    with_metrics,
    with_timm_fields,
)

__all__ = [
    "CheckpointState", "build_checkpoint_files", "check_header_against", "check_metadata_against", "expected_state",
    "expected_tensors", "find_checkpoint", "is_checkpoint_folder", "local_weights_paths", "meta_backbone",
    "model_from_state", "read_checkpoint", "read_checkpoint_folder", "read_weights", "refresh_checkpoint",
    "resnet_timm_fields", "save_pretrained", "tidy_interrupted_save", "unwrap_model", "update_metrics", "verify_sha256",
    "weights_to_read", "with_metrics", "with_timm_fields",
]
