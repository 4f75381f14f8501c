"""Tensor ops on the images' device: input checks, sync-free host -> device transfers and cached constants, the
colour ops on float (B, 3, h, w) in [0, 1] with per-sample factors of shape (B,), and the normalisation.

Host -> device traffic: a CPU tensor goes from pinned memory with one ``non_blocking`` copy; constant tensors (luma
weights, normalisation) are made once per (device, dtype) and cached. No value is read back to the host.
"""

from __future__ import annotations

from typing import Any

import torch

from .presets import ViewPreset

# ITU-R BT.601 luma weights (the usual RGB -> grayscale conversion).
_LUMA = (0.299, 0.587, 0.114)


def as_float_images(images: torch.Tensor, where: str) -> torch.Tensor:
    """Validate ``images`` (N, C, H, W) with C in {1, 3}; return float32 (N, 3, H, W) in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"{where}: images must be 4-D (N, 3, H, W), got shape {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(
            f"{where}: images must have 3 channels (or 1, repeated), got shape {tuple(images.shape)}"
            " (channels-last arrays need .permute(0, 3, 1, 2))"
        )
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"{where}: images must be non-empty, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float().div_(255.0)
    elif images.is_floating_point():
        x = images.float().clamp(0.0, 1.0)
    else:
        raise TypeError(f"{where}: images must be uint8 or float in [0, 1], got {images.dtype}")
    return x.expand(n, 3, h, w) if c == 1 else x


# --------------------------------------------------------------------------------------------------
# Host -> device transfers without a host sync


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU tensor to ``device``: from pinned memory with ``non_blocking=True`` on CUDA (the
    caching host allocator keeps the pinned block alive until the copy is done), unchanged on the CPU."""
    if device.type == "cpu":
        return t
    if device.type == "cuda" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


_CONSTANTS: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}


def cached_constant(key: str, make: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``make()`` (a CPU tensor) cast to ``dtype`` on the CPU and moved to ``device`` once; cached."""
    k = (key, dtype, device)
    t = _CONSTANTS.get(k)
    if t is None:
        t = to_device(make().to(dtype), device)
        _CONSTANTS[k] = t
    return t


# --------------------------------------------------------------------------------------------------
# Colour ops on float (B, 3, h, w) in [0, 1]; per-sample factors of shape (B,)


def _luma_weights(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1, 1) luma weights in ``x``'s dtype on ``x``'s device (cached)."""
    return cached_constant("luma", lambda: torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1), x.dtype, x.device)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 1, h, w) luma (a weighted channel sum: ~6x faster than unbinding channels)."""
    return (x * _luma_weights(x)).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` clamped to [0, 1]; factor (B,) broadcasts per sample."""
    return torch.lerp(other.expand_as(x), x, factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # Mean of the grayscale image = luma-weighted sum of the channel means.
    mean = (x.mean(dim=(2, 3), keepdim=True) * _luma_weights(x)).sum(dim=1, keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, gray(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(dim=1)
    v, argmax = x.max(dim=1)
    c = v - x.min(dim=1).values
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    # Sector formula: hue*6 = (g-b)/c (max r), (b-r)/c + 2 (max g), (r-g)/c + 4 (max b).
    h_r = (g - b) / safe_c
    h_g = (b - r) / safe_c + 2.0
    h_b = (r - g) / safe_c + 4.0
    h6 = torch.where(argmax == 0, h_r, torch.where(argmax == 1, h_g, h_b))
    h = torch.where(c > 0, torch.remainder(h6 / 6.0, 1.0), torch.zeros_like(h6))
    return torch.stack((h, s, v), dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) HSV (hue in [0, 1)) -> RGB by the closed form
    channel_n = v - v * s * clamp(min(k, 4 - k), 0, 1), k = (n + 6 * hue) mod 6, n = 5, 3, 1 for R, G, B."""
    h, s, v = hsv.unbind(dim=1)
    n = cached_constant("hsv_n", lambda: torch.tensor((5.0, 3.0, 1.0)).view(1, 3, 1, 1), hsv.dtype, hsv.device)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    v = v.unsqueeze(1)
    return v - v * s.unsqueeze(1) * ramp


def adjust_hue(x: torch.Tensor, shift: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, (B,)) in HSV space; samples with ``apply`` False
    are returned untouched (not round-tripped)."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    rgb = _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)).clamp_(0.0, 1.0)
    return torch.where(apply.view(-1, 1, 1, 1), rgb, x)


def normalise(
    x: torch.Tensor, preset: ViewPreset, dtype: torch.dtype, channels_last: bool = False
) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> (x - mean) / std cast to ``dtype`` (optionally channels_last)."""

    def scale_shift() -> torch.Tensor:  # (2, 1, 3, 1, 1) float64: 1/std, -mean/std
        mean = torch.tensor(preset.mean, dtype=torch.float64).view(1, 3, 1, 1)
        inv_std = 1.0 / torch.tensor(preset.std, dtype=torch.float64).view(1, 3, 1, 1)
        return torch.stack((inv_std, -mean * inv_std))

    key = f"normalise{preset.mean}{preset.std}"
    scale, shift = cached_constant(key, scale_shift, x.dtype, x.device).unbind(0)
    # (x - mean) / std as one fused x * (1/std) + (-mean/std).
    x = torch.addcmul(shift, x, scale)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype=dtype, memory_format=fmt)


__all__ = ["adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation", "as_float_images",
           "cached_constant", "gray", "normalise", "to_device"]
