"""timm models as backbones: ``timm:<name>`` plus timm keyword arguments; the features are timm's pooled
pre-logits (the model built with ``num_classes=0``).

timm is optional (``pip install "mvssl-hub[timm]"``) and imported only when a timm backbone is built, never
when ``mvssl_hub`` is imported. :class:`TimmBackbone` wraps the timm model as ``.model`` but its state dict
carries timm's own key names (no ``model.`` prefix, in both directions), so the backbone's weights load
strictly into ``timm.create_model(name, num_classes=0, **kwargs)`` and back.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn

from .errors import ConfigError, UnknownModelError
from .vocabulary import TIMM_PREFIX

INSTALL_LINE = 'pip install "mvssl-hub[timm]"'
# create_model arguments that are not the architecture's: the backbone fixes or refuses them.
RESERVED_KWARGS = ("num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                   "features_only", "cache_dir", "device", "dtype", "scriptable", "exportable", "no_jit")
MAX_KWARGS_CHARS = 4096  # the kwargs as JSON: a sane architecture needs a few dozen characters
# An int or list past these would only make even a meta-device build (Python modules, no tensors) run away.
MAX_KWARG_INT = 1 << 16
MAX_KWARG_LIST = 64
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")


def is_timm_arch(arch: object) -> bool:
    """True for ``"timm:<name>"``."""
    return isinstance(arch, str) and arch.startswith(TIMM_PREFIX)


def import_timm() -> Any:
    """The timm module, or ImportError with the install line."""
    try:
        import timm
    except ImportError:
        raise ImportError(f"timm backbones need the timm package: {INSTALL_LINE}") from None
    return timm


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_KWARG_INT:
        raise ConfigError(f"{where}: {value} is past the bound {MAX_KWARG_INT} mvssl-hub sets on timm arguments")
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and value == value
                                                                and abs(value) != float("inf")):
        return
    if isinstance(value, (list, tuple)) and len(value) > MAX_KWARG_LIST:
        raise ConfigError(f"{where}: a list of {len(value)} items; at most {MAX_KWARG_LIST}")
    if isinstance(value, (list, tuple)) and depth < 3:
        for v in value:
            _check_json_value(v, where, depth + 1)
        return
    raise ConfigError(f"{where}: {value!r:.80} must be a JSON number, string, bool, null or a (short) list of these")


def check_timm_kwargs(kwargs: Any, where: str = "arch_kwargs") -> dict[str, Any]:
    """``kwargs`` as a JSON-ready dict (tuples become lists); ConfigError naming the key at fault."""
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where} = {kwargs!r:.120}: must be a JSON object of timm keyword arguments")
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{where}: key {key!r:.80} is not a keyword argument name")
        if key in RESERVED_KWARGS:
            raise ConfigError(f"{where}: {key!r} is set by mvssl-hub (features are the num_classes=0 pooled "
                              f"pre-logits; weights come from checkpoints), not an architecture argument")
        _check_json_value(value, f"{where}[{key!r}]")
        out[key] = json.loads(json.dumps(value))  # tuples -> lists: what config.json will hold
    if len(json.dumps(out)) > MAX_KWARGS_CHARS:
        raise ConfigError(f"{where}: more than {MAX_KWARGS_CHARS} characters as JSON")
    return out


def parse_timm_kwargs(text: str | None, where: str = "arch_kwargs") -> dict[str, Any]:
    """``'{"img_size": 32}'`` (the recipes' flag) -> a checked dict; ``""`` / None -> {}."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} = {text!r:.120}: not valid JSON ({e.msg} at character {e.pos})") from None
    return check_timm_kwargs(value, where)


@dataclass(frozen=True)
class TimmBackboneConfig:
    """What rebuilds a timm backbone: the timm model ``name``, its keyword arguments, and the timm version that
    built it (a record; any installed timm may rebuild it)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    timm_version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"timm model name {self.name!r:.80} must be 1-128 letters, digits, '_', '.' or '-'")
        object.__setattr__(self, "kwargs", check_timm_kwargs(self.kwargs, f"timm:{self.name} kwargs"))
        if self.timm_version is not None and not isinstance(self.timm_version, str):
            raise ConfigError(f"timm_version {self.timm_version!r:.40} must be a string")

    @classmethod
    def from_arch(cls, arch: str, kwargs: Mapping[str, Any] | None = None) -> TimmBackboneConfig:
        """``("timm:vit_tiny_patch16_224", {"img_size": 32})`` -> config."""
        if not is_timm_arch(arch):
            raise ConfigError(f"arch {arch!r} is not a timm architecture ('{TIMM_PREFIX}<name>')")
        return cls(arch[len(TIMM_PREFIX):], dict(kwargs or {}))

    @property
    def arch(self) -> str:
        return TIMM_PREFIX + self.name

    def to_dict(self) -> dict[str, Any]:
        """config.json's ``backbone``: ``{"arch": "timm:<name>", "kwargs": {...}, "timm_version": "1.0.x"}``."""
        return {"arch": self.arch, "kwargs": dict(self.kwargs), "timm_version": self.timm_version}


def _unknown_name(timm: Any, name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else "; see timm.list_models()"
    return UnknownModelError(f"unknown timm model {name!r}{hint}")


def _build(timm: Any, name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def create_timm_model(config: TimmBackboneConfig) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)``, no download. UnknownModelError with the closest names;
    ConfigError naming the keyword argument(s) timm refuses (each is tried alone on the meta device)."""
    timm = import_timm()
    if not timm.is_model(config.name):
        raise _unknown_name(timm, config.name)
    try:
        return _build(timm, config.name, config.kwargs)
    except torch.OutOfMemoryError:
        raise
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError) as e:
        err = e
    m = _UNEXPECTED.search(str(err))
    if m:
        raise ConfigError(f"timm:{config.name} does not take the keyword argument {m.group(1)!r} "
                          f"(kwargs {config.kwargs})") from None
    bad = []
    for key, value in config.kwargs.items():
        try:
            with torch.device("meta"):
                _build(timm, config.name, {key: value})
        except Exception:
            bad.append(f"{key}={value!r}")
    culprit = f"keyword argument(s) {', '.join(bad)}" if bad else f"the combination of kwargs {config.kwargs}"
    raise ConfigError(f"timm:{config.name} refuses {culprit}: {type(err).__name__}: {err}") from None


def _drop_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    inner = prefix + "model."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + "model." + key[len(prefix):]] = state_dict.pop(key)


class TimmBackbone(nn.Module):
    """A timm model without classifier: forward (N, 3, H, W) -> (N, feature_dim) pooled pre-logits.

    ``.model`` is the timm module; ``state_dict()`` / ``load_state_dict()`` use timm's own key names.
    ``init_weights`` is accepted for symmetry with :class:`~mvssl_hub.backbones.ResNetBackbone` (timm always
    initialises; on the meta device that costs nothing).
    """

    def __init__(self, config: TimmBackboneConfig, init_weights: bool = True) -> None:
        super().__init__()
        timm = import_timm()
        self.model = create_timm_model(config)
        self.config = replace(config, timm_version=timm.__version__)
        # the pooled pre-logits' width: head_hidden_size where a pre-logits layer widens it (MobileNetV3)
        self.feature_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.register_state_dict_post_hook(_drop_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """(C, H, W) a fixed-size model (a ViT) was built for, else None (any size works)."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (3, int(h), int(w))


def timm_hub_config(backbone: TimmBackbone, transforms: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config.json keys timm reads from a Hub repo (``timm.create_model("hf-hub:<repo>", pretrained=True)``):
    ``architecture``, ``num_features``, ``model_args`` and ``pretrained_cfg`` (input size, mean, std, crop, and
    ``num_classes = 0``, so that timm builds the model without classifier and loads it strictly)."""
    timm = import_timm()
    model = backbone.model
    data = timm.data.resolve_data_config({}, model=model)
    cfg: dict[str, Any] = {
        "input_size": list(input_size(model) or data["input_size"]),
        "interpolation": data.get("interpolation", "bicubic"),
        "mean": [float(x) for x in data["mean"]], "std": [float(x) for x in data["std"]],
        "crop_pct": float(data.get("crop_pct", 1.0)), "crop_mode": data.get("crop_mode", "center"),
        "num_classes": 0,
    }
    default = model.pretrained_cfg or {}
    if default.get("first_conv"):
        cfg["first_conv"] = default["first_conv"]
    cfg["fixed_input_size"] = input_size(model) is not None
    tf = transforms or {}
    if tf.get("mean") and tf.get("std"):  # the normalisation the features were trained with
        cfg["mean"], cfg["std"] = [float(x) for x in tf["mean"]], [float(x) for x in tf["std"]]
    if tf.get("eval_size"):
        cfg["input_size"] = [3, int(tf["eval_size"]), int(tf["eval_size"])]
        cfg["crop_pct"] = float(tf["eval_size"]) / float(tf.get("eval_resize") or tf["eval_size"])
    return {"architecture": backbone.config.name, "num_features": int(model.num_features),
            "model_args": dict(backbone.config.kwargs), "pretrained_cfg": cfg}


__all__ = [
    "INSTALL_LINE", "RESERVED_KWARGS", "TIMM_PREFIX", "TimmBackbone", "TimmBackboneConfig", "check_timm_kwargs",
    "create_timm_model", "import_timm", "input_size", "is_timm_arch", "parse_timm_kwargs", "timm_hub_config",
]
