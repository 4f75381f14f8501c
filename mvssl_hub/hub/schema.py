"""config.json of a checkpoint: its schema, every field type- and range-checked, and the metric records it holds.

A config that fails here is refused before any file it names is read or any model is built. The bounds
(widths, projector dims, views, beta, image sizes) are what a sane checkpoint stays within; anything past
them would only serve to make a loader allocate.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..backbones import BackboneConfig, backbone_config
from ..errors import CheckpointError, UnknownModelError
from ..projector import parse_projector_spec
from ..safe_io import read_json_file
from ..timm_backbone import TimmBackboneConfig, is_timm_arch
from ..vocabulary import METHODS

FORMAT = "mvssl-hub"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
PROJECTOR_FILE = "projector.safetensors"
HEAD_FILE = "head.safetensors"  # a fine-tuned classifier's linear head
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
WEIGHTS_FILES = (MODEL_FILE, PROJECTOR_FILE, HEAD_FILE)
CHECKPOINT_FILES = (MODEL_FILE, PROJECTOR_FILE, HEAD_FILE, CONFIG_FILE, CARD_FILE)
MAX_CLASSES = 100_000

METRIC_TASKS = ("knn", "linear_probe", "finetune")
METRIC_NAMES = ("top1", "top5")
METRIC_KEYS = ("task", "metric", "value", "random_init", "dataset", "split", "protocol", "date")
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")  # a sha256 digest as config.json and weights entries record it
# A figure beside the weights (training.curves): a plain *.png name inside the folder, never a path.
FIGURE_NAME = re.compile(r"[A-Za-z0-9_][\w.-]*\.png")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Sane upper bounds: a config past them is refused before anything is built (meta device included).
MAX_WIDTH = 1024  # 16x torchvision's ResNet
MAX_PROJECTOR_DIM = 65536
MAX_PROJECTOR_LAYERS = 8
MAX_VIEWS = 1024
MAX_BETA = 1e4
MAX_IMAGE_SIZE = 8192
MAX_FILE_BYTES = 1 << 40


# ---------------------------------------------------------------------------------------------------- config

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, source: str, field: str, value: Any, what: str) -> None:
    if not ok:
        raise CheckpointError(f"{source}: field {field} = {value!r:.120}: {what}")


def normalize_metric(record: Mapping[str, Any], where: str = "metric record") -> dict[str, Any]:
    """Check one metric record and fill defaults (random_init None, protocol "", date today)."""
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{where}: expected a dict, got {type(record).__name__}")
    unknown = sorted(set(record) - set(METRIC_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {unknown}; allowed: {list(METRIC_KEYS)}")
    rec = {"random_init": None, "protocol": "", "date": _dt.date.today().isoformat(), **record}
    for key in ("task", "metric", "value", "dataset", "split"):
        if key not in rec:
            raise CheckpointError(f"{where}: missing field {key!r}")
    if rec["task"] not in METRIC_TASKS:
        raise CheckpointError(f"{where}: task={rec['task']!r}, expected one of {METRIC_TASKS}")
    if rec["metric"] not in METRIC_NAMES:
        raise CheckpointError(f"{where}: metric={rec['metric']!r}, expected one of {METRIC_NAMES}")
    for key in ("value", "random_init"):
        v = rec[key]
        if v is None and key == "random_init":
            continue
        if not _is_num(v) or not 0.0 <= v <= 100.0:
            raise CheckpointError(f"{where}: {key}={v!r} must be an accuracy in percent (0..100)")
        rec[key] = float(v)
    for key in ("dataset", "split", "protocol", "date"):
        if not isinstance(rec[key], str):
            raise CheckpointError(f"{where}: {key}={rec[key]!r} must be a string")
    if not _DATE.match(rec["date"]):
        raise CheckpointError(f"{where}: date={rec['date']!r} must be YYYY-MM-DD")
    return {k: rec[k] for k in METRIC_KEYS}


def metric_key(rec: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What identifies a result: (task, metric, dataset, split)."""
    return (rec["task"], rec["metric"], rec["dataset"], rec["split"])


