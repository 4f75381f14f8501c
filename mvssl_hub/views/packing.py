"""Every per-sample parameter the device needs, packed into one flat CPU tensor so that it travels in one copy."""

from __future__ import annotations

import torch

from .params import ViewParams

# Per-sample float32 rows of the packed parameter tensor, in order; then the grayscale indices.
_PACKED_ROWS = ("brightness", "contrast", "saturation", "hue", "jitter", "solarize")
_THETA = 6


def pack_params(params: ViewParams, height: int, width: int, dtype: torch.dtype, pin: bool = False) -> torch.Tensor:
    """Every per-sample parameter the device needs, as one flat CPU tensor of ``dtype``:
    theta (M*N, 2, 3) | brightness, contrast, saturation, hue, jitter, solarize (M*N each) |
    grayscale indices (K,). Theta is computed in float64 and cast once (as the device copy used to);
    masks are 0/1 and indices are exact (M*N < 2**24 for float32). In pinned memory when ``pin``."""
    count = params.num_views * params.batch_size
    if count >= 2**24:
        raise ValueError(f"MultiViewAugment: {count} views per call exceed the 2**24 indices float32 holds")
    # Box in grid coordinates (align_corners=False: -1 and 1 are the outer pixel edges).
    sx = params.box_width / width
    sy = params.box_height / height
    cx = (2.0 * params.left + params.box_width) / width - 1.0
    cy = (2.0 * params.top + params.box_height) / height - 1.0
    sx = torch.where(params.flip, -sx, sx)
    zeros = torch.zeros_like(sx)
    theta = torch.stack((sx, zeros, cx, zeros, sy, cy), dim=1).to(dtype)  # (count, 6)
    gray_idx = params.grayscale.nonzero().squeeze(1)
    rows = [getattr(params, k) for k in _PACKED_ROWS]
    total = count * (_THETA + len(rows)) + gray_idx.numel()
    out = torch.empty(total, dtype=dtype, pin_memory=pin)
    out[: count * _THETA].view(count, _THETA).copy_(theta)
    at = count * _THETA
    for r in rows:
        out[at : at + count].copy_(r)  # float32 factors copied exactly; bools become 0/1
        at += count
    out[at:].copy_(gray_idx)
    return out


def unpack_params(packed: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
    """Views into the device copy of :func:`pack_params`'s tensor: theta (count, 2, 3), rows (count,),
    grayscale_idx int64 (K,)."""
    out = {"theta": packed[: count * _THETA].view(count, 2, 3)}
    at = count * _THETA
    for k in _PACKED_ROWS:
        out[k] = packed[at : at + count]
        at += count
    out["grayscale_idx"] = packed[at:].to(torch.int64)
    return out


__all__ = ["pack_params", "unpack_params"]
