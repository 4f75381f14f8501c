"""Tests of mvssl_hub.views: presets, batched multi-view augmentation, evaluation transform."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from mvssl_hub.errors import UnknownModelError
from mvssl_hub.views import (
    VIEW_PRESETS,
    EvalTransform,
    MultiViewAugment,
    ViewPreset,
    get_view_preset,
    sample_crop_boxes,
    views_for_probe,
)

CIFAR = VIEW_PRESETS["cifar10"]
# A preset whose views are the (normalised) input itself: full-image crop, no flip, no colour ops.
PLAIN = replace(
    CIFAR, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, solarize_p=0.0
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uint8(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=_gen(seed))


def _normalise(x: torch.Tensor, preset: ViewPreset) -> torch.Tensor:
    mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
    std = torch.tensor(preset.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _denormalise(y: torch.Tensor, preset: ViewPreset) -> torch.Tensor:
    shape = (1,) * (y.dim() - 3) + (3, 1, 1)
    return y.float() * torch.tensor(preset.std).view(shape) + torch.tensor(preset.mean).view(shape)


# ----------------------------------------------------------------------------------------- presets


def test_presets_follow_method_table() -> None:
    c, s, i = VIEW_PRESETS["cifar10"], VIEW_PRESETS["stl10"], VIEW_PRESETS["imagenet100"]
    assert (c.crop_size, c.scale, c.hue, c.grayscale_p, c.solarize_p) == (32, (0.08, 1.0), 0.0, 0.2, 0.0)
    assert (c.eval_size, c.eval_resize) == (32, None)
    assert (s.crop_size, s.scale, s.hue, s.grayscale_p, s.eval_size) == (64, (0.2, 1.0), 0.0, 0.1, 96)
    assert (i.crop_size, i.scale, i.hue, i.grayscale_p, i.solarize_p) == (128, (0.08, 1.0), 0.1, 0.2, 0.2)
    assert (i.eval_resize, i.eval_size) == (146, 128)
    for p in (c, s, i):
        assert (p.flip_p, p.jitter_p, p.brightness, p.contrast, p.saturation) == (0.5, 0.8, 0.4, 0.4, 0.4)
        assert p.ratio == pytest.approx((3 / 4, 4 / 3))
    assert c.mean == (0.4914, 0.4822, 0.4465) and c.std == (0.2470, 0.2435, 0.2616)
    assert s.mean == i.mean == (0.485, 0.456, 0.406) and s.std == i.std == (0.229, 0.224, 0.225)
    d = json.loads(json.dumps(i.to_dict()))
    assert ViewPreset(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) == i


def test_get_view_preset_and_unknown_name() -> None:
    assert get_view_preset("stl10") is VIEW_PRESETS["stl10"]
    with pytest.raises(UnknownModelError, match="did you mean 'cifar10'"):
        get_view_preset("cifar-10")


def test_preset_validation() -> None:
    with pytest.raises(ValueError, match="scale"):
        ViewPreset(crop_size=32, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="flip_p"):
        ViewPreset(crop_size=32, flip_p=1.5)
    with pytest.raises(ValueError, match="crop_size"):
        ViewPreset(crop_size=0)


# ---------------------------------------------------------------------------------- shapes, dtypes


@pytest.mark.parametrize(("name", "size"), [("cifar10", 32), ("stl10", 96), ("imagenet100", 160)])
def test_shapes_dtypes_channels_last(name: str, size: int) -> None:
    preset = VIEW_PRESETS[name]
    x = _uint8(8, size)
    s = preset.crop_size
    y = MultiViewAugment(preset)(x, 3, _gen(0))
    assert y.shape == (3, 8, 3, s, s) and y.dtype == torch.float32 and y.is_contiguous()
    assert torch.isfinite(y).all()
    z = MultiViewAugment(preset, output_dtype=torch.bfloat16, channels_last=True)(x, 2, _gen(0))
    assert z.shape == (2, 8, 3, s, s) and z.dtype == torch.bfloat16
    assert z.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert not y.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_float_and_single_channel_inputs() -> None:
    x = _uint8(4, 32)
    a = MultiViewAugment(CIFAR)(x, 2, _gen(3))
    b = MultiViewAugment(CIFAR)(x.float() / 255, 2, _gen(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    gray = MultiViewAugment(PLAIN)(x[:, :1], 1, _gen(0))
    raw = _denormalise(gray[0], PLAIN)
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------- randomness


def test_seeded_views_are_reproducible_and_varied() -> None:
    aug = MultiViewAugment(CIFAR)
    x = _uint8(1, 32).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    a, b, c = aug(x, 4, _gen(7)), aug(x, 4, _gen(7)), aug(x, 4, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for n in range(6):  # the M views of one image differ from each other
        for m1 in range(4):
            for m2 in range(m1 + 1, 4):
                assert not torch.equal(a[m1, n], a[m2, n])
    # identical images in one batch get different views (per-sample parameters)
    assert not torch.equal(a[0, 0], a[0, 1])
    prm = aug.sample_params(6, 4, 32, 32, _gen(7))
    boxes = torch.stack((prm.top, prm.left, prm.box_height, prm.box_width), dim=1)
    assert len({tuple(r.tolist()) for r in boxes}) > 12


def test_generator_leaves_global_rng_alone_and_none_uses_it() -> None:
    aug, x = MultiViewAugment(VIEW_PRESETS["imagenet100"]), _uint8(2, 40)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    aug(x, 2, _gen(0))
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(5)
    a = aug(x, 2)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x, 2))


# ---------------------------------------------------------------------------------- correctness


def test_plain_preset_reproduces_normalised_input() -> None:
    x = _uint8(5, 32)
    y = MultiViewAugment(PLAIN)(x, 3, _gen(0))
    expected = _normalise(x.float() / 255, PLAIN)
    for m in range(3):
        torch.testing.assert_close(y[m], expected, atol=1e-5, rtol=0)


def test_flip_grayscale_solarize() -> None:
    x = _uint8(5, 32)
    xf = x.float() / 255
    flipped = MultiViewAugment(replace(PLAIN, flip_p=1.0))(x, 2, _gen(0))
    torch.testing.assert_close(flipped[1], _normalise(xf.flip(-1), PLAIN), atol=1e-5, rtol=0)

    gray = _denormalise(MultiViewAugment(replace(PLAIN, grayscale_p=1.0))(x, 2, _gen(0)), PLAIN)
    torch.testing.assert_close(gray[:, :, 0], gray[:, :, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(gray[:, :, 1], gray[:, :, 2], atol=1e-5, rtol=0)
    luma = 0.299 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2]
    torch.testing.assert_close(gray[0, :, 0], luma, atol=1e-5, rtol=0)

    sol = _denormalise(MultiViewAugment(replace(PLAIN, solarize_p=1.0))(x, 1, _gen(0))[0], PLAIN)
    torch.testing.assert_close(sol, torch.where(xf >= 0.5, 1 - xf, xf), atol=1e-5, rtol=0)


def test_brightness_scales_each_sample_within_range() -> None:
    b = 0.4
    preset = replace(PLAIN, jitter_p=1.0, brightness=b, contrast=0.0, saturation=0.0, hue=0.0)
    xf = 0.05 + 0.6 * torch.rand(16, 3, 32, 32, generator=_gen(1))  # max 0.65 * 1.4 < 1: no clipping
    y = _denormalise(MultiViewAugment(preset)(xf, 2, _gen(2)), preset)
    ratio = y / xf
    per_sample = ratio.flatten(2)
    spread = per_sample.max(dim=2).values - per_sample.min(dim=2).values
    assert spread.max() < 1e-4  # one factor per (view, image)
    factors = per_sample[..., 0]
    assert factors.min() >= 1 - b - 1e-5 and factors.max() <= 1 + b + 1e-5
    assert factors.std() > 0.1  # factors vary across samples


@pytest.mark.parametrize("op", ["contrast", "saturation", "hue"])
def test_colour_ops_match_torchvision(op: str) -> None:
    """Each jitter op alone, with the drawn per-sample factor, equals torchvision's functional op."""
    strengths = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    strengths[op] = 0.4 if op != "hue" else 0.3
    preset = replace(PLAIN, jitter_p=1.0, **strengths)
    aug = MultiViewAugment(preset)
    x = _uint8(6, 32, seed=4)
    prm = aug.sample_params(6, 2, 32, 32, _gen(9))
    y = _denormalise(aug.apply(x, prm), preset).flatten(0, 1)
    xf = (x.float() / 255).repeat(2, 1, 1, 1)  # view-major like the parameters
    fn = {"contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}[op]
    factors = getattr(prm, op)
    for i in range(xf.shape[0]):
        ref = fn(xf[i], float(factors[i]))
        # 1e-4: torchvision's luma uses 0.2989 for red where we use BT.601's 0.299
        torch.testing.assert_close(y[i], ref, atol=1e-4, rtol=0)
    assert factors.abs().max() > 0.05 if op == "hue" else (factors - 1).abs().max() > 0.05


def test_jitter_probability_and_factor_ranges() -> None:
    aug = MultiViewAugment(VIEW_PRESETS["imagenet100"])
    prm = aug.sample_params(2000, 4, 64, 64, _gen(0))
    assert abs(prm.jitter.float().mean().item() - 0.8) < 0.02
    assert abs(prm.flip.float().mean().item() - 0.5) < 0.02
    assert abs(prm.grayscale.float().mean().item() - 0.2) < 0.02
    assert abs(prm.solarize.float().mean().item() - 0.2) < 0.02
    off = ~prm.jitter
    assert (prm.brightness[off] == 1).all() and (prm.hue[off] == 0).all()
    on = prm.jitter
    assert prm.brightness[on].min() >= 0.6 and prm.brightness[on].max() <= 1.4
    assert prm.hue[on].abs().max() <= 0.1 and prm.hue[on].abs().max() > 0.09
    assert sorted(prm.order) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ crops


def test_crop_boxes_follow_random_resized_crop() -> None:
    h, w = 48, 64
    top, left, bh, bw = sample_crop_boxes(5000, h, w, (0.08, 1.0), (3 / 4, 4 / 3), _gen(0))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= h).all() and (left + bw <= w).all()
    assert torch.equal(top, top.round()) and torch.equal(bw, bw.round())
    area = bh * bw / (h * w)
    assert area.min() >= 0.06 and area.max() <= 1.0  # 0.08 minus pixel rounding
    ratio = bw / bh
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4
    assert area.std() > 0.15 and top.std() > 3 and left.std() > 3
    # No box of ratio 2 and full area fits a square: centred fallback box of ratio clamped into range.
    top, left, bh, bw = sample_crop_boxes(4, 40, 40, (1.0, 1.0), (2.0, 2.0), _gen(0))
    assert bw.tolist() == [40] * 4 and bh.tolist() == [20] * 4 and top.tolist() == [10] * 4
    assert left.tolist() == [0] * 4


