"""The random parameters of M x N views, drawn on the CPU from one ``torch.Generator``, so that the same seed gives
the same views bit for bit whatever device makes them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .presets import ViewPreset

# torchvision's RandomResizedCrop tries 10 boxes before falling back to a centre crop.
_CROP_ATTEMPTS = 10


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (parameters are drawn on the CPU), "
            f"got one on {generator.device}"
        )


def sample_crop_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` RandomResizedCrop boxes on a ``height`` x ``width`` image, drawn on the CPU.

    torchvision semantics, batched: up to 10 attempts per box with area fraction ~ U(scale) and
    aspect ratio w/h log-uniform in ``ratio``, sizes rounded to whole pixels; the first attempt that
    fits is kept, with its top/left offset uniform over the valid integer positions. When none fits,
    the largest centred box whose aspect ratio is clamped into ``ratio``. Returns float64 tensors
    ``(top, left, box_height, box_width)``, each of shape (count,), in pixels.
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    k = _CROP_ATTEMPTS
    u_area = torch.rand(k, count, generator=generator, dtype=torch.float64)
    u_ratio = torch.rand(k, count, generator=generator, dtype=torch.float64)
    u_pos = torch.rand(2, count, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # Index of the first attempt that fits (argmax of a bool picks the first True).
    first = fits.to(torch.uint8).argmax(dim=0, keepdim=True)
    any_fit = fits.any(dim=0)
    h_ok = h.gather(0, first).squeeze(0)
    w_ok = w.gather(0, first).squeeze(0)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fb_w, fb_h = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fb_w, fb_h = float(round(height * ratio[1])), float(height)
    else:
        fb_w, fb_h = float(width), float(height)
    bh = torch.where(any_fit, h_ok, torch.full_like(h_ok, fb_h))
    bw = torch.where(any_fit, w_ok, torch.full_like(w_ok, fb_w))
    top_rand = torch.floor(u_pos[0] * (height - bh + 1)).clamp_(max=height - bh)
    left_rand = torch.floor(u_pos[1] * (width - bw + 1)).clamp_(max=width - bw)
    # torchvision's centre crop offsets: int(round((size - box) / 2)).
    top = torch.where(any_fit, top_rand, torch.round((height - bh) / 2))
    left = torch.where(any_fit, left_rand, torch.round((width - bw) / 2))
    return top, left, bh, bw


@dataclass(frozen=True)
class ViewParams:
    """Random parameters of M x N views, flattened view-major: entry ``m * N + n`` is view m of image n.

    Crop boxes are float64 pixels on the source image; jitter factors are 1 (hue: 0) for samples that
    skip colour jitter; ``order`` is the permutation of (brightness, contrast, saturation, hue) used.
    """

    num_views: int
    batch_size: int
    top: torch.Tensor
    left: torch.Tensor
    box_height: torch.Tensor
    box_width: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    grayscale: torch.Tensor
    solarize: torch.Tensor
    order: tuple[int, int, int, int]


def _factors(u: torch.Tensor, strength: float, apply: torch.Tensor) -> torch.Tensor:
    """Factors uniform in [max(0, 1 - s), 1 + s] where ``apply``, else 1."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return torch.where(apply, lo + (hi - lo) * u, torch.ones_like(u))


def sample_view_params(preset: ViewPreset, batch_size: int, num_views: int, height: int, width: int,
                       generator: torch.Generator | None = None) -> ViewParams:
    """Draw every random parameter of ``num_views`` x ``batch_size`` views of ``preset`` on the CPU."""
    if not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"MultiViewAugment: num_views must be an int >= 1, got {num_views!r}")
    _check_generator(generator)
    p = preset
    count = num_views * batch_size
    order = tuple(int(i) for i in torch.randperm(4, generator=generator))
    top, left, bh, bw = sample_crop_boxes(count, height, width, p.scale, p.ratio, generator)
    u = torch.rand(8, count, generator=generator)
    jitter = u[1] < p.jitter_p
    return ViewParams(
        num_views=num_views,
        batch_size=batch_size,
        top=top,
        left=left,
        box_height=bh,
        box_width=bw,
        flip=u[0] < p.flip_p,
        jitter=jitter,
        brightness=_factors(u[2], p.brightness, jitter),
        contrast=_factors(u[3], p.contrast, jitter),
        saturation=_factors(u[4], p.saturation, jitter),
        hue=torch.where(jitter, p.hue * (2.0 * u[5] - 1.0), torch.zeros_like(u[5])),
        grayscale=u[6] < p.grayscale_p,
        solarize=u[7] < p.solarize_p,
        order=order,  # type: ignore[arg-type]
    )


__all__ = ["ViewParams", "sample_crop_boxes", "sample_view_params"]
