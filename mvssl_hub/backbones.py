"""torchvision ResNets as feature extractors: optional small-image stem, optional width multiplier.

The returned module *is* a ``torchvision.models.ResNet`` with ``fc = Identity`` (and, with the
small-image stem, ``conv1`` 3x3 stride 1 and ``maxpool = Identity``), so its state-dict keys are
torchvision's: a full-width backbone loads with ``strict=True`` into a plain torchvision model given
the same stem (see :func:`torchvision_compatible`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .registry import unknown_name_error
from .timm_backbone import TimmBackbone, TimmBackboneConfig, is_timm_arch

# depth -> (block, blocks per stage)
# resnet10: one basic block per stage, a compact net in the spirit of the supervised CIFAR speedruns'
# ResNet-9 (few layers, full width), with torchvision's key names.
_RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


ARCHITECTURES: tuple[str, ...] = tuple(_RESNET_LAYOUTS)  # and any "timm:<name>" (see timm_backbone)
TIMM_RESNETS = ("resnet18", "resnet34", "resnet50")  # timm builds these with torchvision's stem and key names


@dataclass(frozen=True)
class BackboneConfig:
    """What rebuilds a backbone: ``arch`` (resnet10/18/34/50), ``small_images`` stem, first-stage ``width``.

    ``width=64`` is torchvision's network; smaller widths scale every stage (w, 2w, 4w, 8w)
    and keep the key names, for runs that must learn in minutes on a CPU.
    """

    arch: str = "resnet18"
    small_images: bool = True
    width: int = 64

    def __post_init__(self) -> None:
        if self.arch not in _RESNET_LAYOUTS:
            raise unknown_name_error("architecture", self.arch, _RESNET_LAYOUTS)
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise ValueError(f"backbone width must be a positive int, got {self.width!r}")
        if not isinstance(self.small_images, bool):
            raise TypeError(f"small_images must be a bool, got {self.small_images!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def feature_dim(self) -> int:
        block, _ = _RESNET_LAYOUTS[self.arch]
        return 8 * self.width * block.expansion

    @property
    def timm_name(self) -> str | None:
        """The timm model that is this very network, key for key (torchvision's stem at full width: timm's
        ``resnet18/34/50`` have torchvision's key names), or None (the small-image stem, other widths, ResNet-10)."""
        return self.arch if self.arch in TIMM_RESNETS and self.width == 64 and not self.small_images else None


class ResNetBackbone(ResNet):
    """A torchvision ResNet with stage widths (w, 2w, 4w, 8w) and no classifier.

    forward: (N, 3, H, W) -> (N, feature_dim).

    Saving, loading and publishing are free functions that take or return the model
    (:func:`mvssl_hub.save_pretrained`, :func:`mvssl_hub.from_pretrained`, :func:`mvssl_hub.push_to_hub`): the
    model classes never import the hub wing.
    """

    def __init__(self, config: BackboneConfig, init_weights: bool = True) -> None:
        block, layers = _RESNET_LAYOUTS[config.arch]
        nn.Module.__init__(self)
        # Same attributes torchvision's ResNet.__init__ sets, so its _make_layer / forward apply.
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = config.width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        w = config.width
        if config.small_images:
            self.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if config.small_images else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.config = config
        self.feature_dim = config.feature_dim
        if init_weights:  # skipped on the meta device, where only shapes matter
            self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so that random-init baselines match a plain resnet18().
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build_backbone(arch: str = "resnet18", *, small_images: bool | None = None, width: int | None = None,
                   arch_kwargs: dict[str, Any] | None = None) -> ResNetBackbone | TimmBackbone:
    """A feature extractor (N, 3, H, W) -> (N, feature_dim): a ResNet (see :class:`BackboneConfig`; defaults
    small_images=True, width=64), or ``"timm:<name>"`` with timm keyword arguments ``arch_kwargs``."""
    if is_timm_arch(arch):
        given = [k for k, v in (("small_images", small_images), ("width", width)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to the ResNets; give a timm backbone's settings in "
                             f"arch_kwargs (arch={arch!r})")
        return TimmBackbone(TimmBackboneConfig.from_arch(arch, arch_kwargs))
    if arch_kwargs:
        raise ValueError(f"arch_kwargs {arch_kwargs!r} are for 'timm:<name>' architectures, not {arch!r}")
    return ResNetBackbone(BackboneConfig(arch=arch, small_images=True if small_images is None else small_images,
                                         width=64 if width is None else width))


def backbone_config(record: dict[str, Any]) -> BackboneConfig | TimmBackboneConfig:
    """config.json's ``backbone`` record -> its config (TypeError / ValueError name what is wrong)."""
    if is_timm_arch(record.get("arch")):
        return TimmBackboneConfig(record["arch"][len("timm:"):], record.get("kwargs") or {},
                                  record.get("timm_version"))
    return BackboneConfig(**record)


def backbone_from_config(record: dict[str, Any], *, init_weights: bool = True) -> ResNetBackbone | TimmBackbone:
    """The backbone a config.json ``backbone`` record describes (on the default device: meta for shapes only)."""
    cfg = backbone_config(record)
    if isinstance(cfg, TimmBackboneConfig):
        return TimmBackbone(cfg, init_weights=init_weights)
    return ResNetBackbone(cfg, init_weights=init_weights)


def torchvision_compatible(arch: str = "resnet18", *, small_images: bool = True) -> ResNet:
    """A *plain* torchvision ResNet shaped like our full-width backbone (stem swapped, fc removed).

    This is what a user without mvssl-hub writes; our exported weights load into it strictly.
    """
    import torchvision

    if hasattr(torchvision.models, arch):
        model: ResNet = getattr(torchvision.models, arch)(weights=None)
    else:  # resnet10: torchvision's own class, built as a user would: ResNet(BasicBlock, [1, 1, 1, 1])
        model = ResNet(*_RESNET_LAYOUTS[arch])
    if small_images:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model