def test_crop_geometry_on_a_ramp_image() -> None:
    """Bilinear sampling of a linear ramp is exact, so each output pixel must equal the ramp at the
    point its box maps it to (border clamp at the image edge), flip included."""
    preset = replace(PLAIN, scale=(0.1, 0.6), ratio=(0.5, 2.0), flip_p=0.5, crop_size=16)
    h, w = 40, 56
    ys = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    img = torch.stack((xs / (w - 1), ys / (h - 1), 0.5 * torch.ones(h, w))).unsqueeze(0).repeat(3, 1, 1, 1)
    aug = MultiViewAugment(preset)
    prm = aug.sample_params(3, 5, h, w, _gen(1))
    y = _denormalise(aug.apply(img, prm), preset).flatten(0, 1)
    k = torch.arange(16, dtype=torch.float64) + 0.5
    for i in range(15):
        px = prm.left[i] + prm.box_width[i] * k / 16 - 0.5
        if prm.flip[i]:
            px = prm.left[i] + prm.box_width[i] * (16 - k) / 16 - 0.5
        py = prm.top[i] + prm.box_height[i] * k / 16 - 0.5
        exp_x = (px.clamp(0, w - 1) / (w - 1)).float()
        exp_y = (py.clamp(0, h - 1) / (h - 1)).float()
        torch.testing.assert_close(y[i, 0], exp_x.view(1, 16).expand(16, 16), atol=1e-5, rtol=0)
        torch.testing.assert_close(y[i, 1], exp_y.view(16, 1).expand(16, 16), atol=1e-5, rtol=0)
    assert prm.flip.any() and not prm.flip.all()


