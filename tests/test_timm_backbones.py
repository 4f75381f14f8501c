"""timm backbones in the core: "timm:<name>" + kwargs, timm's key names, pooled pre-logits, and each bad input
(unknown name, missing timm, a refused kwarg) as one clear error."""

from __future__ import annotations

import builtins
import sys

import pytest
import torch

from mvssl_hub import build_backbone, build_ssl_model, recommended_beta
from mvssl_hub.errors import ConfigError, UnknownModelError
from mvssl_hub.losses import build_loss
from mvssl_hub.timm_backbone import TimmBackbone, parse_timm_kwargs

timm = pytest.importorskip("timm")

VIT = "timm:vit_tiny_patch16_224"
VIT_KW = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2}
CONVNEXT = "timm:convnext_atto"
CONVNEXT_KW = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}


@pytest.mark.parametrize("arch, kwargs, dim", [(VIT, VIT_KW, 24), (CONVNEXT, CONVNEXT_KW, 32)])
def test_features_are_timms_pooled_pre_logits_with_timms_key_names(arch, kwargs, dim) -> None:
    torch.manual_seed(0)
    ours = build_backbone(arch, arch_kwargs=kwargs).eval()
    plain = timm.create_model(arch[5:], pretrained=False, num_classes=0, **kwargs).eval()
    assert isinstance(ours, TimmBackbone) and ours.feature_dim == dim == plain.num_features
    assert list(ours.state_dict()) == list(plain.state_dict())  # no wrapper prefix
    plain.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    assert ours(x).shape == (3, dim)
    torch.testing.assert_close(ours(x), plain.forward_head(plain.forward_features(x), pre_logits=True), atol=0, rtol=0)
    assert ours.config.to_dict() == {"arch": arch, "kwargs": kwargs, "timm_version": timm.__version__}


def test_ssl_model_trains_a_step_with_the_unchanged_loss_and_beta() -> None:
    torch.manual_seed(0)
    model = build_ssl_model(VIT, arch_kwargs=VIT_KW, proj_dim=16)
    assert model.projector.spec == "24-16-16"
    loss_fn = build_loss("barlowtwins", recommended_beta("barlowtwins", 16, 4))
    loss = loss_fn(model(torch.randn(4, 8, 3, 32, 32)))
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.model.patch_embed.proj.weight.grad is not None
    again = build_ssl_model(VIT, arch_kwargs=VIT_KW, proj_dim=16)
    again.load_state_dict(model.state_dict(), strict=True)  # run states and the export round-trip


def test_unknown_timm_name_gives_the_closest_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown timm model 'vit_tiny_patch16_24'; closest: .*vit_tiny_patch16_224"):
        build_backbone("timm:vit_tiny_patch16_24")


def test_missing_timm_gives_the_install_line(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "timm")
    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ImportError, match=r'pip install "mvssl-hub\[timm\]"'):
        build_backbone(VIT, arch_kwargs=VIT_KW)


def test_a_kwarg_timm_rejects_is_named() -> None:
    with pytest.raises(ConfigError, match=r"does not take the keyword argument 'patch_sise'"):
        build_backbone(VIT, arch_kwargs={**VIT_KW, "patch_sise": 4})
    with pytest.raises(ConfigError, match=r"refuses keyword argument\(s\) depth='two'"):
        build_backbone(VIT, arch_kwargs={**VIT_KW, "depth": "two"})
    with pytest.raises(ConfigError, match=r"'num_classes' is set by mvssl-hub"):
        build_backbone(VIT, arch_kwargs={"num_classes": 10})
    with pytest.raises(ConfigError, match=r"\[.depth.\]: 10000000 is past the bound 65536"):
        build_backbone(VIT, arch_kwargs={**VIT_KW, "depth": 10_000_000})
    with pytest.raises(ConfigError, match=r"not valid JSON"):
        parse_timm_kwargs("{img_size: 32}")
    with pytest.raises(ValueError, match=r"width apply to the ResNets"):
        build_backbone(VIT, width=8)
    with pytest.raises(ValueError, match=r"are for 'timm:<name>' architectures"):
        build_backbone("resnet18", arch_kwargs={"img_size": 32})
