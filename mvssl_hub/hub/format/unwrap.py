"""DistributedDataParallel and torch.compile wrappers taken off a model before it is saved."""

from __future__ import annotations

import torch.nn as nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if type(model).__name__ in ("DistributedDataParallel", "DataParallel") else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


__all__ = ["unwrap_model"]
