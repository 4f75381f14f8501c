"""Narrow networks train correctly on every CPU kind: the memory format avoids oneDNN's channels_last fault.

oneDNN's fp32 channels_last backward of a strided 1x1 convolution with few input channels returns wrong weight
gradients or never returns (AVX2 EPYC: 1-7 channels at 8-32 px), or kills the process (AVX512-BF16 EPYC: 1-15
channels at 48-96 px); torch 2.14.1. Each case runs in a child process under a timeout, so that a hang or a crash
fails that case, not the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import mvssl_hub
from mvssl_hub.train.backends import CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS, channels_last_hazards, use_channels_last

# One forward + backward of ResNet-18 at the given width / stem / size in the format the library chooses,
# against a float64 contiguous copy of the same network: the worst relative gradient error of any conv weight.
_CHILD = textwrap.dedent("""
    import copy, json, sys, warnings
    import torch
    import mvssl_hub
    from mvssl_hub.train.backends import use_channels_last

    width, small, size = int(sys.argv[1]), sys.argv[2] == "small", int(sys.argv[3])
    torch.manual_seed(0)
    model = mvssl_hub.build_backbone("resnet18", small_images=small, width=width)
    model.eval()  # BatchNorm as a fixed affine map: in training mode it makes some weight gradients exactly 0
    reference = copy.deepcopy(model).double()
    x = torch.randn(8, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        channels_last = use_channels_last(model, "cpu")
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    target = torch.randn(8, model.config.feature_dim, generator=torch.Generator().manual_seed(1))
    (model(x) * target).sum().backward()
    (reference(x.double().contiguous()) * target.double()).sum().backward()
    worst = max((((p.grad.double() - q.grad).norm() / q.grad.norm().clamp_min(1e-12)).item(), name)
                for (name, p), q in zip(model.named_parameters(), reference.parameters()) if p.dim() == 4)
    print(json.dumps({"channels_last": channels_last, "error": worst[0], "layer": worst[1]}))
""")


@pytest.mark.parametrize("width", [1, 4, 8, 16])
@pytest.mark.parametrize(("stem", "size"), [("small", 8), ("small", 32), ("small", 48), ("standard", 32)])
def test_narrow_resnets_train_with_exact_gradients(width: int, stem: str, size: int) -> None:
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(width), stem, str(size)], capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"width {width}, {stem} stem, {size} px: forward + backward hung for 120 s")
    assert done.returncode == 0, f"width {width}, {stem} stem, {size} px crashed ({done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["channels_last"] == (width >= CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS)
    assert result["error"] < 1e-3, f"gradient of {result['layer']} off by {result['error']:.2e} (relative)"


def test_hazards_name_the_strided_1x1_convolutions_of_narrow_networks() -> None:
    narrow = mvssl_hub.build_backbone("resnet18", width=4)
    # the downsample convolutions of layer2/3/4 take 4, 8, 16 inputs
    assert channels_last_hazards(narrow, "cpu") == ["layer2.0.downsample.0", "layer3.0.downsample.0"]
    assert channels_last_hazards(mvssl_hub.build_backbone("resnet18", width=8), "cpu") == ["layer2.0.downsample.0"]
    assert channels_last_hazards(mvssl_hub.build_backbone("resnet18", width=16), "cpu") == []
    assert channels_last_hazards(narrow, "cuda") == []
    with pytest.warns(UserWarning, match=r"layer2\.0\.downsample\.0"):
        assert use_channels_last(narrow, "cpu") is False
    assert use_channels_last(narrow, "cpu", requested=False) is False
    assert use_channels_last(mvssl_hub.build_backbone("resnet18", width=16), "cpu") is True
    grouped = torch.nn.Conv2d(16, 16, 1, stride=2, groups=4)  # 4 input channels per group
    assert channels_last_hazards(torch.nn.Sequential(grouped), "cpu") == ["0"]
