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

All randomness is drawn on the CPU from one ``torch.Generator`` (:mod:`.params`) and then moved to
the images' device, so the same seed gives the same views bit for bit whatever device runs the ops.

Host-device traffic per call on CUDA: every per-sample parameter (affine crops, jitter factors, masks,
grayscale indices) is packed into one float32 CPU tensor in pinned memory (:mod:`.packing`) and sent with a single
``non_blocking`` copy; constant tensors (luma weights, normalisation) are made once per (device, dtype)
and cached (:mod:`.ops`). No value is read back to the host, so the augmentation never blocks the CPU on the GPU.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from .eval_transform import EvalTransform
from .ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    as_float_images,
    gray,
    normalise,
    to_device,
)
from .packing import pack_params, unpack_params
from .params import ViewParams, sample_view_params
from .presets import ViewPreset


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
        return sample_view_params(self.preset, batch_size, num_views, height, width, generator)

    def _crop_flip(self, x: torch.Tensor, prm: ViewParams, theta: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) -> (M*N, 3, s, s): one grid_sample over all (view, image) pairs.

        ``theta`` is the (M*N, 2, 3) affine matrices of :func:`~.packing.pack_params`, already on ``x``'s device."""
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
        x = as_float_images(images, "MultiViewAugment")
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
        packed = to_device(pack_params(params, x.shape[2], x.shape[3], x.dtype, pin), x.device)  # the one H2D copy
        dev_prm = unpack_params(packed, params.num_views * params.batch_size)
        out = self._crop_flip(x, params, dev_prm["theta"])
        if p.jitter_p > 0:
            ops = {
                0: (p.brightness > 0, lambda t: adjust_brightness(t, dev_prm["brightness"])),
                1: (p.contrast > 0, lambda t: adjust_contrast(t, dev_prm["contrast"])),
                2: (p.saturation > 0, lambda t: adjust_saturation(t, dev_prm["saturation"])),
                3: (p.hue > 0, lambda t: adjust_hue(t, dev_prm["hue"], dev_prm["jitter"] > 0.5)),
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
                out = out.index_copy(0, idx, gray(picked).expand_as(picked))
        if p.solarize_p > 0:
            mask = (dev_prm["solarize"] > 0.5).view(-1, 1, 1, 1) & (out >= 0.5)
            out = torch.where(mask, 1.0 - out, out)
        # Values are in [0, 1] here: the input is clamped, bilinear sampling, grayscale and solarize keep
        # that range and every jitter op clamps (as torchvision's do), so no extra pass is needed.
        out = normalise(out, p, self.output_dtype, self.channels_last)
        m, n, s = params.num_views, params.batch_size, p.crop_size
        return out.view(m, n, 3, s, s)

    def __call__(
        self, images: torch.Tensor, num_views: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8/float (N, 3, H, W) -> (M, N, 3, s, s) normalised views; randomness from ``generator``."""
        x = as_float_images(images, "MultiViewAugment")  # validate before drawing anything
        params = self.sample_params(x.shape[0], num_views, x.shape[2], x.shape[3], generator)
        return self._apply_float(x, params)


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


__all__ = ["MultiViewAugment", "views_for_probe"]
