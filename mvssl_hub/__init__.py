"""mvssl-hub: multi-view Barlow Twins / VICReg with small projectors, and a hub of their backbones.

Importing this package never imports accelerate or datasets (only the recipes use them), and the
Hugging Face Hub client only when a Hub call is made.
"""

from .backbones import BackboneConfig, build_backbone, torchvision_compatible
from .errors import CheckpointError, IntegrityError, UnknownModelError
from .hub import from_pretrained, push_to_hub, save_pretrained, update_metrics
from .losses import BarlowTwinsLoss, VICRegLoss, barlow_twins_loss, build_loss, recommended_beta, vicreg_loss
from .models import (
    SSLModel,
    barlowtwins_resnet18,
    barlowtwins_resnet50,
    build_ssl_model,
    vicreg_resnet18,
    vicreg_resnet50,
)
from .projector import Projector, parse_projector_spec, projector_spec
from .registry import get_model, list_models, register_model
from .views import VIEW_PRESETS, EvalTransform, MultiViewAugment, get_view_preset

__version__ = "0.1.0"

__all__ = [
    "VIEW_PRESETS", "BackboneConfig", "BarlowTwinsLoss", "CheckpointError", "EvalTransform", "IntegrityError",
    "MultiViewAugment", "Projector", "SSLModel", "UnknownModelError", "VICRegLoss", "__version__",
    "barlow_twins_loss", "barlowtwins_resnet18", "barlowtwins_resnet50", "build_backbone", "build_loss",
    "build_ssl_model", "from_pretrained", "get_model", "get_view_preset", "list_models", "parse_projector_spec",
    "projector_spec", "push_to_hub", "recommended_beta", "register_model", "save_pretrained",
    "torchvision_compatible", "update_metrics", "vicreg_loss", "vicreg_resnet18", "vicreg_resnet50",
]
