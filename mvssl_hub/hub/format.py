"""The checkpoint format: a folder of ``model.safetensors`` (+ ``projector.safetensors``), ``config.json``, ``README.md``.

Folder <-> (validated config, state dicts). ``config.json`` rebuilds and documents the model
(architecture, projector, method, data, transforms, metrics, sha256 and size of every weights file);
the card is rendered from it. Reads check, in this order and before any tensor is allocated: the
config (types *and* ranges), each file's sha256, the safetensors header against the shapes the config
implies (computed on the meta device), and the header's metadata against the config. Only then are
the tensors read, and NaN/Inf refused. Models are built a layer up (:mod:`mvssl_hub.hub.loading`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..backbones import BackboneConfig, ResNetBackbone, backbone_from_config
from ..errors import CheckpointError, IntegrityError
from ..models import Classifier, SSLModel
from ..projector import Projector
from ..safe_io import (
    SafetensorsHeader,
    atomic_write_folder,
    check_regular_file,
    clean_leftovers,
    json_bytes,
    load_safetensors,
    parse_json,
    read_json_file,
    read_safetensors_header,
    refuse_pickle,
    safetensors_bytes,
    sha256_file,
    strip_prefix,
    strip_prefixes,
)
from ..timm_backbone import TimmBackbone, is_timm_arch, timm_hub_config
from ..version import __version__
from ..views import eval_transform_from
from .card import render_card
from .schema import (
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

logger = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's default, without transforms


# ---------------------------------------------------------------------------------------------- discovery

def is_checkpoint_folder(path: Path) -> bool:
    """True when ``path`` holds a weights file and a config.json that declares this format."""
    cfg_path = path / CONFIG_FILE
    if not ((path / MODEL_FILE).is_file() and cfg_path.is_file()):
        return False
    try:
        cfg = read_json_file(cfg_path)
    except (CheckpointError, OSError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder at ``path``: itself, or the one checkpoint folder one or two levels below it.

    A folder counts when its config.json declares this format (a run's ``step-*`` run states do not).
    FileNotFoundError if there is none, ValueError (listing them) if there are several.
    """
    path = Path(path)
    if is_checkpoint_folder(path):
        return path
    found = sorted({p.parent for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}") for p in path.glob(pattern)
                    if not p.parent.name.startswith(".") and is_checkpoint_folder(p.parent)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint folder ({CONFIG_FILE} + {MODEL_FILE}) in it or below it")
    raise ValueError(f"{path}: several checkpoint folders {[str(p) for p in found]}; pass one of them")


# ------------------------------------------------------------------------------------------------ state dicts

def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if type(model).__name__ in ("DistributedDataParallel", "DataParallel") else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


Expected = dict[str, tuple[tuple[int, ...], torch.dtype]]


def expected_state(module: nn.Module, dtype: torch.dtype) -> Expected:
    """key -> (shape, dtype) a checkpoint of ``module`` saved in ``dtype`` holds."""
    return {k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype) for k, v in module.state_dict().items()}


def meta_backbone(cfg: Mapping[str, Any], source: str = CONFIG_FILE) -> nn.Module:
    """The backbone a validated config describes, built on the meta device (shapes only, nothing allocated);
    for a timm backbone, CheckpointError when timm refuses its kwargs or gives another width than feature_dim
    (ImportError with the install line without timm, UnknownModelError with the closest names)."""
    with torch.device("meta"):
        try:
            backbone = backbone_from_config(cfg["backbone"], init_weights=False)
        except (TypeError, ValueError) as e:  # ConfigError included: timm refused the kwargs
            raise CheckpointError(f"{source}: field 'backbone' = {cfg['backbone']!r:.200}: {e}") from None
    if backbone.feature_dim != cfg["feature_dim"]:
        raise CheckpointError(f"{source}: feature_dim = {cfg['feature_dim']} but backbone {cfg['backbone']!r:.200} "
                              f"gives {backbone.feature_dim} features")
    return backbone


