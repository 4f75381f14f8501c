"""How a training run sets up its device: precision, memory format, backend flags, the optimizer kernel and
the accelerator.

- :func:`choose_precision`: bf16 / fp16 / fp32, following ``accelerate launch`` and what the device runs fast.
- :func:`apply_memory_format`: channels_last, unless the network meets a known CPU kernel fault in it
  (:func:`channels_last_hazards`).
- :func:`configure_backends`: cuDNN autotuning (``benchmark``) on unless ``deterministic``; TF32 for
  fp32 matmuls and convolutions on CUDA through torch's ``fp32_precision`` API (torch >= 2.9; the
  legacy ``allow_tf32`` / ``set_float32_matmul_precision`` must not be mixed with it, torch then
  refuses to report the precision); deterministic algorithms for bitwise-resume runs. Returns the
  previous settings, whose :meth:`BackendSettings.restore` puts them back.
- :func:`make_adam`: ``torch.optim.Adam`` with the fused kernel on CUDA (one launch per step, and
  :class:`mvssl_hub.train.step_guard.StepGuard` can skip a non-finite step on the device), foreach elsewhere.
- :func:`make_lars`: timm's ``Lars`` (Barlow Twins as published: biases and BatchNorm parameters in a group of
  their own, with their own learning rate and neither weight decay nor the trust-ratio adaptation).
- :func:`make_accelerator`: the ``accelerate.Accelerator`` of a recipe; ``accelerate`` is imported only inside
  it (importing mvssl_hub must not import it).
- :func:`export_copy`: a trained model's weights in a plain fp32 network on the CPU, what an export writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..device import bf16_is_fast
from ..distributed import check_distributed_launch
from ..errors import ConfigError
from .collectives import arm, startup_timeout

__all__ = ["CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS", "PRECISIONS", "BackendSettings", "apply_memory_format",
           "channels_last_hazards", "choose_precision", "configure_backends", "current_backends", "export_copy",
           "make_accelerator",
           "make_adam", "make_lars", "use_channels_last"]

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
    device-side ``found_inf`` flag (used by :class:`mvssl_hub.train.step_guard.StepGuard`).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def make_lars(model: torch.nn.Module, lr: float, weight_decay: float, *, lr_bias: float | None = None,
              momentum: float = 0.9, trust_coeff: float = 1e-3) -> torch.optim.Optimizer:
    """timm's ``Lars`` over ``model``'s parameters, set up as Barlow Twins trains (Zbontar et al., 2021):

    - weights (tensors of 2+ dims): ``lr``, L2 ``weight_decay``, the layer-wise trust ratio ``trust_coeff``;
    - biases and BatchNorm parameters (1-dim tensors): ``lr_bias`` (default ``lr``), no weight decay and no
      trust-ratio adaptation (timm adapts a group only when its weight decay is non-zero).

    timm is imported here: ImportError names the extra that installs it. Its trust ratio divides by
    ``|g| + wd |w|`` where Barlow Twins' own code divides by ``|g + wd w|``: equal up to the triangle inequality.
    """
    try:
        from timm.optim import Lars
    except ImportError as e:
        raise ImportError("optimizer 'lars' uses timm's Lars: pip install 'mvssl-hub[timm]'") from e
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    flat = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay},
              {"params": flat, "lr": lr if lr_bias is None else lr_bias, "weight_decay": 0.0}]
    return Lars([g for g in groups if g["params"]], lr=lr, momentum=momentum, trust_coeff=trust_coeff)


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def choose_precision(requested: str, device: torch.device | str, env: Mapping[str, str] | None = None) -> str:
    """The precision a run trains in: "bf16", "fp16" or "fp32".

    ``auto``: what ``accelerate launch --mixed_precision`` asked for (ACCELERATE_MIXED_PRECISION bf16/fp16),
    else bf16 where the device runs it natively, else fp16 on a GPU without bf16, else fp32. An explicit
    ``requested`` that contradicts the launcher's bf16/fp16 is a ConfigError naming both.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"config key 'precision' = {requested!r}: expected one of {PRECISIONS}")
    env = os.environ if env is None else env
    device = torch.device(device)
    launcher = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if requested == "auto":
        if launcher in ("bf16", "fp16"):
            return launcher
        if bf16_is_fast(device, env):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if launcher in ("bf16", "fp16") and launcher != requested:
        raise ConfigError(f"config key 'precision' = {requested!r} contradicts `accelerate launch --mixed_precision "
                          f"{launcher}`: drop one of them")
    if requested == "bf16" and device.type == "cuda" and not bf16_is_fast(device, env):
        raise ConfigError("config key 'precision' = 'bf16': this GPU has no bf16; use 'fp16' or 'auto'")
    return requested


