"""Device and precision choice: which CPU/GPU this is, whether bf16 pays off on it, the accelerator of a recipe,
where a decoded split lives, and how a run names its hardware.

``accelerate`` is imported only inside :func:`make_accelerator` (importing mvssl_hub must not import it).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

import torch

from .distributed import check_distributed_launch

__all__ = ["bf16_is_fast", "cpu_flags", "hardware_string", "make_accelerator", "peak_memory_mb", "place_images"]


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


def bf16_is_fast(device: torch.device | str) -> bool:
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
        return onednn_bf16 and bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    return False


def hardware_string(device: torch.device, num_processes: int = 1) -> str:
    """E.g. '2 x Intel(R) Xeon(R) ... (2 threads), torch 2.x' or 'NVIDIA A100 x 8, torch 2.x'."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name} ({torch.get_num_threads()} threads per process)"
    return f"{num_processes} process(es) on {name}, torch {torch.__version__}"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA max allocated, else the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return float("nan")


def make_accelerator(*, cpu: bool | None, precision: str, run_dir: Path, log_with: list[Any]) -> tuple[Any, str]:
    """An ``accelerate.Accelerator`` for a recipe, and the precision it trains in ("bf16" or "fp32").

    cpu=None picks the CPU when no GPU is visible; precision "auto" is bf16 autocast where the device
    runs it natively (CUDA with bf16, CPUs with AMX / AVX512-BF16). Fails loudly on a launch that
    started unrelated single processes (:func:`check_distributed_launch`).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, parse_flag_from_env

    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    use_cpu = use_cpu or parse_flag_from_env("ACCELERATE_USE_CPU")  # `accelerate launch --cpu` on a GPU machine
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(torch.device("cpu" if use_cpu else "cuda")) else "fp32"
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision="bf16" if precision == "bf16" else "no",
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        step_scheduler_with_optimizer=False,  # one scheduler.step() per optimiser step, whatever the world size
    )
    check_distributed_launch(accelerator.num_processes)
    return accelerator, precision


def place_images(images: torch.Tensor, device: torch.device, max_device_bytes: int = 2 << 30) -> torch.Tensor:
    """Where a decoded uint8 split (N, 3, H, W) lives during training: on the accelerator when it fits in
    ``max_device_bytes`` (gathers then never cross the bus), else in pinned host memory, from which each
    step copies only its own rows (ImageNet-100 at 146 px is ~8 GB: not one copy per GPU)."""
    if device.type == "cpu":
        return images
    if images.numel() * images.element_size() <= max_device_bytes:
        return images.to(device)
    return images.pin_memory()
