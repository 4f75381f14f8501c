"""Writing a checkpoint folder: weights files, config.json and the card, atomically; updating its record in place.

The config records what rebuilds and documents the model (architecture, projector, method, data, transforms,
metrics, sha256 and size of every weights file) plus, for a ResNet timm builds as it is, the keys timm reads; the card
is rendered from it (:mod:`..card`). An update (metrics, a newer version's derived keys) carries the weights files
over byte for byte, their sha256 checked first.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ...backbones import BackboneConfig, ResNetBackbone
from ...models import Classifier, SSLModel
from ...safe_io import atomic_write_folder, clean_leftovers, json_bytes, parse_json, safetensors_bytes, strip_prefixes
from ...timm_backbone import TimmBackbone, is_timm_arch, timm_hub_config
from ...version import __version__
from ..card import render_card
from ..schema import (
    CARD_FILE,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    FIGURE_NAME,
    FORMAT,
    FORMAT_VERSION,
    HEAD_FILE,
    MODEL_FILE,
    PROJECTOR_FILE,
    SAVE_DTYPES,
    load_config,
    merge_metrics,
    validate_config,
)
from .read import file_metadata, verify_sha256
from .unwrap import unwrap_model

logger = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's default, without transforms


# ------------------------------------------------------------------------------------------- timm's keys

def resnet_timm_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json keys timm reads from a Hub repo or folder, for a ResNet that timm builds as it is
    (:attr:`BackboneConfig.timm_name`; {} for any other): ``timm.create_model("hf-hub:<repo>", pretrained=True)``
    (or ``"local-dir:<folder>"``) then builds timm's ResNet without classifier and loads model.safetensors
    strictly. Input size and normalisation are the checkpoint's evaluation transform."""
    bb = cfg["backbone"]
    name = None if is_timm_arch(bb["arch"]) else BackboneConfig(**bb).timm_name
    if name is None or cfg.get("num_classes"):  # a classifier's head is a file of its own, which timm does not read
        return {}
    tf = cfg.get("transforms") or {}
    size = int(tf.get("eval_size") or 224)
    pretrained = {
        "input_size": [3, size, size], "interpolation": "bilinear",  # EvalTransform's antialiased bilinear resize
        "mean": [float(x) for x in tf.get("mean", IMAGENET_MEAN)], "std": [float(x) for x in tf.get("std", IMAGENET_STD)],
        "crop_pct": size / float(tf.get("eval_resize") or size), "crop_mode": "center", "num_classes": 0,
        "first_conv": "conv1", "fixed_input_size": False,
    }
    return {"architecture": name, "num_features": cfg["feature_dim"], "model_args": {}, "pretrained_cfg": pretrained}


