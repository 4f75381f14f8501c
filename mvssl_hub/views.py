"""Multi-view augmentation as batched tensor ops on the training device.

Each image is decoded once (uint8 ``(N, 3, H, W)``); its M views are made here with per-sample random
parameters, with no per-image PIL work and no Python loop over images:

1. RandomResizedCrop + horizontal flip: one affine sampling grid per (view, image) pair, a single
   ``F.grid_sample`` call (bilinear, ``align_corners=False``, border padding) that reads straight from
   the decoded image. The M grids of an image are stacked along the grid's height, so the image is
   never copied M times.
2. Colour jitter with probability ``jitter_p`` (brightness, contrast, saturation, hue; the order is one
   random permutation per call, shared by the batch), random grayscale, solarisation, clamp to [0, 1],
   normalisation, cast, optional channels_last.

All randomness is drawn on the CPU from one ``torch.Generator`` (``sample_params``) and then moved to
the images' device, so the same seed gives the same views bit for bit whatever device runs the ops.

Host-device traffic per call on CUDA: every per-sample parameter (affine crops, jitter factors, masks,
grayscale indices) is packed into one float32 CPU tensor in pinned memory and sent with a single
``non_blocking`` copy; constant tensors (luma weights, normalisation) are made once per (device, dtype)
and cached. No value is read back to the host, so the augmentation never blocks the CPU on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from .registry import unknown_name_error

__all__ = [
    "VIEW_PRESETS",
    "EvalTransform",
    "eval_transform_from",
    "MultiViewAugment",
    "ViewParams",
    "ViewPreset",
    "get_view_preset",
    "sample_crop_boxes",
    "views_for_probe",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma weights (the usual RGB -> grayscale conversion).
_LUMA = (0.299, 0.587, 0.114)
# torchvision's RandomResizedCrop tries 10 boxes before falling back to a centre crop.
_CROP_ATTEMPTS = 10


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


# --------------------------------------------------------------------------------------------------
# Input handling


def _pil_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image (any mode) -> uint8 (3, H, W); TypeError naming the type for anything else."""
    if not (hasattr(image, "convert") and hasattr(image, "getbands")):
        raise TypeError(f"EvalTransform: expected a PIL image or a torch.Tensor, got {type(image).__name__}")
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image.convert("RGB"))


def _as_float_images(images: torch.Tensor, where: str) -> torch.Tensor:
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


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (parameters are drawn on the CPU), "
            f"got one on {generator.device}"
        )


# --------------------------------------------------------------------------------------------------
# Random parameters


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


# --------------------------------------------------------------------------------------------------
# Host -> device transfers without a host sync


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU tensor to ``device``: from pinned memory with ``non_blocking=True`` on CUDA (the
    caching host allocator keeps the pinned block alive until the copy is done), unchanged on the CPU."""
    if device.type == "cpu":
        return t
    if device.type == "cuda" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


_CONSTANTS: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}


def _constant(key: str, make: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``make()`` (a CPU tensor) cast to ``dtype`` on the CPU and moved to ``device`` once; cached."""
    k = (key, dtype, device)
    t = _CONSTANTS.get(k)
    if t is None:
        t = _to_device(make().to(dtype), device)
        _CONSTANTS[k] = t
    return t


# --------------------------------------------------------------------------------------------------
# Colour ops on float (B, 3, h, w) in [0, 1]; per-sample factors of shape (B,)


