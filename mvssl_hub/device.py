"""What the device is: which CPU/GPU this is, whether bf16 pays off on it, its free and peak memory, and how a
run names its hardware. How a training run sets the device up (precision, memory format, backend flags, the
accelerator) is :mod:`mvssl_hub.train.backends`.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["available_memory_bytes", "bf16_is_fast", "cpu_flags", "cpu_isa", "cpu_name", "hardware_string",
           "isa_capped_below_bf16", "peak_memory_mb"]


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


def __getattr__(name: str) -> object:  # names that moved to mvssl_hub.train.backends, until they go (mvssl_hub.version)
    from .version import moved_name

    return moved_name(__name__, name)