def merge_metrics(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records of ``new`` replace those of ``old`` with the same (task, metric, dataset, split)."""
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for i, rec in enumerate(list(old) + list(new)):
        norm = normalize_metric(rec, f"metrics[{i}]")
        merged[metric_key(norm)] = norm
    return list(merged.values())


# field -> (accepted python types, may be None)
_CONFIG_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), False),
    "format_version": ((int,), False),
    "library_version": ((str,), False),
    "backbone": ((dict,), False),
    "feature_dim": ((int,), False),
    "projector": ((str,), True),
    "method": ((str,), True),
    "beta": ((int, float), True),
    "num_views": ((int,), True),
    "dtype": ((str,), False),
    "train_config": ((dict,), True),
    "dataset": ((dict,), True),
    "transforms": ((dict,), True),
    "metrics": ((list,), False),
    "training": ((dict,), True),
    "files": ((dict,), False),
    "num_classes": ((int,), True),  # a fine-tuned classifier: its head's classes (head.safetensors)
    "class_names": ((list,), True),  # and their names, in the head's order
    "base_model": ((str,), True),  # the checkpoint a fine-tuned model started from (Hub id or name)
    "monitors": ((dict,), True),  # label-free measures (mvssl_hub.eval.monitor report: definitions and sample)
    # A timm backbone's checkpoint also carries the keys timm reads from a Hub repo, and so does a ResNet that timm
    # builds as it is (torchvision's stem at full width): timm.create_model("hf-hub:<repo>", pretrained=True) builds
    # the architecture with model_args from them.
    "architecture": ((str,), True),  # the timm model name
    "num_features": ((int,), True),  # timm's num_features (a record; feature_dim is what the backbone returns)
    "model_args": ((dict,), True),  # the timm keyword arguments (= backbone.kwargs)
    "pretrained_cfg": ((dict,), True),  # input_size, mean, std, crop, num_classes = 0 (no classifier)
}
TIMM_HUB_FIELDS = ("architecture", "num_features", "model_args", "pretrained_cfg")
# pretrained_cfg keys mvssl-hub writes: what timm needs to build, load and preprocess; nothing that points elsewhere
PRETRAINED_CFG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode", "num_classes",
                       "first_conv", "fixed_input_size")
_NESTED_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "dataset": {"id": (str,), "revision": (str, type(None)), "split": (str,), "fraction": (int, float)},
    "transforms": {"preset": (str,), "eval_size": (int,), "eval_resize": (int, type(None)), "mean": (list,),
                   "std": (list,)},
    "training": {"hardware": (str,), "wall_clock_s": (int, float), "images_per_s": (int, float),
                 "steps": (int,), "epochs": (int, float), "curves": (str,)},
}


def _check_types(cfg: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(cfg) - set(_CONFIG_FIELDS))
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(_CONFIG_FIELDS)}")
    missing = sorted(k for k, (_, nullable) in _CONFIG_FIELDS.items() if k not in cfg and not nullable)
    if missing:
        raise CheckpointError(f"{source}: missing field(s) {missing}")
    for key, (types, nullable) in _CONFIG_FIELDS.items():
        v = cfg.get(key)
        if v is None and nullable:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise CheckpointError(f"{source}: field {key!r} = {v!r:.120} has type {type(v).__name__}, expected {names}")
    for section, types in _NESTED_TYPES.items():
        sub = cfg.get(section) or {}
        for key, t in types.items():
            if key in sub and (not isinstance(sub[key], t) or isinstance(sub[key], bool)):
                expected = " or ".join("null" if x is type(None) else x.__name__ for x in t)
                raise CheckpointError(f"{source}: field {section}.{key} = {sub[key]!r:.120} has type "
                                      f"{type(sub[key]).__name__}, expected {expected}")


def _check_backbone(bb: Any, source: str) -> BackboneConfig | TimmBackboneConfig:
    if is_timm_arch(bb.get("arch")):
        if set(bb) != {"arch", "kwargs", "timm_version"}:
            raise CheckpointError(f"{source}: field 'backbone' = {bb!r:.200} must have exactly arch, kwargs, "
                                  "timm_version for a timm backbone")
        if not isinstance(bb["kwargs"], dict):
            raise CheckpointError(f"{source}: field backbone.kwargs = {bb['kwargs']!r:.120} must be an object")
    elif set(bb) != {"arch", "small_images", "width"}:
        raise CheckpointError(f"{source}: field 'backbone' = {bb!r:.200} must have exactly arch, small_images, width")
    else:
        width = bb["width"]
        _need(_is_int(width) and 1 <= width <= MAX_WIDTH, source, "backbone.width", width,
              f"must be an int in 1..{MAX_WIDTH}")
    try:
        return backbone_config(bb)
    except UnknownModelError as e:  # keep the type (and its close matches), name the file
        raise UnknownModelError(f"{source}: field 'backbone': {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: field 'backbone' = {bb!r:.200}: {e}") from None


def _check_timm_fields(cfg: Mapping[str, Any], bcfg: BackboneConfig | TimmBackboneConfig, source: str) -> None:
    """timm's Hub keys: present exactly for a timm backbone, absent or complete for a ResNet that timm builds as it
    is (``BackboneConfig.timm_name``), never for another ResNet; agreeing with the ``backbone`` record."""
    present = [k for k in TIMM_HUB_FIELDS if cfg.get(k) is not None]
    timm_name, model_args = ((bcfg.name, bcfg.kwargs) if isinstance(bcfg, TimmBackboneConfig)
                             else (bcfg.timm_name, {}))
    if timm_name is None:
        if present:
            raise CheckpointError(f"{source}: field(s) {present} are what timm reads, but timm cannot build the "
                                  f"backbone {cfg['backbone']!r:.120}")
        return
    if not present and not isinstance(bcfg, TimmBackboneConfig):
        return  # written before ResNets carried them
    missing = [k for k in TIMM_HUB_FIELDS if k not in present]
    if missing:
        raise CheckpointError(f"{source}: a timm-loadable backbone's config needs field(s) {missing} (what timm reads)")
    _need(cfg["architecture"] == timm_name, source, "architecture", cfg["architecture"],
          f"must be the backbone's timm model {timm_name!r}")
    _need(cfg["model_args"] == model_args, source, "model_args", cfg["model_args"],
          f"must equal the backbone's timm arguments {model_args!r:.120}")
    _need(1 <= cfg["num_features"] <= MAX_PROJECTOR_DIM, source, "num_features", cfg["num_features"],
          f"must be in 1..{MAX_PROJECTOR_DIM}")
    if isinstance(bcfg, BackboneConfig):
        _need(cfg["num_features"] == bcfg.feature_dim, source, "num_features", cfg["num_features"],
              f"must be the backbone's feature_dim {bcfg.feature_dim}")
    _need("num_classes" not in cfg or cfg["num_classes"] is not None, source, "num_classes", None,
          "must be left out (not null) beside timm's keys: timm reads a top-level num_classes")
    pc = cfg["pretrained_cfg"]
    unknown = sorted(set(pc) - set(PRETRAINED_CFG_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: field pretrained_cfg has unknown key(s) {unknown}; known: "
                              f"{list(PRETRAINED_CFG_KEYS)}")
    size = pc.get("input_size")
    _need(isinstance(size, list) and len(size) == 3 and all(_is_int(x) and 1 <= x <= MAX_IMAGE_SIZE for x in size),
          source, "pretrained_cfg.input_size", size, f"must be [C, H, W], ints in 1..{MAX_IMAGE_SIZE}")
    for key in ("mean", "std"):
        v = pc.get(key)
        _need(isinstance(v, list) and len(v) == size[0] and all(_is_num(x) for x in v)
              and (key == "mean" or all(x > 0 for x in v)), source, f"pretrained_cfg.{key}", v,
              f"must be {size[0]} finite numbers" + (" > 0" if key == "std" else ""))
    _need(pc.get("num_classes") == 0, source, "pretrained_cfg.num_classes", pc.get("num_classes"),
          "must be 0: model.safetensors holds the backbone without classifier")
    for key, types in (("interpolation", (str,)), ("crop_mode", (str,)), ("first_conv", (str,)),
                       ("crop_pct", (int, float)), ("fixed_input_size", (bool,))):
        if key in pc:
            _need(isinstance(pc[key], types) and (key != "crop_pct" or (_is_num(pc[key]) and 0 < pc[key] <= 1)),
                  source, f"pretrained_cfg.{key}", pc[key], f"must be a {'/'.join(t.__name__ for t in types)}"
                  + (" in (0, 1]" if key == "crop_pct" else ""))


def _check_ranges(cfg: Mapping[str, Any], source: str) -> None:
    beta, views = cfg.get("beta"), cfg.get("num_views")
    _need(beta is None or (_is_num(beta) and 0 <= beta <= MAX_BETA), source, "beta", beta,
          f"must be a finite number in [0, {MAX_BETA:g}]")
    _need(views is None or 2 <= views <= MAX_VIEWS, source, "num_views", views, f"must be in 2..{MAX_VIEWS}")
    ds = cfg.get("dataset") or {}
    if "fraction" in ds:
        _need(_is_num(ds["fraction"]) and 0 < ds["fraction"] <= 1, source, "dataset.fraction", ds["fraction"],
              "must be in (0, 1]")
    tf = cfg.get("transforms") or {}
    for key in ("eval_size", "eval_resize"):
        if tf.get(key) is not None:
            _need(1 <= tf[key] <= MAX_IMAGE_SIZE, source, f"transforms.{key}", tf[key], f"must be in 1..{MAX_IMAGE_SIZE}")
    for key in ("mean", "std"):
        if key in tf:
            v = tf[key]
            _need(len(v) == 3 and all(_is_num(x) for x in v), source, f"transforms.{key}", v,
                  "must be 3 finite numbers (RGB)")
            _need(key == "mean" or all(x > 0 for x in v), source, "transforms.std", v, "must be > 0")
    tr = cfg.get("training") or {}
    if "curves" in tr:
        _need(isinstance(tr["curves"], str) and FIGURE_NAME.fullmatch(tr["curves"]) is not None, source,
              "training.curves", tr["curves"], "must be a plain *.png file name inside the checkpoint folder")
    for key in ("wall_clock_s", "images_per_s", "steps", "epochs"):
        if key in tr:
            _need(_is_num(tr[key]) and tr[key] >= 0, source, f"training.{key}", tr[key], "must be a finite number >= 0")


def validate_config(cfg: Any, source: str = CONFIG_FILE) -> dict[str, Any]:
    """Check a parsed config.json: every field's type and range; returns it with metrics normalised."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    _check_types(cfg, source)
    if cfg["format"] != FORMAT or cfg["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format {cfg['format']!r} v{cfg['format_version']} is not {FORMAT!r} v{FORMAT_VERSION}"
        )
    bcfg = _check_backbone(cfg["backbone"], source)
    if isinstance(bcfg, TimmBackboneConfig):  # the width timm gives is checked on the meta device, before reading
        _need(1 <= cfg["feature_dim"] <= MAX_PROJECTOR_DIM, source, "feature_dim", cfg["feature_dim"],
              f"must be in 1..{MAX_PROJECTOR_DIM}")
        feature_dim = cfg["feature_dim"]
    elif cfg["feature_dim"] != bcfg.feature_dim:
        raise CheckpointError(f"{source}: feature_dim = {cfg['feature_dim']} disagrees with backbone "
                              f"{cfg['backbone']} (feature dim {bcfg.feature_dim})")
    else:
        feature_dim = bcfg.feature_dim
    _check_timm_fields(cfg, bcfg, source)
    if cfg.get("projector") is not None:
        try:
            dims = parse_projector_spec(cfg["projector"])
        except ValueError as e:
            raise CheckpointError(f"{source}: field 'projector': {e}") from None
        _need(len(dims) - 1 <= MAX_PROJECTOR_LAYERS and max(dims) <= MAX_PROJECTOR_DIM, source, "projector",
              cfg["projector"], f"at most {MAX_PROJECTOR_LAYERS} layers of at most {MAX_PROJECTOR_DIM} units")
        if dims[0] != feature_dim:
            raise CheckpointError(f"{source}: projector {cfg['projector']!r} takes {dims[0]} inputs but the "
                                  f"backbone gives {feature_dim}")
    if cfg.get("method") is not None and cfg["method"] not in METHODS:
        raise CheckpointError(f"{source}: method = {cfg['method']!r}, expected one of {METHODS}")
    if cfg["dtype"] not in SAVE_DTYPES:
        raise CheckpointError(f"{source}: dtype = {cfg['dtype']!r}, expected one of {sorted(SAVE_DTYPES)}")
    _check_ranges(cfg, source)
    cfg["metrics"] = [normalize_metric(m, f"{source}: metrics[{i}]") for i, m in enumerate(cfg["metrics"])]
    for name, info in cfg["files"].items():
        if name not in WEIGHTS_FILES:
            raise CheckpointError(f"{source}: files lists {name!r}; only {MODEL_FILE} and {PROJECTOR_FILE} are allowed")
        if (not isinstance(info, dict) or not SHA256_HEX.match(str(info.get("sha256", "")))
                or not _is_int(info.get("size")) or not 0 <= info["size"] <= MAX_FILE_BYTES):
            raise CheckpointError(f"{source}: files[{name!r}] = {info!r:.200} needs a 64-hex 'sha256' and an int "
                                  "'size' >= 0")
    if MODEL_FILE not in cfg["files"]:
        raise CheckpointError(f"{source}: files has no entry for {MODEL_FILE}")
    if PROJECTOR_FILE in cfg["files"] and cfg.get("projector") is None:
        raise CheckpointError(f"{source}: {PROJECTOR_FILE} is listed but field 'projector' is null")
    classes = cfg.get("num_classes")
    _need(classes is None or 1 <= classes <= MAX_CLASSES, source, "num_classes", classes, f"must be in 1..{MAX_CLASSES}")
    names = cfg.get("class_names")
    _need(names is None or (classes is not None and len(names) == classes and all(isinstance(n, str) and len(n) <= 256
                                                                                    for n in names)),
          source, "class_names", names, "must be num_classes strings (of at most 256 characters)")
    if (HEAD_FILE in cfg["files"]) != (classes is not None):
        raise CheckpointError(f"{source}: {HEAD_FILE} and field 'num_classes' go together (files: "
                              f"{sorted(cfg['files'])}, num_classes: {classes!r})")
    return cfg


def read_config(path: Path) -> dict[str, Any]:
    """Read and validate a config.json file (strict JSON, bounded size and depth)."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing; every mvssl-hub checkpoint has a {CONFIG_FILE}")
    return validate_config(read_json_file(Path(path)), str(path))


def load_config(save_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated config.json of a local checkpoint folder."""
    return read_config(Path(save_dir) / CONFIG_FILE)


_EXPECTED_KEYS = ("arch", "small_images", "width", "arch_kwargs", "feature_dim", "method", "projector", "proj_dim", "num_views",
                  "beta")


def check_expected(cfg: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> None:
    """ValueError naming both values when a caller's kwargs contradict the checkpoint's config."""
    unknown = sorted(set(expected) - set(_EXPECTED_KEYS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; can check {list(_EXPECTED_KEYS)}")
    spec = cfg.get("projector")
    found = {
        **cfg["backbone"], "arch_kwargs": cfg["backbone"].get("kwargs"), "feature_dim": cfg["feature_dim"], "method": cfg.get("method"), "projector": spec,
        "proj_dim": parse_projector_spec(spec)[-1] if spec else None, "num_views": cfg.get("num_views"),
        "beta": cfg.get("beta"),
    }
    for key, want in expected.items():
        if want is not None and want != found.get(key):
            raise ValueError(f"{key}={want!r} was asked for, but the checkpoint {source} has {key}={found.get(key)!r}")


__all__ = [
    "CARD_FILE", "CHECKPOINT_FILES", "CONFIG_FILE", "FIGURE_NAME", "FORMAT", "FORMAT_VERSION", "HEAD_FILE", "MAX_BETA",
    "MAX_CLASSES", "MAX_FILE_BYTES", "MAX_IMAGE_SIZE", "MAX_PROJECTOR_DIM", "MAX_PROJECTOR_LAYERS", "MAX_VIEWS",
    "MAX_WIDTH", "METRIC_KEYS", "METRIC_NAMES", "METRIC_TASKS", "MODEL_FILE", "PROJECTOR_FILE", "SAVE_DTYPES",
    "SHA256_HEX", "WEIGHTS_FILES", "check_expected", "load_config", "merge_metrics", "metric_key", "normalize_metric",
    "read_config", "validate_config",
]
