"""Backend speed settings and the optimizer choice for a training device.

- :func:`configure_backends`: cuDNN autotuning (``benchmark``) on unless ``deterministic``; TF32 for
  fp32 matmuls and convolutions on CUDA through torch's ``fp32_precision`` API (torch >= 2.9; the
  legacy ``allow_tf32`` / ``set_float32_matmul_precision`` must not be mixed with it, torch then
  refuses to report the precision); deterministic algorithms for bitwise-resume runs. Returns the
  previous settings, whose :meth:`BackendSettings.restore` puts them back.
- :func:`make_adam`: ``torch.optim.Adam`` with the fused kernel on CUDA (one launch per step, and
  :class:`mvssl_hub.step_guard.StepGuard` can skip a non-finite step on the device), foreach elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["BackendSettings", "configure_backends", "current_backends", "make_adam"]

# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); read when cuBLAS starts.
_CUBLAS_DETERMINISTIC = ":4096:8"


@dataclass(frozen=True)
class BackendSettings:
    """The global flags :func:`configure_backends` changes."""

    cudnn_benchmark: bool
    cudnn_deterministic: bool
    deterministic_algorithms: bool
    deterministic_warn_only: bool
    matmul_fp32_precision: str
    conv_fp32_precision: str
    cublas_workspace_config: str | None

    def restore(self) -> None:
        """Set every flag back to these values."""
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.use_deterministic_algorithms(self.deterministic_algorithms, warn_only=self.deterministic_warn_only)
        torch.backends.cuda.matmul.fp32_precision = self.matmul_fp32_precision
        torch.backends.cudnn.conv.fp32_precision = self.conv_fp32_precision
        if self.cublas_workspace_config is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = self.cublas_workspace_config


def current_backends() -> BackendSettings:
    """A snapshot of the flags :func:`configure_backends` sets."""
    return BackendSettings(
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        matmul_fp32_precision=str(torch.backends.cuda.matmul.fp32_precision),
        conv_fp32_precision=str(torch.backends.cudnn.conv.fp32_precision),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


def configure_backends(device: torch.device | str, deterministic: bool, *, tf32: bool = True,
                       strict: bool = False) -> BackendSettings:
    """Set the global backend flags for training on ``device``; returns the previous settings.

    deterministic=False: cudnn.benchmark on (autotuned convolutions; input shapes are fixed per run),
    deterministic algorithms off. deterministic=True: benchmark off, cudnn.deterministic on,
    ``torch.use_deterministic_algorithms(True, warn_only=not strict)`` and CUBLAS_WORKSPACE_CONFIG set
    (if unset) for bitwise-reproducible resumes; ``strict`` raises on ops without a deterministic kernel.
    On CUDA, fp32 matmuls and convolutions use TF32 when ``tf32`` (bf16 autocast is unaffected), IEEE
    fp32 otherwise. On other devices the CUDA flags are left as they are.
    """
    device = torch.device(device)
    previous = current_backends()
    torch.use_deterministic_algorithms(deterministic, warn_only=not strict)
    if deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = _CUBLAS_DETERMINISTIC
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    return previous


def make_adam(params: Iterable[torch.nn.Parameter] | Iterable[dict], lr: float, weight_decay: float,
              device: torch.device | str) -> torch.optim.Adam:
    """Adam (L2 weight decay, as the recipes use) with ``fused=True`` on CUDA, ``foreach=True`` elsewhere.

    The update is the same algorithm either way; fused does it in one kernel per step and honours a
    device-side ``found_inf`` flag (used by :class:`mvssl_hub.step_guard.StepGuard`).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
