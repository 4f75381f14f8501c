"""SSL model = backbone + projector, and the registered builders users call by name."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .backbones import BackboneConfig, ResNetBackbone, build_backbone
from .projector import Projector, projector_spec
from .registry import register_model

METHODS = ("barlowtwins", "vicreg")


class SSLModel(nn.Module):
    """Backbone + projector. All M views run through the network as one batch of M*N images.

    forward: views (M, N, 3, H, W) -> embeddings (M, N, d).
    """

    def __init__(self, backbone: ResNetBackbone, projector: Projector) -> None:
        super().__init__()
        if projector.in_dim != backbone.feature_dim:
            raise ValueError(
                f"projector input dim {projector.in_dim} (spec {projector.spec!r}) != backbone feature dim "
                f"{backbone.feature_dim} ({backbone.config.arch}, width {backbone.config.width})"
            )
        self.backbone = backbone
        self.projector = projector

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if views.ndim != 5:
            raise ValueError(f"expected views of shape (M, N, C, H, W), got {tuple(views.shape)}")
        m, n = views.shape[:2]
        flat = views.flatten(0, 1)  # one batch: BatchNorm sees all views, one kernel launch per layer
        return self.projector(self.backbone(flat)).view(m, n, -1)


def build_ssl_model(
    arch: str = "resnet18", *, small_images: bool = True, width: int = 64, proj_dim: int = 256,
    proj_hidden: int | None = None, proj_layers: int = 2, projector: str | None = None,
) -> SSLModel:
    """An SSL model; ``projector`` (a spec string) overrides ``proj_dim/proj_hidden/proj_layers``."""
    backbone = build_backbone(arch, small_images=small_images, width=width)
    spec = projector or projector_spec(backbone.feature_dim, proj_dim, proj_hidden, proj_layers)
    return SSLModel(backbone, Projector(spec))


def _backbone_builder(method: str, arch: str, weights: Any, kwargs: dict[str, Any]) -> ResNetBackbone:
    if weights is None:
        return build_backbone(arch, **kwargs)
    from .weights import load_published_backbone  # the Hub client only when weights are asked for

    return load_published_backbone(f"{method}_{arch}", weights, **kwargs)


@register_model()
def barlowtwins_resnet18(*, weights: Any = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 backbone (N, 3, H, W) -> (N, 512 * width / 64) pretrained with multi-view Barlow Twins.

    Keyword args: ``weights`` (None, "DEFAULT", an enum member or "Enum.MEMBER"), ``small_images``
    (3x3 stride-1 stem, no max-pool; default True), ``width`` (first-stage channels; default 64).
    """
    return _backbone_builder("barlowtwins", "resnet18", weights, kwargs)


@register_model()
def barlowtwins_resnet50(*, weights: Any = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-50 backbone (N, 3, H, W) -> (N, 2048 * width / 64) pretrained with multi-view Barlow Twins."""
    return _backbone_builder("barlowtwins", "resnet50", weights, kwargs)


@register_model()
def vicreg_resnet18(*, weights: Any = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-18 backbone (N, 3, H, W) -> (N, 512 * width / 64) pretrained with multi-view VICReg."""
    return _backbone_builder("vicreg", "resnet18", weights, kwargs)


@register_model()
def vicreg_resnet50(*, weights: Any = None, **kwargs: Any) -> ResNetBackbone:
    """ResNet-50 backbone (N, 3, H, W) -> (N, 2048 * width / 64) pretrained with multi-view VICReg."""
    return _backbone_builder("vicreg", "resnet50", weights, kwargs)


__all__ = [
    "METHODS", "SSLModel", "BackboneConfig", "build_ssl_model",
    "barlowtwins_resnet18", "barlowtwins_resnet50", "vicreg_resnet18", "vicreg_resnet50",
]
