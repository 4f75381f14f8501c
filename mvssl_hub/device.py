"""Device and precision choice: which CPU/GPU this is, whether bf16 pays off on it, the accelerator of a recipe,
where a decoded split lives, and how a run names its hardware.

``accelerate`` is imported only inside :func:`make_accelerator` (importing mvssl_hub must not import it).
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from .distributed import check_distributed_launch
from .errors import ConfigError

__all__ = ["PRECISIONS", "apply_memory_format", "available_memory_bytes", "bf16_is_fast", "channels_last_hazards", "choose_precision", "use_channels_last", "cpu_flags", "cpu_isa", "cpu_name", "hardware_string", "isa_capped_below_bf16",
           "make_accelerator", "peak_memory_mb"]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) that include native bf16 instructions
_BF16_ISAS = {"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
              "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX2_VNNI_2"}


def isa_capped_below_bf16(env: Mapping[str, str] | None = None) -> bool:
    """True when ``ONEDNN_MAX_CPU_ISA`` or ``ATEN_CPU_CAPABILITY`` holds this process to an instruction set
    without native bf16 (how an AVX2-only CPU is emulated on a newer one)."""
    env = os.environ if env is None else env
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return bool(onednn and onednn not in _BF16_ISAS) or aten in ("avx2", "default")


def bf16_is_fast(device: torch.device | str, env: Mapping[str, str] | None = None) -> bool:
    """True when bf16 autocast is a speed-up on ``device``.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: oneDNN bf16 support *and* native bf16 instructions
    (``amx_bf16`` or ``avx512_bf16`` in the CPU flags); without them oneDNN emulates bf16, slower than
    fp32. Other devices: False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            onednn_bf16 = False
        return onednn_bf16 and bool({"amx_bf16", "avx512_bf16"} & cpu_flags()) and not isa_capped_below_bf16(env)
    return False


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The fastest instruction-set level with bf16 relevance: "AMX", "AVX512-BF16", "AVX512", "AVX2" or "other"."""
    flags = cpu_flags()
    for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return "other"


def hardware_string(device: torch.device, num_processes: int = 1) -> str:
    """E.g. '1 process(es) on AMD EPYC [AVX512-BF16] (2 threads per process), torch 2.x' or 'NVIDIA H200'."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_name()} [{cpu_isa()}] ({torch.get_num_threads()} threads per process)"
    return f"{num_processes} process(es) on {name}, torch {torch.__version__}"


def available_memory_bytes(device: torch.device | str) -> int | None:
    """Memory a new allocation can use on ``device``: free CUDA memory, else the host's MemAvailable
    (/proc/meminfo); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA max allocated, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return float("nan")


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


# oneDNN's fp32 channels_last backward of a strided 1x1 convolution with fewer than 8 input channels per group
# returns wrong weight gradients (relative error 0.05-1.0) or never returns: measured on an AVX2-only AMD EPYC
# with torch 2.14.1 over in_channels 1..24, strides 1..4, 1x1 and 3x3 kernels, 8-32 px
# (benchmarks/channels_last_safety.py); oneDNN issue #6035 reports wrong weight gradients of the same kind on
# other CPUs. 3x3 kernels, stride 1 and >= 8 channels were exact. A ResNet narrower than 8 meets it in
# its downsample convolutions, so on a CPU such a model runs contiguous (the speed difference is small there).
CHANNELS_LAST_MIN_STRIDED_1X1_CHANNELS = 8


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
                      f"(wrong weight gradients or a hang) in channels_last; running contiguous", stacklevel=2)
    return not hazards


def apply_memory_format(model: torch.nn.Module, device: torch.device | str, requested: bool = True) -> bool:
    """Convert ``model`` in place to channels_last when :func:`use_channels_last` allows it on ``device``;
    returns whether it did (the views must then be channels_last too)."""
    channels_last = use_channels_last(model, device, requested)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return channels_last


def make_accelerator(*, cpu: bool | None, precision: str, run_dir: Path, log_with: list[Any],
                     timeout_minutes: float = 60.0) -> tuple[Any, str]:
    """An ``accelerate.Accelerator`` for a recipe, and the precision it trains in (:func:`choose_precision`).

    cpu=None picks the CPU when no GPU is visible (``accelerate launch --cpu`` is honoured on a GPU
    machine). Fails loudly on a launch that started unrelated single processes (:func:`check_distributed_launch`).
    ``timeout_minutes`` bounds every collective and barrier: NCCL's default (10 minutes) is shorter than
    rank 0 decoding ImageNet-100 under ``main_process_first`` while the other ranks wait at the barrier.
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
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_minutes))],
    )
    check_distributed_launch(accelerator.num_processes)
    return accelerator, precision
