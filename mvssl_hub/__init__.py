"""mvssl-hub: multi-view Barlow Twins / VICReg with small projectors, and a hub of their backbones.

Importing this package never imports accelerate or datasets (only the recipes use them).
"""

from .backbones import BackboneConfig, build_backbone, torchvision_compatible
from .errors import CheckpointError, IntegrityError, UnknownModelError
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
from .hub import from_pretrained, push_to_hub, save_pretrained, update_metrics  # Hub client imported lazily

__version__ = "0.1.0"

__all__ = [
    "BackboneConfig", "CheckpointError", "IntegrityError", "Projector", "SSLModel", "UnknownModelError",
    "__version__", "barlowtwins_resnet18", "barlowtwins_resnet50", "build_backbone", "build_ssl_model",
    "get_model", "list_models", "parse_projector_spec", "projector_spec", "register_model",
    "torchvision_compatible", "vicreg_resnet18", "vicreg_resnet50",
]
__all__ += ["from_pretrained", "push_to_hub", "save_pretrained", "update_metrics"]
