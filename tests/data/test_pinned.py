"""Tests of mvssl_hub.data.pinned: where a split lives and the batch gather (CPU; the CUDA-only parts run in
gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

import mvssl_hub.data.pinned as pinned
from mvssl_hub.data.pinned import RowGather, device_keep_limit, place_split


def test_keep_limit_follows_free_memory() -> None:
    gib = 2**30
    assert device_keep_limit("cuda", 0.5, mem_get_info=lambda d: (40 * gib, 80 * gib)) == 20 * gib
    assert device_keep_limit("cuda:1", 0.25, mem_get_info=lambda d: (8 * gib, 16 * gib)) == 2 * gib
    assert device_keep_limit("cpu") == 0
    with pytest.raises(ValueError, match="fraction"):
        device_keep_limit("cuda", 1.5)


def test_place_split(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)  # 480 bytes
    assert place_split(images, "cpu") is images
    moved = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: moved.append(a) or self)
    assert place_split(images, "cuda", max_device_bytes=480) is images and moved == [(torch.device("cuda"),)]  # fits: moved
    moved.clear()
    monkeypatch.setattr(pinned, "device_keep_limit", lambda device: 479)

    def no_pinning(self):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pinning)
    assert place_split(images, "cuda") is images and moved == []  # too big, pinning unavailable: as is


def test_batch_gather_on_cpu_and_device_resident() -> None:
    images = torch.arange(6 * 3 * 2 * 2, dtype=torch.uint8).view(6, 3, 2, 2)
    idx = torch.tensor([4, 0, 4])
    gather = RowGather(images, "cpu", max_rows=3)
    assert torch.equal(gather(idx), images[idx])
    with pytest.raises(ValueError, match="at most 3 rows"):
        gather(torch.arange(4))


def test_batch_gather_double_buffers_host_split() -> None:
    """Host split, non-CPU target (``meta`` stands in for CUDA): rows land in alternating reusable
    buffers, so the gather of step t+1 does not overwrite the rows step t is still copying."""
    images = torch.arange(8 * 3 * 2 * 2, dtype=torch.uint8).view(8, 3, 2, 2)
    gather = RowGather(images, "meta", max_rows=4)
    assert len(gather._bufs) == 2
    first = gather(torch.tensor([7, 1, 2, 3]))
    assert first.device.type == "meta" and first.shape == (4, 3, 2, 2)
    buf0 = gather._bufs[0].clone()
    second = gather(torch.tensor([5, 6]))
    assert second.shape == (2, 3, 2, 2)
    assert torch.equal(gather._bufs[0], buf0) and torch.equal(buf0, images[[7, 1, 2, 3]])
    assert torch.equal(gather._bufs[1][:2], images[[5, 6]])
    ptrs = {gather._bufs[0].data_ptr(), gather._bufs[1].data_ptr()}
    gather(torch.tensor([0]))  # the third gather reuses the first buffer
    assert torch.equal(gather._bufs[0][:1], images[[0]]) and len(ptrs) == 2 and gather.waits == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_gather_cuda_no_sync() -> None:
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    for split in (images.pin_memory(), images.cuda()):
        gather = RowGather(split, "cuda", max_rows=16)
        gather(torch.arange(16))  # warm-up (allocations)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            outs = [gather(torch.randperm(64)[:16]) for _ in range(4)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(o.device.type == "cuda" and o.shape == (16, 3, 8, 8) for o in outs)
    idx = torch.tensor([3, 9, 3])
    assert torch.equal(RowGather(images.pin_memory(), "cuda", 3)(idx).cpu(), images[idx])