def with_timm_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with timm's keys added where timm can build the ResNet; beside them a null top-level num_classes is
    left out (timm reads a top-level num_classes)."""
    out = {**cfg, **resnet_timm_fields(cfg)}
    if out.get("architecture") is not None and "num_classes" in out and out["num_classes"] is None:
        del out["num_classes"]
    return out


# ---------------------------------------------------------------------------------------------------- writing

def _dtype_name(dtype: torch.dtype) -> str:
    for name, d in SAVE_DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype must be one of torch.float32/float16/bfloat16, got {dtype}")


def _tensor_bytes(state: Mapping[str, torch.Tensor], dtype: torch.dtype, metadata: dict[str, str]) -> bytes:
    tensors = {k: (v.detach().to("cpu", dtype=dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state.items()}
    return safetensors_bytes(tensors, metadata)


def build_checkpoint_files(
    model: nn.Module, *, method: str | None, beta: float | None, num_views: int | None,
    train_config: dict | None, dataset: dict | None, transforms: dict | None, metrics: list[dict] | None,
    training: dict | None, include_projector: bool, dtype: torch.dtype, base_model: str | None = None,
    monitors: dict | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The bytes of the weights files and the validated config (README not included)."""
    model = unwrap_model(model)
    head = None
    if isinstance(model, SSLModel):
        backbone, projector = model.backbone, model.projector
    elif isinstance(model, Classifier):
        backbone, projector, head = model.backbone, None, model.head
    elif isinstance(model, (ResNetBackbone, TimmBackbone)):
        backbone, projector = model, None
    else:
        raise TypeError(f"save_pretrained takes an SSLModel, Classifier, ResNetBackbone or TimmBackbone, got "
                        f"{type(model).__name__}")
    if include_projector and projector is None:
        raise ValueError(f"include_projector=True needs an SSLModel; a bare {type(model).__name__} has no projector")
    cfg: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "backbone": backbone.config.to_dict(), "feature_dim": backbone.feature_dim,
        "projector": projector.spec if projector is not None else None,
        "method": method, "beta": beta, "num_views": num_views, "dtype": _dtype_name(dtype),
        "train_config": train_config, "dataset": dataset, "transforms": transforms, "metrics": list(metrics or []),
        "training": training, "num_classes": None if head is None else head.out_features, "base_model": base_model,
        "class_names": model.class_names if isinstance(model, Classifier) else None,
        "monitors": monitors,
    }
    if isinstance(backbone, TimmBackbone):  # the keys timm reads from a Hub repo
        cfg.update(timm_hub_config(backbone, transforms))
    cfg = with_timm_fields(cfg)
    files = {MODEL_FILE: _tensor_bytes(strip_prefixes(backbone.state_dict()), dtype, file_metadata(cfg, MODEL_FILE))}
    if include_projector:
        assert projector is not None
        files[PROJECTOR_FILE] = _tensor_bytes(strip_prefixes(projector.state_dict()), dtype,
                                              file_metadata(cfg, PROJECTOR_FILE))
    if head is not None:
        files[HEAD_FILE] = _tensor_bytes(strip_prefixes(head.state_dict()), dtype, file_metadata(cfg, HEAD_FILE))
    cfg["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()}
    # round-trip through JSON so that what is validated is exactly what is written
    cfg = validate_config(parse_json(json_bytes(cfg), "config being saved"), "config being saved")
    return files, cfg


def save_pretrained(
    model: nn.Module, save_dir: str | os.PathLike[str], *, method: str | None = None, beta: float | None = None,
    num_views: int | None = None, train_config: dict | None = None, dataset: dict | None = None,
    transforms: dict | None = None, metrics: list[dict] | None = None, training: dict | None = None,
    include_projector: bool = False, dtype: torch.dtype = torch.float32, figures: dict[str, bytes] | None = None,
    base_model: str | None = None, monitors: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` (+ ``projector.safetensors``), ``config.json`` and ``README.md`` atomically.

    ``figures`` ({"training_curves.png": PNG bytes}) are written beside them; ``training.curves`` names the
    first, and the card shows it.

    ``model`` is an SSLModel or ResNetBackbone (DDP / torch.compile wrappers are unwrapped). ``metrics``
    are records {task, metric, value, random_init, dataset, split, protocol, date}; ``dataset`` has
    id, revision, split, fraction; ``transforms`` preset, eval_size, eval_resize, mean, std; ``training``
    hardware, wall_clock_s, images_per_s, steps, epochs. Returns the folder.
    """
    figures = dict(figures or {})
    for name, data in figures.items():
        if not FIGURE_NAME.fullmatch(name) or not data.startswith(b"\x89PNG"):
            raise ValueError(f"figures[{name!r}]: expected PNG bytes under a plain *.png file name")
    if figures:
        training = {**(training or {}), "curves": next(iter(figures))}
    files, cfg = build_checkpoint_files(
        model, method=method, beta=beta, num_views=num_views, train_config=train_config, dataset=dataset,
        transforms=transforms, metrics=metrics, training=training, include_projector=include_projector,
        dtype=dtype, base_model=base_model, monitors=monitors,
    )
    files.update(figures)
    files[CONFIG_FILE] = json_bytes(cfg)
    files[CARD_FILE] = render_card(cfg).encode("utf-8")
    logger.info("saving %s (%s)", save_dir, ", ".join(files))
    return atomic_write_folder(Path(save_dir), files, replace=(*CHECKPOINT_FILES, *figures))


def tidy_interrupted_save(save_dir: str | os.PathLike[str]) -> list[str]:
    """Finish or undo what an interrupted :func:`save_pretrained` of ``save_dir`` left beside it
    (:func:`~mvssl_hub.safe_io.clean_leftovers`, the format's own files never carried over from the old copy,
    as the save does); returns what it did."""
    return clean_leftovers(Path(save_dir), replace=CHECKPOINT_FILES)


def with_metrics(cfg: dict[str, Any], metrics: list[dict]) -> dict[str, Any]:
    """A copy of ``cfg`` with ``metrics`` merged in (same (task, metric, dataset, split) replaces)."""
    new = dict(cfg)
    new["metrics"] = merge_metrics(cfg.get("metrics", []), metrics)
    return validate_config(parse_json(json_bytes(new), "updated config"), "updated config")


def update_metrics(save_dir: str | os.PathLike[str], metrics: list[dict] | dict, *,
                   monitors: dict | None = None) -> None:
    """Merge metric records into config.json (same (task, metric, dataset, split) replaces), set ``monitors``
    when given (a :class:`mvssl_hub.eval.monitor.MonitorReport` record), and regenerate README.md.

    The weights files are carried over unchanged (their sha256 is checked first); the swap is atomic.
    """
    save_dir = Path(save_dir)
    records = [metrics] if isinstance(metrics, dict) else list(metrics)
    cfg = load_config(save_dir)
    if monitors is not None:
        cfg["monitors"] = monitors
    _rewrite_config(save_dir, with_metrics(with_timm_fields(cfg), records))


def refresh_checkpoint(save_dir: str | os.PathLike[str]) -> bool:
    """Bring a checkpoint folder written by an older version to what this one writes from the same record: the
    config.json keys derived from the rest (timm's, for a ResNet that timm builds as it is) and the card. Nothing
    recorded changes, and the weights files are carried over byte for byte (their sha256 checked first); the swap is
    atomic. True when something changed."""
    save_dir = Path(save_dir)
    cfg = load_config(save_dir)
    new = validate_config(parse_json(json_bytes(with_timm_fields(cfg)), "refreshed config"), "refreshed config")
    card = save_dir / CARD_FILE
    if new == cfg and card.is_file() and card.read_text(encoding="utf-8") == render_card(new):
        return False
    _rewrite_config(save_dir, new)
    return True


def _rewrite_config(save_dir: Path, cfg: dict[str, Any]) -> None:
    """config.json and README.md of ``save_dir`` rewritten from ``cfg``; its weights files carried over unchanged."""
    files: dict[str, bytes] = {}
    for name, info in cfg["files"].items():
        verify_sha256(save_dir / name, info["sha256"], str(save_dir / CONFIG_FILE))
        files[name] = (save_dir / name).read_bytes()
    files[CONFIG_FILE] = json_bytes(cfg)
    files[CARD_FILE] = render_card(cfg).encode("utf-8")
    atomic_write_folder(save_dir, files, replace=CHECKPOINT_FILES)



__all__ = [
    "build_checkpoint_files", "refresh_checkpoint", "resnet_timm_fields", "save_pretrained", "tidy_interrupted_save",
    "update_metrics", "with_metrics", "with_timm_fields",
]