def expected_tensors(cfg: Mapping[str, Any], source: str = CONFIG_FILE) -> dict[str, Expected]:
    """Weights file -> key -> (shape, dtype) implied by a validated config (projector and head when it has them).

    The modules are built on the meta device: no memory is allocated, whatever the config asks for.
    """
    dtype = SAVE_DTYPES[cfg["dtype"]]
    backbone = meta_backbone(cfg, source)
    with torch.device("meta"):
        out = {MODEL_FILE: expected_state(backbone, dtype)}
        if cfg.get("projector"):
            out[PROJECTOR_FILE] = expected_state(Projector(cfg["projector"]), dtype)
        if cfg.get("num_classes"):
            out[HEAD_FILE] = expected_state(nn.Linear(cfg["feature_dim"], cfg["num_classes"]), dtype)
    return out


def check_header_against(path: Path, header: SafetensorsHeader, expected: Expected, hint: str = "") -> None:
    """One CheckpointError listing every missing / unexpected key and every shape or dtype mismatch."""
    found = {strip_prefix(k): t for k, t in header.tensors.items()}
    problems: list[str] = []
    for key in sorted(set(expected) - set(found)):
        problems.append(f"  missing key {key!r}: expected shape {list(expected[key][0])} {expected[key][1]}")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"  unexpected key {key!r}: found shape {list(found[key].shape)} {found[key].dtype}")
    for key in sorted(set(found) & set(expected)):
        exp_shape, exp_dtype = expected[key]
        t = found[key]
        if t.shape != exp_shape:
            problems.append(f"  {key!r}: expected shape {list(exp_shape)}, found {list(t.shape)}")
        if t.torch_dtype != exp_dtype:
            problems.append(f"  {key!r}: expected dtype {exp_dtype}, found {t.dtype} ({t.torch_dtype})")
    if problems:
        raise CheckpointError(f"{path}: {len(problems)} tensor(s) do not match the model {hint}:\n" + "\n".join(problems))


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


def _file_metadata(cfg: Mapping[str, Any], name: str) -> dict[str, str]:
    meta = {"format": FORMAT, "arch": cfg["backbone"]["arch"], "library_version": cfg["library_version"]}
    if name == PROJECTOR_FILE:
        meta["projector"] = cfg["projector"]
    return meta


def check_metadata_against(path: Path, header: SafetensorsHeader, cfg: Mapping[str, Any], source: str) -> None:
    """CheckpointError when the weights file's own metadata disagrees with config.json (both values named)."""
    for key, want in _file_metadata(cfg, path.name).items():
        have = header.metadata.get(key)
        if have is not None and have != want:
            raise CheckpointError(f"{path}: the file's metadata says {key}={have!r} but {source} says {key}={want!r}")


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """IntegrityError if the file's sha256 differs from ``expected``."""
    found = sha256_file(path)
    if found != expected:
        raise IntegrityError(f"{path}: sha256 {found} does not match {expected} recorded in {what}")


@dataclass
class CheckpointState:
    """A checked checkpoint: its config, backbone state dict and (if asked for) projector / head state dicts."""

    config: dict[str, Any]
    backbone: dict[str, torch.Tensor]
    projector: dict[str, torch.Tensor] | None
    source: str
    head: dict[str, torch.Tensor] | None = None


def read_weights(path: Path, cfg: Mapping[str, Any], expected: Expected, source: str) -> dict[str, torch.Tensor]:
    """Checked safetensors -> state dict: header vs ``expected`` and ``cfg`` first, then the bytes, then finiteness."""
    header = read_safetensors_header(path)
    bb = cfg["backbone"]
    described = ", ".join(f"{k}={v}" for k, v in bb.items() if k != "timm_version")
    what = {PROJECTOR_FILE: f"projector={cfg['projector']!r}", HEAD_FILE: f"num_classes={cfg.get('num_classes')}"}.get(
        path.name, described)
    check_header_against(path, header, expected, f"described by {source} ({what}, dtype={cfg['dtype']})")
    check_metadata_against(path, header, cfg, source)
    state = strip_prefixes(load_safetensors(path))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        counts = ", ".join(f"{k!r} ({int((~torch.isfinite(state[k])).sum())} values)" for k in bad)
        raise CheckpointError(f"{path}: NaN/Inf in {len(bad)} tensor(s): {counts}")
    return state


def read_checkpoint(cfg: dict[str, Any], paths: Mapping[str, Path], *, with_projector: bool,
                    source: str) -> CheckpointState:
    """State dicts of the (already sha256-verified) weights files in ``paths`` of a validated config."""
    expected = expected_tensors(cfg, source)
    states = {name: read_weights(path, cfg, expected[name], source) for name, path in paths.items()}
    return CheckpointState(cfg, states[MODEL_FILE], states.get(PROJECTOR_FILE) if with_projector else None, source,
                           states.get(HEAD_FILE))


