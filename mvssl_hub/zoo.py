"""The zoo: each registered builder beside its weights enum, torchvision style.

``barlowtwins_resnet18_w16(weights="DEFAULT")`` -> weights entry -> bundled snapshot or Hub transport ->
checkpoint format -> ``load_state_dict(strict=True)``. Narrow networks have builders of their own
(``_w16``: ResNet-18 with 16 first-stage channels), as torchvision names ``wide_resnet50_2``.

The published entries are data, in ``zoo_weights.json`` beside this file, written by the release
command (``make zoo`` -> ``recipes/publish.py``) from the pushed checkpoints; never edited by hand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .backbones import ResNetBackbone, build_backbone
from .hub.weights import (
    Weights,
    WeightsEnum,
    load_weights,
    make_weights_enum,
    resolve_weights,
    validate_entry,
)
from .registry import get_model_builder, get_model_weights, register_model, set_model_weights
from .vocabulary import BUILDER_SPECS, enum_name  # the zoo's naming rule lives there

logger = logging.getLogger(__name__)
ENTRIES_FILE = Path(str(resources.files("mvssl_hub") / "zoo_weights.json"))  # package data
_BACKBONE_KWARGS = ("small_images", "width")
_HUB_KWARGS = ("cache_dir", "endpoint", "local_files_only", "token", "force_download")


def _read_entries() -> dict[str, dict[str, Any]]:
    """builder -> {"default": member, "entries": {member: entry}} from the shipped JSON (empty if absent)."""
    if not ENTRIES_FILE.is_file():
        return {}
    return json.loads(ENTRIES_FILE.read_text(encoding="utf-8"))


def _weights_enum(builder: str, published: Mapping[str, Any]) -> type[WeightsEnum]:
    return make_weights_enum(enum_name(builder), published.get("entries", {}), published.get("default"),
                             module=__name__, builder_config=_entry_spec)


def _entry_spec(builder: str) -> tuple[str, dict[str, Any]]:
    if builder not in BUILDER_SPECS:
        raise ValueError(f"{builder!r} is not a zoo builder; known: {sorted(BUILDER_SPECS)}")
    return BUILDER_SPECS[builder]


_PUBLISHED = _read_entries()
BarlowTwins_ResNet18_Weights = _weights_enum("barlowtwins_resnet18", _PUBLISHED.get("barlowtwins_resnet18", {}))
BarlowTwins_ResNet18_W16_Weights = _weights_enum("barlowtwins_resnet18_w16",
                                                 _PUBLISHED.get("barlowtwins_resnet18_w16", {}))
BarlowTwins_ResNet18_CIFAR10_Weights = _weights_enum("barlowtwins_resnet18_cifar10",
                                                     _PUBLISHED.get("barlowtwins_resnet18_cifar10", {}))
BarlowTwins_ResNet50_Weights = _weights_enum("barlowtwins_resnet50", _PUBLISHED.get("barlowtwins_resnet50", {}))
VICReg_ResNet18_Weights = _weights_enum("vicreg_resnet18", _PUBLISHED.get("vicreg_resnet18", {}))
VICReg_ResNet18_W16_Weights = _weights_enum("vicreg_resnet18_w16", _PUBLISHED.get("vicreg_resnet18_w16", {}))
VICReg_ResNet50_Weights = _weights_enum("vicreg_resnet50", _PUBLISHED.get("vicreg_resnet50", {}))


def _build(builder: str, weights: Any, kwargs: dict[str, Any]) -> ResNetBackbone:
    """A zoo backbone: random init (weights=None) or the published ``weights``, checked against ``kwargs``."""
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    unknown = sorted(set(kwargs) - set(_BACKBONE_KWARGS))
    if unknown:
        raise TypeError(f"{builder}() got unexpected keyword argument(s) {unknown}; allowed: "
                        f"{list(_BACKBONE_KWARGS) + list(_HUB_KWARGS)} and weights, progress")
    _, fixed = BUILDER_SPECS[builder]
    clash = {k: (v, fixed[k]) for k, v in kwargs.items() if k in fixed and fixed[k] != v}
    if clash:
        raise ValueError(f"{builder}() fixes {', '.join(f'{k}={f!r}' for k, (_, f) in clash.items())}; got "
                         f"{', '.join(f'{k}={v!r}' for k, (v, _) in clash.items())}")
    if weights is None:
        return build_backbone(**{**fixed, **kwargs})
    enum = get_model_weights(builder)
    w = resolve_weights(builder, enum, weights)
    for key, value in kwargs.items():
        if value != w.meta["backbone"][key]:
            raise ValueError(f"{builder}({key}={value!r}) contradicts the weights {w.repo_id}@{w.revision[:12]}, "
                             f"which have {key}={w.meta['backbone'][key]!r}")
    return load_weights(w, **hub_kwargs)  # type: ignore[return-value]


@register_model(weights=BarlowTwins_ResNet18_Weights)
def barlowtwins_resnet18(*, weights: BarlowTwins_ResNet18_Weights | str | None = None, progress: bool = True,
                         **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 backbone (N, 3, H, W) -> (N, 512 * width / 64) pretrained with multi-view Barlow Twins.

    Keyword args: ``weights`` (None, "DEFAULT", an enum member or "Enum.MEMBER"), ``small_images``
    (3x3 stride-1 stem, no max-pool; default True), ``width`` (first-stage channels; default 64), and
    huggingface_hub's ``cache_dir``, ``token``, ``local_files_only``, ``force_download``.
    ``progress`` is accepted as torchvision's builders do (downloads show huggingface_hub's own bars).
    """
    return _build("barlowtwins_resnet18", weights, kwargs)


