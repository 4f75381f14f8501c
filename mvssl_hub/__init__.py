"""mvssl-hub: multi-view Barlow Twins / VICReg with small projectors, and a hub of their backbones.

One loader and one pusher, free functions as in torchvision and timm: ``from_pretrained(folder_or_repo)`` and
``push_to_hub(model_or_folder, repo_id)``; ``save_pretrained(model, folder)`` writes a checkpoint. The model
classes never import the hub.

Importing this package never imports accelerate or datasets (only the recipes use them), timm only when a
``timm:<name>`` backbone is built, and the Hugging Face Hub client only when a Hub call is made. Four wings
(``hub/``, ``data/``, ``train/``, ``eval/``) stand on a small flat core and never import each other; this face and
``zoo`` stand on the hub wing (see ``[tool.importlinter]`` in pyproject.toml).
"""

import sys

from .backbones import BackboneConfig, build_backbone, torchvision_compatible
from .errors import CheckpointError, CheckpointNotFoundError, IntegrityError, UnknownModelError
from .hub.format import save_pretrained, update_metrics
from .hub.loading import from_pretrained, push_to_hub
from .losses import BarlowTwinsLoss, VICRegLoss, barlow_twins_loss, build_loss, recommended_beta, vicreg_loss
from .models import SSLModel, build_ssl_model
from .projector import Projector, parse_projector_spec, projector_spec
from .registry import get_model, get_model_builder, get_model_weights, list_models, register_model
from .timm_backbone import TimmBackbone, TimmBackboneConfig
from .version import MovedModules, __version__
from .views import VIEW_PRESETS, EvalTransform, MultiViewAugment, get_view_preset
from .zoo import (
    barlowtwins_resnet18,
    barlowtwins_resnet18_cifar10,
    barlowtwins_resnet18_w16,
    barlowtwins_resnet50,
    vicreg_resnet18,
    vicreg_resnet18_w16,
    vicreg_resnet50,
)

if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):  # old module paths, until they go
    sys.meta_path.append(MovedModules())

__all__ = [
    "VIEW_PRESETS", "BackboneConfig", "BarlowTwinsLoss", "CheckpointError", "CheckpointNotFoundError",
    "EvalTransform", "IntegrityError", "MultiViewAugment", "Projector", "SSLModel", "TimmBackbone", "TimmBackboneConfig", "UnknownModelError",
    "VICRegLoss", "__version__", "barlow_twins_loss", "barlowtwins_resnet18", "barlowtwins_resnet18_cifar10",
    "barlowtwins_resnet18_w16", "barlowtwins_resnet50", "build_backbone", "build_loss", "build_ssl_model",
    "from_pretrained", "get_model",
    "get_model_builder", "get_model_weights", "get_view_preset", "list_models", "parse_projector_spec",
    "projector_spec", "push_to_hub", "recommended_beta", "register_model", "save_pretrained",
    "torchvision_compatible", "update_metrics", "vicreg_loss", "vicreg_resnet18", "vicreg_resnet18_w16",
    "vicreg_resnet50",
]
