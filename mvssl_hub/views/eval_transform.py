"""The deterministic evaluation transform: resize (antialiased), centre crop, normalise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .ops import as_float_images, normalise
from .presets import VIEW_PRESETS, ViewPreset


def _pil_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image (any mode) -> uint8 (3, H, W); TypeError naming the type for anything else."""
    if not (hasattr(image, "convert") and hasattr(image, "getbands")):
        raise TypeError(f"EvalTransform: expected a PIL image or a torch.Tensor, got {type(image).__name__}")
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image.convert("RGB"))


class EvalTransform:
    """Deterministic evaluation transform: uint8 (N, 3, H, W) -> ``output_dtype`` (N, 3, s, s).

    Resizes with antialiased bilinear interpolation — the shorter side to ``preset.eval_resize`` (then
    centre crop to s = ``eval_size``), or straight to s x s when ``eval_resize`` is None — and
    normalises. A resize to the size the image already has is skipped, so an s x s image under a
    preset without ``eval_resize`` is only normalised.
    """

    def __init__(self, preset: ViewPreset, *, output_dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(preset, ViewPreset):
            raise TypeError(f"EvalTransform: preset must be a ViewPreset, got {type(preset).__name__}")
        self.preset = preset
        self.output_dtype = output_dtype

    def __repr__(self) -> str:
        return f"EvalTransform({self.preset!r}, output_dtype={self.output_dtype})"

    def __call__(self, images: Any) -> torch.Tensor:
        """A PIL image or a (3, H, W) tensor -> (3, s, s); a (N, 3, H, W) batch -> (N, 3, s, s); as torchvision's
        presets do. Tensors are uint8, or float in [0, 1]."""
        if not isinstance(images, torch.Tensor):
            images = _pil_to_tensor(images)
        single = images.dim() == 3
        out = self._batch(images.unsqueeze(0) if single else images)
        return out[0] if single else out

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        x = as_float_images(images, "EvalTransform")
        p, s = self.preset, self.preset.eval_size
        h, w = x.shape[-2:]
        if p.eval_resize is None:
            size = (s, s)
        else:
            short = p.eval_resize
            # torchvision Resize(int): shorter side -> short, longer side scaled and truncated.
            size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        h, w = size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        x = x[:, :, top : top + s, left : left + s].clamp(0.0, 1.0)
        return normalise(x, p, self.output_dtype)


def eval_transform_from(transforms: Mapping[str, Any] | None) -> EvalTransform:
    """The EvalTransform a checkpoint's ``transforms`` record describes (eval_size, eval_resize, mean, std);
    what the record leaves out comes from its named ``preset`` (default cifar10)."""
    tf = dict(transforms or {})
    named = VIEW_PRESETS.get(tf.get("preset") or "cifar10", VIEW_PRESETS["cifar10"])
    size = int(tf.get("eval_size", named.eval_size))
    return EvalTransform(ViewPreset(crop_size=size, eval_size=size, eval_resize=tf.get("eval_resize"),
                                    mean=tuple(tf.get("mean", named.mean)), std=tuple(tf.get("std", named.std))))


__all__ = ["EvalTransform", "eval_transform_from"]
