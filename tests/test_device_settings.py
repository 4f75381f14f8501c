"""Tests of mvssl_hub.device_settings and mvssl_hub.pinned (CPU; the CUDA-only parts run in gpu_check.sh)."""

from __future__ import annotations

import os

import pytest
import torch

import mvssl_hub.data.pinned as pinned
from mvssl_hub.data.pinned import BatchGather, device_keep_limit, place_split
from mvssl_hub.train.backends import configure_backends, make_adam


def test_cuda_speed_settings_applied_and_restored(restore_backends) -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    prev = configure_backends("cuda", deterministic=False)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert not torch.are_deterministic_algorithms_enabled()
    assert (prev.cudnn_benchmark, prev.matmul_fp32_precision, prev.conv_fp32_precision) == (False, "ieee", "ieee")
    prev.restore()
    assert not torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "ieee"
    configure_backends("cuda:0", deterministic=False, tf32=False)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee" == torch.backends.cudnn.conv.fp32_precision


def test_deterministic_settings_applied_and_restored(restore_backends, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    prev = configure_backends(torch.device("cuda"), deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert prev.cublas_workspace_config is None and prev.cudnn_benchmark
    configure_backends("cpu", deterministic=True, strict=True)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    prev.restore()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()


def test_cpu_leaves_cuda_flags_alone(restore_backends) -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    configure_backends("cpu", deterministic=False)
    assert not torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_make_adam_fused_on_cuda_foreach_elsewhere() -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    cpu, cuda = make_adam(params, 1e-3, 1e-6, "cpu"), make_adam(params, 1e-3, 1e-6, torch.device("cuda"))
    assert cpu.defaults["foreach"] and not cpu.defaults["fused"]
    assert cuda.defaults["fused"] and not cuda.defaults["foreach"]
    for opt in (cpu, cuda):
        assert (opt.defaults["lr"], opt.defaults["weight_decay"]) == (1e-3, 1e-6)
        assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)


# --------------------------------------------------------------------------------------------- placement

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
    gather = BatchGather(images, "cpu", max_rows=3)
    assert torch.equal(gather(idx), images[idx])
    with pytest.raises(ValueError, match="at most 3 rows"):
        gather(torch.arange(4))


def test_batch_gather_double_buffers_host_split() -> None:
    """Host split, non-CPU target (``meta`` stands in for CUDA): rows land in alternating reusable
    buffers, so the gather of step t+1 does not overwrite the rows step t is still copying."""
    images = torch.arange(8 * 3 * 2 * 2, dtype=torch.uint8).view(8, 3, 2, 2)
    gather = BatchGather(images, "meta", max_rows=4)
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
        gather = BatchGather(split, "cuda", max_rows=16)
        gather(torch.arange(16))  # warm-up (allocations)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            outs = [gather(torch.randperm(64)[:16]) for _ in range(4)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(o.device.type == "cuda" and o.shape == (16, 3, 8, 8) for o in outs)
    idx = torch.tensor([3, 9, 3])
    assert torch.equal(BatchGather(images.pin_memory(), "cuda", 3)(idx).cpu(), images[idx])
