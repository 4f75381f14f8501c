"""The batch plan: which rows every step of a run draws, and the seeds of its random streams.

- :func:`epoch_batches` / :func:`process_slice` / :class:`BatchPlan`: a seeded per-epoch permutation cut
  into global batches (drop_last), each process taking its contiguous slice of every global batch, so a
  resumed run draws exactly the rows an uninterrupted one would.
- :func:`derive_seed` / :func:`make_generator`: a CPU generator seeded by (seed, epoch, step, process), e.g. for
  the views of a step.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..version import renamed_names

__all__ = ["BatchPlan", "derive_seed", "epoch_batches", "make_generator", "process_slice"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. (seed, epoch, step, process))."""
    digest = hashlib.sha256(json.dumps([int(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def epoch_batches(num_images: int, global_batch: int, seed: int, epoch: int) -> torch.Tensor:
    """Indices of one epoch as int64 (steps, global_batch): a permutation seeded from (seed, epoch), drop_last.

    Every process computes the same permutation; :func:`process_slice` gives each its part of a batch.
    """
    if global_batch < 1 or num_images < global_batch:
        raise ValueError(f"global batch {global_batch} needs 1 <= batch <= number of images ({num_images})")
    perm = torch.randperm(num_images, generator=make_generator(seed, epoch))
    steps = num_images // global_batch
    return perm[: steps * global_batch].view(steps, global_batch)


def process_slice(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Process ``rank``'s contiguous share of a global batch (global_batch,) -> (global_batch / world,)."""
    if batch.shape[0] % world:
        raise ValueError(f"global batch {batch.shape[0]} is not divisible by the {world} processes")
    per = batch.shape[0] // world
    return batch[rank * per : (rank + 1) * per]


class BatchPlan:
    """The row indices of every step: global step -> (epoch, step within the epoch, this process's row indices
    (global_batch / world,)).

    The epoch's permutation depends only on (seed, epoch), so a resumed run at step s draws the same
    rows as an uninterrupted one; the permutation is computed once per epoch.
    """

    def __init__(self, num_images: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.num_images, self.global_batch, self.seed = num_images, global_batch, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = num_images // global_batch
        self._epoch: tuple[int, torch.Tensor] | None = None

    def __call__(self, step: int) -> tuple[int, int, torch.Tensor]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches(self.num_images, self.global_batch, self.seed, epoch))
        return epoch, in_epoch, process_slice(self._epoch[1][in_epoch], self.rank, self.world)


__getattr__ = renamed_names(__name__, {"StepBatches": "BatchPlan"})  # the former name, until it goes
