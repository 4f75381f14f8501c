"""The step sequence of the training recipes: seeded per-epoch batches, per-step generators, the LR schedule.

- :func:`epoch_batches` / :func:`process_slice` / :class:`StepBatches`: a seeded per-epoch permutation cut
  into global batches (drop_last), each process taking its contiguous slice of every global batch, so a
  resumed run draws exactly the rows an uninterrupted one would.
- :func:`make_generator`: a CPU generator seeded by (seed, epoch, step, process) for the views of a step.
- :func:`lr_factor`: linear warm-up, then constant or cosine.
- :class:`TrainingClock`: seconds of training (wall-clock or this process's CPU time), pausable.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["StepBatches", "TrainingClock", "derive_seed", "epoch_batches", "expected_total_steps", "lr_factor",
           "make_generator", "process_slice"]


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


class StepBatches:
    """Global step -> (epoch, step within the epoch, this process's row indices (global_batch / world,)).

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


def lr_factor(step: int, total_steps: int, *, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then constant or cosine to 0 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def expected_total_steps(step: int, total_steps: int, time_budget: float | None, elapsed: float, start_step: int,
                         start_elapsed: float) -> int:
    """The step a run will stop at: ``total_steps``, or sooner when ``time_budget`` (seconds of the run's clock)
    runs out first at the pace since ``(start_step, start_elapsed)``; what a progress bar's total and ETA use."""
    if time_budget is None or step <= start_step or elapsed <= start_elapsed:
        return total_steps
    pace = (step - start_step) / (elapsed - start_elapsed)  # steps per second of the clock
    return max(step, min(total_steps, step + round(pace * max(0.0, time_budget - elapsed))))


class TrainingClock:
    """Seconds of training, resumable from ``offset``, with evaluation and checkpoint time paused out.

    ``mode="wall"`` reads ``time.perf_counter``; ``mode="process"`` reads this process's CPU time
    (``time.process_time``), which on a shared machine with one thread per run measures the work a run
    did rather than how much of the machine it got.
    """

    def __init__(self, mode: str = "wall", offset: float = 0.0) -> None:
        if mode not in ("wall", "process"):
            raise ValueError(f"TrainingClock: mode must be 'wall' or 'process', got {mode!r}")
        self._now = time.perf_counter if mode == "wall" else time.process_time
        self._offset, self._start = offset, self._now()

    def elapsed(self) -> float:
        """Seconds of training so far (``offset`` included)."""
        return self._offset + self._now() - self._start

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside the ``with`` block is not counted."""
        self._offset = self.elapsed()
        try:
            yield
        finally:
            self._start = self._now()
