"""The model a checked checkpoint describes, assembled and loaded ``strict=True``."""

from __future__ import annotations

import torch.nn as nn

from ...backbones import backbone_from_config
from ...models import Classifier, SSLModel
from ...projector import Projector
from ...views import eval_transform_from
from .read import CheckpointState


def model_from_state(state: CheckpointState) -> nn.Module:
    """The model a checked checkpoint describes, loaded ``strict=True``, in eval mode; ``.mvssl_config`` set.

    A ResNetBackbone ((N, 3, H, W) -> (N, feature_dim)), an SSLModel when the projector was read, or a
    Classifier ((N, 3, H, W) -> (N, num_classes)) for a fine-tuned checkpoint.
    """
    cfg = state.config
    backbone = backbone_from_config(cfg["backbone"])
    backbone.load_state_dict(state.backbone, strict=True)
    model: nn.Module = backbone
    if state.head is not None:
        model = Classifier(backbone, cfg["num_classes"], class_names=cfg.get("class_names"),
                           transforms=eval_transform_from(cfg.get("transforms")))
        model.head.load_state_dict(state.head, strict=True)
    if state.projector is not None:
        projector = Projector(cfg["projector"])
        projector.load_state_dict(state.projector, strict=True)
        model = SSLModel(backbone, projector)
    model.mvssl_config = cfg  # type: ignore[assignment]
    return model.eval()



__all__ = ["model_from_state"]
