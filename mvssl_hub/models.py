"""SSL model = backbone + projector: what pretraining trains (the zoo's builders return backbones)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import ResNetBackbone, build_backbone
from .projector import Projector, projector_spec


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


class Classifier(nn.Module):
    """Backbone + linear head (a fine-tuned model): images (N, 3, H, W) -> logits (N, num_classes)."""

    def __init__(self, backbone: ResNetBackbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


__all__ = ["Classifier", "SSLModel", "build_ssl_model"]
