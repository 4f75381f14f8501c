"""Several processes, one model: world size and rank (defined once for the package), cross-process
BatchNorm, and the launch check that catches processes started unrelated to each other.

``torch.distributed`` is used only when a process group is initialised; ``accelerate`` is never imported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["CHECKED_BATCH_SIZES", "GlobalBatchNorm", "any_process", "check_same_batch_size", "LaunchError", "check_distributed_launch", "convert_batchnorm", "rank_and_world",
           "world_size"]


def any_process(flag: bool, accelerator: Any) -> bool:
    """``flag`` made common: true on every process when it is true on any (a stop or a save that every process
    must take at the same step, though their clocks differ). One process: ``flag`` itself, no collective."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum") > 0)


def world_size() -> int:
    """Processes in the initialised torch.distributed group, else 1."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


CHECKED_BATCH_SIZES: set[tuple[int, int]] = set()


def check_same_batch_size(n: int, device: torch.device | str = "cpu", name: str = "check_same_batch_size") -> None:
    """Raise ValueError on every rank unless all ranks pass the same local batch size ``n``.

    One all_gather of an int64 (1,) tensor on ``device`` and a host read (a sync on CUDA). Call it
    once before training with the per-process batch; the losses with ``distributed=True`` call it
    themselves only the first time they see a given (world size, N), so the steady-state step has
    no host sync. No-op without a process group of world size > 1.
    """
    world = world_size()
    if world == 1:
        return
    local_n = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(sizes, local_n)
    ns = [int(s) for s in torch.cat(sizes).tolist()]
    if len(set(ns)) != 1:
        listing = ", ".join(f"rank {r}: N={k}" for r, k in enumerate(ns))
        raise ValueError(f"{name}: distributed=True needs the same batch size N on every rank, got {listing}")
    CHECKED_BATCH_SIZES.add((world, n))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the union of every process's batch; the plain BatchNorm when there is one process.

    forward: (N, C) or (N, C, *spatial) -> same shape. Statistics are computed in float32 with two
    autograd-aware all-reduces (mean, then centred second moment), so gradients flow to every process's
    inputs exactly as with one process on the global batch. All processes must use the same local N.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        world = world_size()
        if not self.training or world == 1:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = x.numel() // x.shape[1] * world
        mean = all_reduce(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dim=dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / max(count - 1, 1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return out.to(input.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm1d/2d by a cross-process one: SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere.

    State-dict keys are unchanged. Call before wrapping the model for data parallelism.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(device=child.weight.device if child.weight is not None else device)
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


class LaunchError(RuntimeError):
    """The processes were started in a way that would silently train the wrong thing."""


_LAUNCH_HINT = (
    "To run N processes on CPU use: accelerate launch --multi_gpu --num_processes N --num_machines 1 "
    "recipes/pretrain.py ... (the recipe then creates Accelerator(cpu=True) itself when there is no GPU; "
    "do not pass --cpu false), or set ACCELERATE_USE_CPU=1. For one process use --num_processes 1."
)


def check_distributed_launch(num_processes: int, env: Mapping[str, str] | None = None) -> None:
    """Raise LaunchError when the launcher asked for several processes but accelerate sees only one.

    Two cases are caught: (1) ``WORLD_SIZE``/``LOCAL_WORLD_SIZE`` > 1 (torchrun / ``accelerate launch
    --multi_gpu``) while the Accelerator reports one process — each process would train alone on its own
    copy; this is what ``--multi_gpu`` without ``--cpu``/``ACCELERATE_USE_CPU`` gives on a machine
    without GPUs. (2) ``accelerate launch --cpu --num_processes N`` (N > 1) without MPI starts a *single*
    process (it only sets MASTER_ADDR/MASTER_PORT and no WORLD_SIZE).
    """
    env = os.environ if env is None else env

    def as_int(key: str) -> int:
        try:
            return int(env.get(key, "") or 0)
        except ValueError:
            return 0

    world = max(as_int("WORLD_SIZE"), as_int("LOCAL_WORLD_SIZE"))
    if world > 1 and num_processes == 1:
        raise LaunchError(
            f"the launcher started {world} processes (WORLD_SIZE={env.get('WORLD_SIZE')}, LOCAL_WORLD_SIZE="
            f"{env.get('LOCAL_WORLD_SIZE')}) but accelerate runs each one alone (num_processes=1): they would "
            f"train {world} unrelated models. {_LAUNCH_HINT}"
        )
    mpi = any(as_int(k) > 1 for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in env
    if (num_processes == 1 and launched_by_accelerate and not mpi and "WORLD_SIZE" not in env
            and env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise LaunchError(
            "accelerate launch was asked for several processes (it set MASTER_ADDR/MASTER_PORT) but started "
            f"only this one: with --cpu and no MPI it runs a single process. {_LAUNCH_HINT}"
        )