@register_model(weights=BarlowTwins_ResNet18_W16_Weights)
def barlowtwins_resnet18_w16(*, weights: BarlowTwins_ResNet18_W16_Weights | str | None = None, progress: bool = True,
                             **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 at width 16, small-image stem: backbone (N, 3, H, W) -> (N, 128), multi-view Barlow Twins.

    Trained on CIFAR-10 by the zoo's recipe (``recipes/configs/zoo/``); see the weights' ``.meta``.
    """
    return _build("barlowtwins_resnet18_w16", weights, kwargs)


@register_model(weights=BarlowTwins_ResNet18_CIFAR10_Weights)
def barlowtwins_resnet18_cifar10(*, weights: BarlowTwins_ResNet18_CIFAR10_Weights | str | None = None,
                                 progress: bool = True, **kwargs: Any) -> ResNetBackbone:
    """The zoo's CIFAR-10 flagship: ResNet-18, torchvision's standard stem, full width: backbone (N, 3, H, W) ->
    (N, 512), multi-view Barlow Twins (8 views, d = 256).

    torchvision-compatible keys: the state dict loads ``strict=True`` into ``torchvision.models.resnet18()`` less
    its ``fc``. Trained on CIFAR-10 by ``tools/campaign.py``; see the weights' ``.meta`` and model card.
    """
    return _build("barlowtwins_resnet18_cifar10", weights, kwargs)


@register_model(weights=BarlowTwins_ResNet50_Weights)
def barlowtwins_resnet50(*, weights: BarlowTwins_ResNet50_Weights | str | None = None, progress: bool = True,
                         **kwargs: Any) -> ResNetBackbone:
    """ResNet-50 backbone (N, 3, H, W) -> (N, 2048 * width / 64) pretrained with multi-view Barlow Twins."""
    return _build("barlowtwins_resnet50", weights, kwargs)


@register_model(weights=VICReg_ResNet18_Weights)
def vicreg_resnet18(*, weights: VICReg_ResNet18_Weights | str | None = None, progress: bool = True,
                    **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 backbone (N, 3, H, W) -> (N, 512 * width / 64) pretrained with multi-view VICReg."""
    return _build("vicreg_resnet18", weights, kwargs)


@register_model(weights=VICReg_ResNet18_W16_Weights)
def vicreg_resnet18_w16(*, weights: VICReg_ResNet18_W16_Weights | str | None = None, progress: bool = True,
                        **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 at width 16, small-image stem: backbone (N, 3, H, W) -> (N, 128), multi-view VICReg."""
    return _build("vicreg_resnet18_w16", weights, kwargs)


@register_model(weights=VICReg_ResNet50_Weights)
def vicreg_resnet50(*, weights: VICReg_ResNet50_Weights | str | None = None, progress: bool = True,
                    **kwargs: Any) -> ResNetBackbone:
    """ResNet-50 backbone (N, 3, H, W) -> (N, 2048 * width / 64) pretrained with multi-view VICReg."""
    return _build("vicreg_resnet50", weights, kwargs)


def register_weights(builder: str, enum: type[WeightsEnum] | Mapping[str, Mapping[str, Any] | Weights],
                     default: str | None = None) -> type[WeightsEnum] | None:
    """Set the weights enum of ``builder`` (an enum, or entries to build one from); returns the previous one."""
    get_model_builder(builder)  # UnknownModelError with close matches
    if not isinstance(enum, type):
        enum = make_weights_enum(enum_name(builder), enum, default, module=__name__, builder_config=_entry_spec)
    else:  # an enum made elsewhere: its entries must fit this builder too
        for member in enum:
            validate_entry(member.value, _entry_spec)
    for member in enum:
        if member.value.builder != builder:
            raise ValueError(f"{enum.__name__}.{member.name} is for {member.value.builder}, not {builder}")
    return set_model_weights(builder, enum)


__all__ = [
    "BUILDER_SPECS", "BarlowTwins_ResNet18_CIFAR10_Weights",
    "BarlowTwins_ResNet18_W16_Weights", "BarlowTwins_ResNet18_Weights", "BarlowTwins_ResNet50_Weights", "ENTRIES_FILE",
    "VICReg_ResNet18_W16_Weights", "VICReg_ResNet18_Weights", "VICReg_ResNet50_Weights", "barlowtwins_resnet18",
    "barlowtwins_resnet18_cifar10", "barlowtwins_resnet18_w16", "barlowtwins_resnet50", "enum_name",
    "register_weights", "vicreg_resnet18", "vicreg_resnet18_w16", "vicreg_resnet50",
]
