"""View presets: the augmentation and evaluation settings of each dataset, with the numbers' sources."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..registry import unknown_name_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewPreset:
    """Augmentation and evaluation settings of one dataset (all views use the same preset).

    ``scale`` is the crop's area fraction range and ``ratio`` its aspect-ratio (w/h) range, as in
    torchvision's RandomResizedCrop. ``eval_resize`` is the shorter side to resize to before the centre
    crop to ``eval_size``; ``None`` resizes straight to ``eval_size`` x ``eval_size``.
    """

    crop_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0
    grayscale_p: float = 0.2
    solarize_p: float = 0.0
    eval_size: int = 32
    eval_resize: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for key in ("crop_size", "eval_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViewPreset.{key} must be a positive int, got {value!r}")
        if self.eval_resize is not None and self.eval_resize < self.eval_size:
            raise ValueError(
                f"ViewPreset.eval_resize={self.eval_resize} is smaller than eval_size={self.eval_size}"
            )
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"ViewPreset.scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"ViewPreset.ratio must satisfy 0 < min <= max, got {self.ratio}")
        for key in ("flip_p", "jitter_p", "grayscale_p", "solarize_p"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ViewPreset.{key} must be a probability in [0, 1], got {value!r}")
        for key in ("brightness", "contrast", "saturation"):
            value = getattr(self, key)
            if value < 0:
                raise ValueError(f"ViewPreset.{key} must be >= 0, got {value!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ViewPreset.hue must lie in [0, 0.5], got {self.hue!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ViewPreset.mean/std need 3 values (std > 0), got {self.mean}/{self.std}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Numbers from docs/method.md ("Training and evaluation setup"), which was read from the
# paper (Agrawal et al., NeurIPS 2024) and its reference code (kumarkrishna/fastssl):
# RandomResizedCrop scale 0.08-1 on CIFAR-10 and ImageNet-100, 0.2-1 on STL-10; flip 0.5; colour jitter
# p 0.8 with brightness/contrast/saturation 0.4 and hue 0 (CIFAR/STL) or 0.1 (ImageNet-100); grayscale
# p 0.2 (0.1 on STL); solarisation p 0.2 only on ImageNet-100; crops 32 / 64 / 128 px; STL pretrains at
# 64 px and is evaluated at 96 px. The ratio range (3/4, 4/3) is torchvision's RandomResizedCrop
# default. The ImageNet-100 eval resize 146 -> centre crop 128 keeps torchvision's usual 0.875 crop
# ratio (128 / 0.875 = 146.3). CIFAR mean/std are the CIFAR-10 training-set channel statistics;
# ImageNet mean/std are torchvision's.
VIEW_PRESETS: dict[str, ViewPreset] = {
    "cifar10": ViewPreset(
        crop_size=32, scale=(0.08, 1.0), hue=0.0, grayscale_p=0.2, solarize_p=0.0, eval_size=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    ),
    "stl10": ViewPreset(
        crop_size=64, scale=(0.2, 1.0), hue=0.0, grayscale_p=0.1, solarize_p=0.0, eval_size=96,
    ),
    "imagenet100": ViewPreset(
        crop_size=128, scale=(0.08, 1.0), hue=0.1, grayscale_p=0.2, solarize_p=0.2, eval_size=128,
        eval_resize=146,
    ),
}


def get_view_preset(name: str) -> ViewPreset:
    """The preset registered as ``name``; UnknownModelError (a KeyError) with close matches otherwise."""
    try:
        return VIEW_PRESETS[name]
    except KeyError:
        raise unknown_name_error("view preset", name, VIEW_PRESETS) from None


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VIEW_PRESETS", "ViewPreset", "get_view_preset"]
