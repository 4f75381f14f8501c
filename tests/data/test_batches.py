"""MemoryBatches gives, step by step, the rows StepBatches plans and BatchGather gathers (and their labels)."""

from __future__ import annotations

import torch

from mvssl_hub.data.batches import MemoryBatches, StreamedBatches
from mvssl_hub.data.sampling import StepBatches


def test_memory_batches_follow_the_step_plan() -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    source = MemoryBatches(images, labels, 8, seed=3, device="cpu", rank=1, world=2, with_labels=True)
    plan = StepBatches(40, 8, 3, 1, 2)
    for step in (0, 4, 5, 12):
        epoch, in_epoch, idx = plan(step)
        got = source(step)
        assert (got.epoch, got.step_in_epoch) == (epoch, in_epoch)
        assert torch.equal(got.images, images[idx]) and torch.equal(got.labels, labels[idx])
    assert MemoryBatches(images, labels, 8, seed=3, device="cpu")(0).labels is None


def test_streamed_batches_wrap_the_stream() -> None:
    class Stream:
        closed = False

        def __call__(self, step: int):
            return 0, step, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), None

        def close(self) -> None:
            self.closed = True

    stream = Stream()
    source = StreamedBatches(stream, "cpu")
    assert source(5).step_in_epoch == 5 and source(5).labels is None
    source.close()
    assert stream.closed
