"""The batch of step s: one interface for the training loop, whether the split is in memory or streamed.

A step source is called with a step and returns a :class:`StepBatch`: the epoch, the step inside it, this process's
uint8 images on the training device and their labels (or None). :class:`MemoryStepSource` takes the step's row
indices from a :class:`~.sampling.BatchPlan` (seeded by (seed, epoch)) and gathers the rows
(:class:`~.pinned.RowGather`); :class:`StreamStepSource` moves what a :class:`~.stream.StreamDecoder` decoded (in
DataLoader workers, in an order fixed by (seed, epoch, step)) to the device. Either way a resumed run gets exactly
the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..version import renamed_names
from .pinned import RowGather, place_split
from .sampling import BatchPlan

__all__ = ["MemoryStepSource", "StepBatch", "StreamStepSource"]


class StepBatch(NamedTuple):
    """What a step source gives for one step."""

    epoch: int
    step_in_epoch: int
    images: torch.Tensor  # uint8 (per-process batch, 3, S, S), on the device
    labels: torch.Tensor | None  # int64 on the device, or None


class MemoryStepSource:
    """Step -> :class:`StepBatch` of an in-memory split: rows on the device when they fit, else gathered through
    pinned buffers."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, global_batch: int, seed: int,
                 device: torch.device | str, rank: int = 0, world: int = 1, with_labels: bool = False) -> None:
        self.plan = BatchPlan(len(images), global_batch, seed, rank, world)
        self.gather = RowGather(place_split(images, device), device, global_batch // world)
        self.labels = labels if with_labels else None
        self.device = device

    def __call__(self, step: int) -> StepBatch:
        epoch, in_epoch, idx = self.plan(step)
        images = self.gather(idx)
        labels = None if self.labels is None else self.labels[idx].to(self.device, non_blocking=True)
        return StepBatch(epoch, in_epoch, images, labels)

    def close(self) -> None:
        pass


class StreamStepSource:
    """Step -> :class:`StepBatch` of a streaming split: what its :class:`~.stream.StreamDecoder`
    (``StreamingSplit.batches(...)``) decoded, moved to the device."""

    def __init__(self, stream: Callable, device: torch.device | str) -> None:
        self.stream, self.device = stream, device

    def __call__(self, step: int) -> StepBatch:
        epoch, in_epoch, images, labels = self.stream(step)
        return StepBatch(epoch, in_epoch, images.to(self.device, non_blocking=True),
                         None if labels is None else labels.to(self.device, non_blocking=True))

    def close(self) -> None:
        self.stream.close()


# the former names, until they go
__getattr__ = renamed_names(__name__, {"MemoryBatches": "MemoryStepSource", "StreamedBatches": "StreamStepSource"})
