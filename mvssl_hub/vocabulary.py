"""The project's names, defined once: SSL methods and the loss forms each accepts, and the zoo's naming rule.

- ``barlowtwins``: ``classic`` (M = 2), ``mean`` (O(M): each view against the per-image mean), ``all_pairs`` (O(M²)).
- ``vicreg``: ``classic``, ``leave_one_out`` (O(M): each view against the mean of the others), ``all_pairs``.
- ``auto``: classic at M = 2, the O(M) form above.

The zoo's naming rule: a builder is ``<method>_<arch>`` (:data:`BUILDER_SPECS` lists them with the backbone keys each
fixes), a narrow width with a builder of its own adds ``_w<width>`` (:data:`NARROW_WIDTHS`), a builder that fixes the
stem for a dataset adds its name (``_cifar10``); its weights enum is the torchvision-cased name plus ``_Weights``
(:func:`enum_name`); a checkpoint's config names its generic builder (:func:`builder_name`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METHODS: tuple[str, ...] = ("barlowtwins", "vicreg")
BT_FORMS: tuple[str, ...] = ("auto", "classic", "mean", "all_pairs")
VICREG_FORMS: tuple[str, ...] = ("auto", "classic", "leave_one_out", "all_pairs")
LOSS_FORMS: dict[str, tuple[str, ...]] = {"barlowtwins": BT_FORMS, "vicreg": VICREG_FORMS}
METHOD_TITLES: dict[str, str] = {"barlowtwins": "BarlowTwins", "vicreg": "VICReg"}
TIMM_PREFIX = "timm:"  # a timm architecture's backbone arch: "timm:<name>"
# Narrow widths with builders of their own (``<method>_resnet18_w16``), as torchvision names ``wide_resnet50_2``.
NARROW_WIDTHS: tuple[int, ...] = (16,)
# builder -> (method, backbone kwargs the builder fixes)
BUILDER_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "barlowtwins_resnet18": ("barlowtwins", {"arch": "resnet18"}),
    "barlowtwins_resnet18_w16": ("barlowtwins", {"arch": "resnet18", "width": 16, "small_images": True}),
    "barlowtwins_resnet18_cifar10": ("barlowtwins", {"arch": "resnet18", "width": 64, "small_images": False}),
    "barlowtwins_resnet50": ("barlowtwins", {"arch": "resnet50"}),
    "vicreg_resnet18": ("vicreg", {"arch": "resnet18"}),
    "vicreg_resnet18_w16": ("vicreg", {"arch": "resnet18", "width": 16, "small_images": True}),
    "vicreg_resnet50": ("vicreg", {"arch": "resnet50"}),
}


def enum_name(builder: str) -> str:
    """``barlowtwins_resnet18_w16`` -> ``BarlowTwins_ResNet18_W16_Weights``; ``..._cifar10`` -> ``..._CIFAR10_...``."""
    method, *rest = builder.split("_")
    return "_".join([METHOD_TITLES[method]] + [p.replace("resnet", "ResNet") if p.startswith("resnet") else p.upper()
                                               for p in rest]) + "_Weights"


def builder_name(cfg: Mapping[str, Any]) -> str:
    """The zoo builder a checkpoint belongs to: ``barlowtwins_resnet18``, or ``vicreg_resnet18_w16`` for a width
    with a builder of its own (``ssl_<arch>`` if no method)."""
    bb = cfg["backbone"]
    if bb["arch"].startswith(TIMM_PREFIX):
        return f"{cfg.get('method') or 'ssl'}_{bb['arch'][len(TIMM_PREFIX):]}"
    narrow = bb["width"] in NARROW_WIDTHS and bb["arch"] == "resnet18"
    return f"{cfg.get('method') or 'ssl'}_{bb['arch']}" + (f"_w{bb['width']}" if narrow else "")


__all__ = ["BT_FORMS", "BUILDER_SPECS", "LOSS_FORMS", "METHODS", "METHOD_TITLES", "NARROW_WIDTHS", "TIMM_PREFIX",
           "VICREG_FORMS", "builder_name", "enum_name"]
