"""torch.hub entry points of mvssl-hub: ``torch.hub.load("<repo or checkout>", "barlowtwins_resnet18_w16", weights=...)``,
or any checkpoint folder or Hub repo (a timm backbone too): ``torch.hub.load(..., "from_pretrained", "org/name")``.

Only explicit imports of the public builders live here (no logic); importing this file imports neither
accelerate nor datasets.
"""

dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]

from mvssl_hub import (  # noqa: E402,F401
    barlowtwins_resnet18,
    barlowtwins_resnet18_cifar10,
    barlowtwins_resnet18_w16,
    barlowtwins_resnet50,
    from_pretrained,
    vicreg_resnet18,
    vicreg_resnet18_w16,
    vicreg_resnet50,
)