def weights_to_read(cfg: Mapping[str, Any], with_projector: bool) -> list[str]:
    """The weights files a load reads: the backbone, the projector when asked, a classifier's head always."""
    return [MODEL_FILE, *([PROJECTOR_FILE] if with_projector else []), *([HEAD_FILE] if cfg.get("num_classes") else [])]


def local_weights_paths(folder: Path, cfg: Mapping[str, Any], with_projector: bool) -> dict[str, Path]:
    """The weights files of a local checkpoint folder, each checked (regular file, no pickle, header, sha256)."""
    names = weights_to_read(cfg, with_projector)
    paths = {}
    for name in names:
        if name not in cfg["files"]:
            raise CheckpointError(f"{folder}: {name} was not saved (config.json lists {sorted(cfg['files'])}); "
                                  "save with include_projector=True to keep the projector")
        path = folder / name
        check_regular_file(path, f"listed in {CONFIG_FILE}")
        read_safetensors_header(path)  # truncation / corrupted header: the specific error before the hash one
        verify_sha256(path, cfg["files"][name]["sha256"], str(folder / CONFIG_FILE))
        paths[name] = path
    return paths


def read_checkpoint_folder(folder: Path, *, with_projector: bool = False) -> CheckpointState:
    """A local checkpoint folder -> :class:`CheckpointState`, every check passed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        check_regular_file(folder, "a checkpoint folder")
        refuse_pickle(folder)
        raise CheckpointError(f"{folder}: give the checkpoint folder, not a single file")
    if folder.is_dir() and not (folder / MODEL_FILE).exists():
        for p in sorted(folder.iterdir()):
            refuse_pickle(p)  # a pickle checkpoint: say so, unread, rather than "config.json missing"
    cfg = load_config(folder)
    paths = local_weights_paths(folder, cfg, with_projector)
    return read_checkpoint(cfg, paths, with_projector=with_projector, source=str(folder / CONFIG_FILE))


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
    files = {MODEL_FILE: _tensor_bytes(strip_prefixes(backbone.state_dict()), dtype, _file_metadata(cfg, MODEL_FILE))}
    if include_projector:
        assert projector is not None
        files[PROJECTOR_FILE] = _tensor_bytes(strip_prefixes(projector.state_dict()), dtype,
                                              _file_metadata(cfg, PROJECTOR_FILE))
    if head is not None:
        files[HEAD_FILE] = _tensor_bytes(strip_prefixes(head.state_dict()), dtype, _file_metadata(cfg, HEAD_FILE))
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


def model_from_state(state: CheckpointState) -> nn.Module:
    """The model a checked checkpoint describes, loaded ``strict=True``, in eval mode; ``.mvssl_config`` set.

    A ResNetBackbone ((N, 3, H, W) -> (N, feature_dim)), an SSLModel when the projector was read, or a
    Classifier ((N, 3, H, W) -> (N, num_classes)) for a fine-tuned checkpoint.
    """
    cfg = state.config
    backbone = backbone_from_config(cfg["backbone"])
    backbone.load_state_dict(state.backbone, strict=True)
    model: nn.Module = backbone
    if state.head is not None:
        model = Classifier(backbone, cfg["num_classes"], class_names=cfg.get("class_names"),
                           transforms=eval_transform_from(cfg.get("transforms")))
        model.head.load_state_dict(state.head, strict=True)
    if state.projector is not None:
        projector = Projector(cfg["projector"])
        projector.load_state_dict(state.projector, strict=True)
        model = SSLModel(backbone, projector)
    model.mvssl_config = cfg  # type: ignore[assignment]
    return model.eval()


__all__ = [
    "CheckpointState", "build_checkpoint_files", "check_header_against", "check_metadata_against", "expected_state",
    "expected_tensors", "find_checkpoint", "is_checkpoint_folder", "local_weights_paths", "meta_backbone",
    "model_from_state", "read_checkpoint", "read_checkpoint_folder", "read_weights", "refresh_checkpoint",
    "resnet_timm_fields", "save_pretrained", "tidy_interrupted_save", "unwrap_model", "update_metrics", "verify_sha256",
    "weights_to_read", "with_metrics", "with_timm_fields",
]
