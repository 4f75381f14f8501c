"""A step source gives, step by step, the rows a BatchPlan plans and RowGather gathers (and their labels); the
former names of the data wing's batch classes still import, for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest
import torch

from mvssl_hub.data.batches import MemoryStepSource, StreamStepSource
from mvssl_hub.data.sampling import BatchPlan


def test_memory_batches_follow_the_step_plan() -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    source = MemoryStepSource(images, labels, 8, seed=3, device="cpu", rank=1, world=2, with_labels=True)
    plan = BatchPlan(40, 8, 3, 1, 2)
    for step in (0, 4, 5, 12):
        epoch, in_epoch, idx = plan(step)
        got = source(step)
        assert (got.epoch, got.step_in_epoch) == (epoch, in_epoch)
        assert torch.equal(got.images, images[idx]) and torch.equal(got.labels, labels[idx])
    assert MemoryStepSource(images, labels, 8, seed=3, device="cpu")(0).labels is None


def test_streamed_batches_wrap_the_stream() -> None:
    class Stream:
        closed = False

        def __call__(self, step: int):
            return 0, step, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), None

        def close(self) -> None:
            self.closed = True

    stream = Stream()
    source = StreamStepSource(stream, "cpu")
    assert source(5).step_in_epoch == 5 and source(5).labels is None
    source.close()
    assert stream.closed


@pytest.mark.parametrize(("module", "old", "new"), [
    ("mvssl_hub.data.batches", "MemoryBatches", "MemoryStepSource"),
    ("mvssl_hub.data.batches", "StreamedBatches", "StreamStepSource"),
    ("mvssl_hub.data.sampling", "StepBatches", "BatchPlan"),
    ("mvssl_hub.data.stream", "StreamBatches", "StreamDecoder"),
    ("mvssl_hub.data.pinned", "BatchGather", "RowGather"),
])
def test_the_former_names_import_with_a_warning_naming_the_new_one(module: str, old: str, new: str) -> None:
    imported = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is now {module}\.{new}; .* 0\.2\.0"):
        found = getattr(imported, old)
    assert found is getattr(imported, new)
    with pytest.raises(AttributeError, match=f"module '{module}' has no attribute 'NoSuchBatches'"):
        _ = imported.NoSuchBatches


def test_from_import_of_a_former_name_warns_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning, match="BatchGather is now") as caught:
        from mvssl_hub.data.pinned import BatchGather  # noqa: F401
    assert caught[0].filename == __file__
