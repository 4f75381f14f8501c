"""Backbones, projector, SSL model and registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

import mvssl_hub
from mvssl_hub import (
    BackboneConfig,
    Projector,
    SSLModel,
    UnknownModelError,
    build_backbone,
    build_ssl_model,
    get_model,
    list_models,
    register_model,
    torchvision_compatible,
)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_full_width_backbone_loads_strictly_into_plain_torchvision(arch: str) -> None:
    ours = build_backbone(arch, small_images=True)
    plain = getattr(torchvision.models, arch)(weights=None)
    plain.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    plain.maxpool = torch.nn.Identity()
    plain.fc = torch.nn.Identity()
    plain.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    ours.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x), rtol=0, atol=0)


def test_standard_stem_keys_and_shapes_match_torchvision() -> None:
    ours = build_backbone("resnet18", small_images=False)
    plain = torchvision.models.resnet18(weights=None)
    plain.fc = torch.nn.Identity()
    theirs = plain.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    assert isinstance(ours.maxpool, torch.nn.MaxPool2d) and ours.conv1.stride == (2, 2)


def test_torchvision_compatible_helper_matches() -> None:
    torchvision_compatible("resnet18").load_state_dict(build_backbone("resnet18").state_dict(), strict=True)


@pytest.mark.parametrize(("arch", "width", "dim"), [("resnet18", 16, 128), ("resnet18", 32, 256), ("resnet50", 16, 512)])
def test_width_multiplier_keeps_key_names(arch: str, width: int, dim: int) -> None:
    narrow, full = build_backbone(arch, width=width), build_backbone(arch)
    assert narrow.feature_dim == dim == BackboneConfig(arch, True, width).feature_dim
    assert list(narrow.state_dict()) == list(full.state_dict())
    assert narrow(torch.randn(3, 3, 32, 32)).shape == (3, dim)
    narrow_params = sum(p.numel() for p in narrow.parameters())
    full_params = sum(p.numel() for p in full.parameters())
    assert narrow_params < full_params / (64 // width) ** 2 * 1.1  # parameters scale with width squared


def test_small_stem_keeps_resolution_before_layer1() -> None:
    small, std = build_backbone("resnet18", width=8), build_backbone("resnet18", width=8, small_images=False)
    x = torch.randn(1, 3, 32, 32)
    stem = lambda m: m.maxpool(m.relu(m.bn1(m.conv1(x))))  # noqa: E731
    assert stem(small).shape[-1] == 32 and stem(std).shape[-1] == 8


def test_bad_backbone_arguments() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'resnet18'"):
        build_backbone("resnet81")
    with pytest.raises(ValueError, match="width must be a positive int, got 0"):
        build_backbone("resnet18", width=0)
    with pytest.raises(TypeError, match="small_images must be a bool"):
        build_backbone("resnet18", small_images="yes")  # type: ignore[arg-type]


def test_projector_layout_from_spec() -> None:
    proj = Projector("128-64-32")
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert proj[0].bias is None and proj[3].bias is None
    assert (proj.in_dim, proj.out_dim) == (128, 32)
    assert proj(torch.randn(4, 128)).shape == (4, 32)
    assert len(Projector("128-64-64-32")) == 7
    assert mvssl_hub.projector_spec(512, 256) == "512-256-256"
    assert mvssl_hub.projector_spec(512, 256, hidden=1024, layers=3) == "512-1024-1024-256"


@pytest.mark.parametrize("spec", ["", "128", "128-x-3", "128-0-3", "a-b"])
def test_bad_projector_spec_is_named(spec: str) -> None:
    with pytest.raises(ValueError, match=f"got {spec!r}"):
        Projector(spec)


def test_ssl_model_runs_all_views_as_one_batch() -> None:
    model = build_ssl_model("resnet18", width=8, proj_dim=16)
    calls: list[tuple[int, ...]] = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    views = torch.randn(4, 3, 3, 32, 32)
    out = model(views)
    assert out.shape == (4, 3, 16)
    assert calls == [(12, 3, 32, 32)]
    # view v of image n is row v*N + n of the flat batch: same result as running that view alone in eval mode
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(views)[2], model.projector(model.backbone(views[2])))


def test_ssl_model_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"projector input dim 100 .* != backbone feature dim 64"):
        SSLModel(build_backbone("resnet18", width=8), Projector("100-16-16"))
    with pytest.raises(ValueError, match=r"\(M, N, C, H, W\), got \(3, 3, 32, 32\)"):
        build_ssl_model("resnet18", width=8, proj_dim=8)(torch.randn(3, 3, 32, 32))


def test_registry_lists_filters_and_builds() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"barlowtwins_resnet18", "vicreg_resnet50"} <= set(names)
    assert list_models(include="*resnet18") == ["barlowtwins_resnet18", "vicreg_resnet18"]
    assert list_models(include="vicreg*", exclude=["*50"]) == ["vicreg_resnet18", "vicreg_resnet18_w16"]
    model = get_model("vicreg_resnet18", width=8)
    assert model.feature_dim == 64 and model.config.arch == "resnet18"


def test_registry_rejects_duplicates_and_suggests_close_names() -> None:
    with pytest.raises(ValueError, match="'barlowtwins_resnet18' is already registered"):
        register_model("barlowtwins_resnet18")(lambda: None)
    with pytest.raises(UnknownModelError, match="did you mean 'barlowtwins_resnet18'") as err:
        get_model("barlowtwin_resnet18")
    assert isinstance(err.value, KeyError)


def test_import_pulls_in_neither_accelerate_nor_datasets_nor_timm() -> None:
    code = ("import sys, mvssl_hub; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('accelerate', 'datasets', 'timm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_resnet10_keeps_torchvision_key_names() -> None:
    backbone = build_backbone("resnet10", small_images=True)
    torchvision_compatible("resnet10", small_images=True).load_state_dict(backbone.state_dict(), strict=True)
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert sum(name.startswith("layer1.") and name.endswith("conv1.weight") for name in backbone.state_dict()) == 1