# oneDNN's fp32 channels_last backward of a strided 1x1 convolution with few input channels per group is not to be
# trusted on a CPU (torch 2.14.1; benchmarks/channels_last_safety.py, each case in its own process):
# - AVX2-only AMD EPYC: 1-7 channels at 8-32 px gave wrong weight gradients (relative error 0.29-0.88) or hung
#   (benchmarks/results/channels_last_safety.json);
# - AVX512-BF16 AMD EPYC: 1-15 channels at 48 and 96 px killed the process (SIGSEGV), with 16 or 32 outputs
#   (benchmarks/results/channels_last_safety_avx512bf16.json), in the weight gradient: the forward pass and the input
#   gradient alone ran (checked by hand at 8 channels, 48 px, and 2-12 channels, 96 px), so inference is not at risk.
# 3x3 kernels, stride 1 and 16 or more input channels were exact on both (8-32 px on the AVX2 EPYC, 8-96 px on the
# AVX512-BF16 one). oneDNN issue #6035 reports wrong weight gradients of the same kind on other CPUs. A ResNet
# narrower than 16 meets it in its downsample convolutions, so on a CPU such a model runs contiguous (the speed
# difference is small at such widths).
CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS = 16


def channels_last_hazards(model: torch.nn.Module, device: torch.device | str) -> list[str]:
    """Names of ``model``'s convolutions whose channels_last backward is unsafe on ``device`` (empty if none).

    On a CPU: every ``Conv2d`` with a 1x1 kernel, a stride above 1 and fewer than
    ``CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS`` input channels per group. On CUDA: none known.
    """
    if torch.device(device).type != "cpu":
        return []
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1
            and m.in_channels // m.groups < CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS]


def use_channels_last(model: torch.nn.Module, device: torch.device | str, requested: bool = True) -> bool:
    """Whether ``model`` should run channels_last on ``device``: ``requested``, unless one of its convolutions
    meets a known channels_last kernel fault there (:func:`channels_last_hazards`), which wins, with a warning
    that names the first such layer."""
    if not requested:
        return False
    hazards = channels_last_hazards(model, device)
    if hazards:
        import warnings

        warnings.warn(f"channels_last off: layer {hazards[0]!r} (1x1, strided, < "
                      f"{CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS} input channels) meets a oneDNN CPU kernel fault "
                      f"(wrong weight gradients, a hang or a crash) in channels_last; running contiguous", stacklevel=2)
    return not hazards


def apply_memory_format(model: torch.nn.Module, device: torch.device | str, requested: bool = True) -> bool:
    """Convert ``model`` in place to channels_last when :func:`use_channels_last` allows it on ``device``;
    returns whether it did (the views must then be channels_last too)."""
    channels_last = use_channels_last(model, device, requested)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return channels_last


def make_accelerator(*, cpu: bool | None, precision: str, run_dir: Path, log_with: list[Any],
                     timeout_minutes: float = 10.0) -> tuple[Any, str]:
    """An ``accelerate.Accelerator`` for a recipe, and the precision it trains in (:func:`choose_precision`).

    cpu=None picks the CPU when no GPU is visible (``accelerate launch --cpu`` is honoured on a GPU
    machine). Fails loudly on a launch that started unrelated single processes (:func:`check_distributed_launch`).
    ``timeout_minutes`` bounds every collective and barrier once the run state is open
    (:func:`mvssl_hub.train.collectives.tighten`); until then the limit is at least
    :data:`~mvssl_hub.train.collectives.STARTUP_MINUTES`, since rank 0 may download and decode a large split under
    ``main_process_first`` while the other ranks wait at the barrier.
    """
    from accelerate import Accelerator  # lazy: importing mvssl_hub must not import accelerate
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, parse_flag_from_env

    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    use_cpu = use_cpu or parse_flag_from_env("ACCELERATE_USE_CPU")  # `accelerate launch --cpu` on a GPU machine
    precision = choose_precision(precision, "cpu" if use_cpu else "cuda")
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision={"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision],
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        step_scheduler_with_optimizer=False,  # one scheduler.step() per optimiser step, whatever the world size
        kwargs_handlers=[InitProcessGroupKwargs(timeout=startup_timeout(timeout_minutes))],
    )
    check_distributed_launch(accelerator.num_processes)
    arm(timeout_minutes)
    return accelerator, precision


def export_copy(trained: torch.nn.Module, fresh: torch.nn.Module) -> torch.nn.Module:
    """``fresh`` (the trained network built anew: plain BatchNorm, fp32, no wrappers) holding ``trained``'s weights,
    floating-point tensors as float32, every tensor on the CPU, loaded strictly; returns ``fresh``. ``trained`` is
    unwrapped already (``accelerator.unwrap_model``); SyncBatchNorm's state dict is BatchNorm's."""
    fresh.load_state_dict({k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                           for k, v in trained.state_dict().items()})
    return fresh