def test_quarter_crops_of_a_half_black_half_white_image() -> None:
    preset = replace(PLAIN, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    x = torch.zeros(4, 3, 64, 64)
    x[..., 32:] = 1.0
    aug = MultiViewAugment(preset)
    prm = aug.sample_params(4, 8, 64, 64, _gen(0))
    assert (prm.box_height == 32).all() and (prm.box_width == 32).all()
    y = _denormalise(aug.apply(x, prm), preset)
    means = y.mean(dim=(2, 3, 4))  # (M, N)
    assert means.min() >= -1e-5 and means.max() <= 1 + 1e-5
    assert len({round(v, 4) for v in means.flatten().tolist()}) > 5
    # the mean is the fraction of the box to the right of the midline
    frac = ((prm.left + 32 - 32).clamp(0, 32) / 32).view(8, 4)
    torch.testing.assert_close(means, frac.float(), atol=0.03, rtol=0)


# ------------------------------------------------------------------------------------------- eval


def test_eval_transform_sizes() -> None:
    stl = VIEW_PRESETS["stl10"]
    x96 = _uint8(3, 96)
    y = EvalTransform(stl)(x96)
    assert y.shape == (3, 3, 96, 96)
    torch.testing.assert_close(y, _normalise(x96.float() / 255, stl), atol=1e-5, rtol=0)
    up = EvalTransform(stl)(_uint8(3, 64))
    assert up.shape == (3, 3, 96, 96)

    inet = VIEW_PRESETS["imagenet100"]
    x = torch.randint(0, 256, (2, 3, 200, 300), dtype=torch.uint8, generator=_gen(1))
    y = EvalTransform(inet, output_dtype=torch.bfloat16)(x)
    assert y.shape == (2, 3, 128, 128) and y.dtype == torch.bfloat16
    ref = F.interpolate(x.float() / 255, size=(146, 219), mode="bilinear", antialias=True)
    ref = TF.center_crop(ref, [128, 128])
    torch.testing.assert_close(_denormalise(y, inet), ref, atol=1e-2, rtol=0)  # bf16 precision
    y32 = EvalTransform(inet)(x[:, :, :, :200])  # square 200 -> 146 -> 128
    ref = TF.center_crop(F.interpolate(x[:, :, :, :200].float() / 255, size=(146, 146),
                                       mode="bilinear", antialias=True), [128, 128])
    torch.testing.assert_close(_denormalise(y32, inet), ref, atol=1e-5, rtol=0)


def test_views_for_probe() -> None:
    stl = VIEW_PRESETS["stl10"]
    x = _uint8(2, 96)
    v = views_for_probe(x, stl, 16, _gen(0))
    assert v.shape == (16, 2, 3, 96, 96)
    torch.testing.assert_close(v[0], EvalTransform(stl)(x))
    assert not torch.equal(v[1], v[2])


# ----------------------------------------------------------------------------------------- errors


def test_clear_errors_for_bad_inputs() -> None:
    aug = MultiViewAugment(CIFAR)
    with pytest.raises(ValueError, match=r"4-D.*\(3, 32, 32\)"):
        aug(torch.zeros(3, 32, 32, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 32, 32, 3\)"):
        aug(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="num_views.*0"):
        aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 0)
    with pytest.raises(TypeError, match="int64"):
        aug(torch.zeros(2, 3, 32, 32, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"4-D.*\(32, 32\)"):
        EvalTransform(CIFAR)(torch.zeros(32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch size 3"):
        aug.apply(torch.zeros(2, 3, 32, 32), aug.sample_params(3, 2, 32, 32))


# ------------------------------------------------------------------------------------------ speed


def test_speed_256_cifar_images_4_views_under_half_a_second() -> None:
    """~50x slack over the ~10-30 ms this costs on 2 idle cores. The machine is shared: when other
    processes oversubscribe the cores, OpenMP barriers can cost 10x, so a slow round (median of 3) is
    re-measured up to twice; a genuinely slow implementation fails every round."""
    aug = MultiViewAugment(CIFAR)
    x = _uint8(256, 32)
    aug(x, 4, _gen(0))  # warm-up
    medians = []
    for _ in range(3):
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            aug(x, 4, _gen(i))
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
        if medians[-1] < 0.5:
            break
    assert medians[-1] < 0.5, f"median of 3 per round: {medians} s (load average {os.getloadavg()})"


# ----------------------------------------------------------------------------------------- host syncs


def _all_ops_preset() -> ViewPreset:
    return replace(VIEW_PRESETS["imagenet100"], crop_size=16, hue=0.3, grayscale_p=0.5, solarize_p=0.5)


def test_apply_reads_no_tensor_value_on_the_host(forbid_host_reads) -> None:
    """Every op of the augmentation (crop, flip, all jitter ops, grayscale, solarize, normalise) runs
    without reading a tensor back: on CUDA that means no host sync inside ``apply``."""
    aug = MultiViewAugment(_all_ops_preset(), output_dtype=torch.bfloat16, channels_last=True)
    x = _uint8(6, 24)
    params = aug.sample_params(6, 3, 24, 24, _gen(3))  # drawn on the CPU; host reads allowed here
    assert params.grayscale.any() and params.solarize.any() and params.jitter.any()
    expected = aug.apply(x, params)
    with forbid_host_reads():
        got = aug.apply(x, params)
    assert torch.equal(got, expected)
    with forbid_host_reads(), pytest.raises(AssertionError, match="host read"):
        bool(torch.ones(()))  # the guard is live


def test_one_host_to_device_transfer_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """All per-sample parameters travel in one packed tensor; constants are cached per (device, dtype);
    no other ``Tensor.to(device)`` happens inside the augmentation."""
    from mvssl_hub.views import augment as augment_mod
    from mvssl_hub.views import ops as ops_mod

    aug = MultiViewAugment(_all_ops_preset())
    x = _uint8(4, 24)
    moves: list[tuple[int, ...]] = []
    real_move, real_to = ops_mod.to_device, torch.Tensor.to

    def counting_move(t: torch.Tensor, device: torch.device) -> torch.Tensor:
        moves.append(tuple(t.shape))
        return real_move(t, device)

    def no_device_to(self: torch.Tensor, *args, **kwargs):
        if "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args):
            raise AssertionError(f"Tensor.to with a device inside the augmentation: {args} {kwargs}")
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(ops_mod, "to_device", counting_move)  # the cached constants' moves
    monkeypatch.setattr(augment_mod, "to_device", counting_move)  # the packed parameters' move
    ops_mod._CONSTANTS.clear()
    aug(x, 2, _gen(0))  # first call also makes the cached constants
    assert len(moves) > 1
    moves.clear()
    params = aug.sample_params(4, 2, 24, 24, _gen(1))
    monkeypatch.setattr(torch.Tensor, "to", no_device_to)
    aug.apply(x, params)
    k = int(params.grayscale.sum())
    assert moves == [(4 * 2 * (6 + 6) + k,)]  # theta (6) + 6 rows per view, then the grayscale indices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_match_cpu_and_never_sync() -> None:
    aug = MultiViewAugment(_all_ops_preset())
    x = _uint8(8, 24)
    cpu = aug(x, 3, _gen(4))
    xc = x.cuda()
    aug(xc, 3, _gen(4))  # warm-up: cached constants are made here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = aug(xc, 3, _gen(4))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)


def test_eval_transform_takes_pil_chw_and_nchw_as_torchvision_presets_do() -> None:
    from PIL import Image

    tf = EvalTransform(CIFAR)
    batch = torch.randint(0, 256, (2, 3, 40, 36), dtype=torch.uint8, generator=_gen(3))
    expected = tf(batch)
    assert expected.shape == (2, 3, 32, 32)
    assert torch.equal(tf(batch[0]), expected[0])  # (3, H, W) -> (3, s, s)
    assert torch.allclose(tf(batch[0].float() / 255), expected[0], atol=1e-6)
    pil = Image.fromarray(batch[0].permute(1, 2, 0).numpy())
    assert torch.equal(tf(pil), expected[0])
    gray = tf(Image.fromarray(batch[0, 0].numpy(), mode="L"))  # any PIL mode, as RGB
    assert torch.equal(gray, tf(batch[0, :1].expand(3, -1, -1).contiguous()))
    with pytest.raises(TypeError, match="expected a PIL image or a torch.Tensor, got list"):
        tf([[0]])