def _luma_weights(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1, 1) luma weights in ``x``'s dtype on ``x``'s device (cached)."""
    return _constant("luma", lambda: torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1), x.dtype, x.device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 1, h, w) luma (a weighted channel sum: ~6x faster than unbinding channels)."""
    return (x * _luma_weights(x)).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` clamped to [0, 1]; factor (B,) broadcasts per sample."""
    return torch.lerp(other.expand_as(x), x, factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # Mean of the grayscale image = luma-weighted sum of the channel means.
    mean = (x.mean(dim=(2, 3), keepdim=True) * _luma_weights(x)).sum(dim=1, keepdim=True)
    return _blend(x, mean, f)


def _adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


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
    n = _constant("hsv_n", lambda: torch.tensor((5.0, 3.0, 1.0)).view(1, 3, 1, 1), hsv.dtype, hsv.device)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    v = v.unsqueeze(1)
    return v - v * s.unsqueeze(1) * ramp


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, (B,)) in HSV space; samples with ``apply`` False
    are returned untouched (not round-tripped)."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    rgb = _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)).clamp_(0.0, 1.0)
    return torch.where(apply.view(-1, 1, 1, 1), rgb, x)


# --------------------------------------------------------------------------------------------------
# The augmentation


class MultiViewAugment:
    """M augmented views of a batch of decoded images, as batched tensor ops on the images' device.

    ``aug(images, num_views, generator=None)`` with images uint8 (N, 3, H, W) (or float in [0, 1];
    1-channel images are repeated to 3) returns ``output_dtype`` (M, N, 3, s, s) normalised views,
    s = ``preset.crop_size``. With ``channels_last`` the flattened (M*N, 3, s, s) view is channels_last.
    Hue rotation is done in HSV (batched RGB <-> HSV, torchvision's adjust_hue semantics).
    """

    def __init__(
        self,
        preset: ViewPreset,
        *,
        output_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(preset, ViewPreset):
            raise TypeError(f"MultiViewAugment: preset must be a ViewPreset, got {type(preset).__name__}")
        if not output_dtype.is_floating_point:
            raise ValueError(f"MultiViewAugment: output_dtype must be a float dtype, got {output_dtype}")
        self.preset = preset
        self.output_dtype = output_dtype
        self.channels_last = channels_last

    def __repr__(self) -> str:
        return (
            f"MultiViewAugment({self.preset!r}, output_dtype={self.output_dtype}, "
            f"channels_last={self.channels_last})"
        )

    def sample_params(
        self,
        batch_size: int,
        num_views: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
    ) -> ViewParams:
        """Draw every random parameter of ``num_views`` x ``batch_size`` views on the CPU."""
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"MultiViewAugment: num_views must be an int >= 1, got {num_views!r}")
        _check_generator(generator)
        p = self.preset
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

    def _crop_flip(self, x: torch.Tensor, prm: ViewParams, theta: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) -> (M*N, 3, s, s): one grid_sample over all (view, image) pairs.

        ``theta`` is the (M*N, 2, 3) affine matrices of :func:`_theta`, already on ``x``'s device."""
        n = x.shape[0]
        m, s = prm.num_views, self.preset.crop_size
        grid = F.affine_grid(theta, [m * n, 3, s, s], align_corners=False)
        # Stack the M grids of each image along the grid's height: (N, M*s, s, 2).
        grid = grid.view(m, n, s, s, 2).transpose(0, 1).reshape(n, m * s, s, 2)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # (N, 3, M*s, s) -> (M, N, 3, s, s) -> (M*N, 3, s, s)
        return out.view(n, 3, m, s, s).permute(2, 0, 1, 3, 4).reshape(m * n, 3, s, s)

    def apply(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """Make the views described by ``params`` from images (N, 3, H, W) -> (M, N, 3, s, s)."""
        x = _as_float_images(images, "MultiViewAugment")
        if x.shape[0] != params.batch_size:
            raise ValueError(
                f"MultiViewAugment: params were drawn for batch size {params.batch_size}, "
                f"images have shape {tuple(images.shape)}"
            )
        return self._apply_float(x, params)

    def _apply_float(self, x: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """``apply`` on validated float (N, 3, H, W) images in [0, 1]."""
        p = self.preset
        pin = x.device.type == "cuda"
        packed = _to_device(_pack(params, x.shape[2], x.shape[3], x.dtype, pin), x.device)  # the one H2D copy
        dev_prm = _unpack(packed, params.num_views * params.batch_size)
        out = self._crop_flip(x, params, dev_prm["theta"])
        if p.jitter_p > 0:
            ops = {
                0: (p.brightness > 0, lambda t: _adjust_brightness(t, dev_prm["brightness"])),
                1: (p.contrast > 0, lambda t: _adjust_contrast(t, dev_prm["contrast"])),
                2: (p.saturation > 0, lambda t: _adjust_saturation(t, dev_prm["saturation"])),
                3: (p.hue > 0, lambda t: _adjust_hue(t, dev_prm["hue"], dev_prm["jitter"] > 0.5)),
            }
            for i in params.order:
                enabled, op = ops[i]
                if enabled:
                    out = op(out)
        if p.grayscale_p > 0:
            # The count of chosen samples is known on the CPU: no device read, only they are touched.
            idx = dev_prm["grayscale_idx"]
            if idx.numel():
                picked = out.index_select(0, idx)
                out = out.index_copy(0, idx, _gray(picked).expand_as(picked))
        if p.solarize_p > 0:
            mask = (dev_prm["solarize"] > 0.5).view(-1, 1, 1, 1) & (out >= 0.5)
            out = torch.where(mask, 1.0 - out, out)
        # Values are in [0, 1] here: the input is clamped, bilinear sampling, grayscale and solarize keep
        # that range and every jitter op clamps (as torchvision's do), so no extra pass is needed.
        out = _normalise(out, p, self.output_dtype, self.channels_last)
        m, n, s = params.num_views, params.batch_size, p.crop_size
        return out.view(m, n, 3, s, s)

    def __call__(
        self, images: torch.Tensor, num_views: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8/float (N, 3, H, W) -> (M, N, 3, s, s) normalised views; randomness from ``generator``."""
        x = _as_float_images(images, "MultiViewAugment")  # validate before drawing anything
        params = self.sample_params(x.shape[0], num_views, x.shape[2], x.shape[3], generator)
        return self._apply_float(x, params)


# Per-sample float32 rows of the packed parameter tensor, in order; then the grayscale indices.
_PACKED_ROWS = ("brightness", "contrast", "saturation", "hue", "jitter", "solarize")
_THETA = 6


def _pack(params: ViewParams, height: int, width: int, dtype: torch.dtype, pin: bool = False) -> torch.Tensor:
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


def _unpack(packed: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
    """Views into the device copy of :func:`_pack`'s tensor: theta (count, 2, 3), rows (count,),
    grayscale_idx int64 (K,)."""
    out = {"theta": packed[: count * _THETA].view(count, 2, 3)}
    at = count * _THETA
    for k in _PACKED_ROWS:
        out[k] = packed[at : at + count]
        at += count
    out["grayscale_idx"] = packed[at:].to(torch.int64)
    return out


def _normalise(
    x: torch.Tensor, preset: ViewPreset, dtype: torch.dtype, channels_last: bool = False
) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> (x - mean) / std cast to ``dtype`` (optionally channels_last)."""

    def scale_shift() -> torch.Tensor:  # (2, 1, 3, 1, 1) float64: 1/std, -mean/std
        mean = torch.tensor(preset.mean, dtype=torch.float64).view(1, 3, 1, 1)
        inv_std = 1.0 / torch.tensor(preset.std, dtype=torch.float64).view(1, 3, 1, 1)
        return torch.stack((inv_std, -mean * inv_std))

    key = f"normalise{preset.mean}{preset.std}"
    scale, shift = _constant(key, scale_shift, x.dtype, x.device).unbind(0)
    # (x - mean) / std as one fused x * (1/std) + (-mean/std).
    x = torch.addcmul(shift, x, scale)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype=dtype, memory_format=fmt)


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
        x = _as_float_images(images, "EvalTransform")
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
        return _normalise(x, p, self.output_dtype)


def eval_transform_from(transforms: Mapping[str, Any] | None) -> EvalTransform:
    """The EvalTransform a checkpoint's ``transforms`` record describes (eval_size, eval_resize, mean, std);
    what the record leaves out comes from its named ``preset`` (default cifar10)."""
    tf = dict(transforms or {})
    named = VIEW_PRESETS.get(tf.get("preset") or "cifar10", VIEW_PRESETS["cifar10"])
    size = int(tf.get("eval_size", named.eval_size))
    return EvalTransform(ViewPreset(crop_size=size, eval_size=size, eval_resize=tf.get("eval_resize"),
                                    mean=tuple(tf.get("mean", named.mean)), std=tuple(tf.get("std", named.std))))


def views_for_probe(
    images: torch.Tensor,
    preset: ViewPreset,
    num_views: int,
    generator: torch.Generator | None = None,
    *,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """1 clean + (num_views - 1) augmented views -> (num_views, N, 3, s, s), s = ``eval_size``.

    The paper's probe averages features over 16 views (1 clean + 15 augmented). The clean view is
    ``EvalTransform``; the augmented ones use the training augmentation with crops made at
    ``eval_size`` (so that STL-10 views match its 96 px evaluation size).
    """
    if not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"views_for_probe: num_views must be an int >= 1, got {num_views!r}")
    clean = EvalTransform(preset, output_dtype=output_dtype)(images).unsqueeze(0)
    if num_views == 1:
        return clean
    aug = MultiViewAugment(replace(preset, crop_size=preset.eval_size), output_dtype=output_dtype)
    return torch.cat((clean, aug(images, num_views - 1, generator)), dim=0)
