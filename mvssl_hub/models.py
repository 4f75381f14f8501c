"""SSL model = backbone + projector: what pretraining trains (the zoo's builders return backbones)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .backbones import ResNetBackbone, build_backbone
from .projector import Projector, projector_spec
from .timm_backbone import TimmBackbone
from .views import EvalTransform

Backbone = ResNetBackbone | TimmBackbone  # (N, 3, H, W) -> (N, feature_dim); ``.config``, ``.feature_dim``


class SSLModel(nn.Module):
    """Backbone + projector. All M views run through the network as one batch of M*N images.

    forward: views (M, N, 3, H, W) -> embeddings (M, N, d).
    """

    def __init__(self, backbone: Backbone, projector: Projector) -> None:
        super().__init__()
        if projector.in_dim != backbone.feature_dim:
            raise ValueError(
                f"projector input dim {projector.in_dim} (spec {projector.spec!r}) != backbone feature dim "
                f"{backbone.feature_dim} ({backbone.config.to_dict()})"
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
    arch: str = "resnet18", *, small_images: bool | None = None, width: int | None = None, proj_dim: int = 256,
    proj_hidden: int | None = None, proj_layers: int = 2, projector: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> SSLModel:
    """An SSL model; ``projector`` (a spec string) overrides ``proj_dim/proj_hidden/proj_layers``.

    ``arch`` is a ResNet (``small_images`` default True, ``width`` default 64) or ``"timm:<name>"`` with timm
    keyword arguments ``arch_kwargs`` (e.g. ``"timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}``).
    """
    backbone = build_backbone(arch, small_images=small_images, width=width, arch_kwargs=arch_kwargs)
    spec = projector or projector_spec(backbone.feature_dim, proj_dim, proj_hidden, proj_layers)
    return SSLModel(backbone, Projector(spec))


class Classifier(nn.Module):
    """Backbone + linear head (a fine-tuned model): images (N, 3, H, W) -> logits (N, num_classes).

    ``class_names`` (a list of num_classes names, or None) and ``transforms`` (the evaluation transform, or
    None) travel with a saved classifier, so that ``predict`` maps raw images to names.
    """

    def __init__(self, backbone: Backbone, num_classes: int, class_names: list[str] | None = None,
                 transforms: EvalTransform | None = None) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"Classifier: {len(class_names)} class names for {num_classes} classes")
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.transforms = transforms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.inference_mode()
    def predict(self, images: Any) -> str | list[str]:
        """A PIL image or a (3, H, W) tensor -> its class name; a (N, 3, H, W) batch -> N names (the class index
        as text when the classifier has no names). Uses ``transforms``, in eval mode."""
        if self.transforms is None:
            raise RuntimeError("Classifier.predict needs .transforms (set when loaded with mvssl_hub.from_pretrained)")
        x = self.transforms(images)
        single = x.dim() == 3
        was_training = self.training
        self.eval()
        batch = (x.unsqueeze(0) if single else x).to(next(self.parameters()).device)
        logits = self(batch)
        self.train(was_training)
        names = [self.class_names[i] if self.class_names else str(i) for i in logits.argmax(1).tolist()]
        return names[0] if single else names


__all__ = ["Backbone", "Classifier", "SSLModel", "build_ssl_model"]
