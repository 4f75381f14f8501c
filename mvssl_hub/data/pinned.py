"""Where a decoded training split lives, and a batch gather that never blocks the host on the GPU.

- :func:`device_keep_limit`: how many bytes of uint8 images may stay on the GPU, sized from the free
  memory (``torch.cuda.mem_get_info``) instead of a fixed 2 GB: a CIFAR-10 split (150 MB) or
  ImageNet-100 at 146 px (~8 GB) stays on an 80/141 GB GPU; on a 16 GB one the large split goes to
  pinned host memory.
- :func:`place_split`: the split on the device when it fits that limit, else in pinned host memory
  (plain host memory when pinning is not possible, e.g. no CUDA).
- :class:`RowGather`: rows ``idx`` of the placed split on the device. Split on the device: the index
  travels from pinned memory with a ``non_blocking`` copy (no sync) and the gather runs on the GPU.
  Split on the host: ``torch.index_select(out=)`` into one of two reusable pinned buffers, then a
  ``non_blocking`` copy; a CUDA event per buffer makes the gather wait (rarely) until the copy that
  last read the buffer has finished, so the next step's gather cannot overwrite data in flight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..version import renamed_names

__all__ = ["RowGather", "device_keep_limit", "place_split"]


def device_keep_limit(device: torch.device | str, fraction: float = 0.5,
                      mem_get_info: Callable[[torch.device], tuple[int, int]] | None = None) -> int:
    """Bytes of a split that may stay on ``device``: ``fraction`` of its free memory now (0 off CUDA).

    Call after the model and optimizer are on the device; the rest of the free memory is left to
    activations. ``mem_get_info`` (free, total) defaults to ``torch.cuda.mem_get_info``.
    """
    device = torch.device(device)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"device_keep_limit: fraction must be in [0, 1], got {fraction!r}")
    if device.type != "cuda":
        return 0
    free, _total = (mem_get_info or torch.cuda.mem_get_info)(device)
    return int(free * fraction)


def _try_pin(images: Tensor) -> Tensor:
    try:
        return images.pin_memory()
    except RuntimeError:  # no CUDA driver / pinning unavailable: pageable memory still works
        return images


def place_split(images: Tensor, device: torch.device | str, max_device_bytes: int | None = None) -> Tensor:
    """uint8 (N, C, H, W) -> the same tensor on ``device`` when it fits ``max_device_bytes`` (default:
    :func:`device_keep_limit`), else pinned on the host. Unchanged for a CPU device."""
    device = torch.device(device)
    if device.type == "cpu":
        return images
    limit = device_keep_limit(device) if max_device_bytes is None else max_device_bytes
    if images.numel() * images.element_size() <= limit:
        return images.to(device)
    return _try_pin(images)


class RowGather:
    """``gather(idx)``: rows ``idx`` (int64 (B,), CPU) of a placed split -> (B, C, H, W) on ``device``.

    No host sync on CUDA in either placement (see the module docstring). ``max_rows`` is the largest
    B (the per-process batch). ``waits`` counts gathers that found their buffer's last copy still
    running and had to wait for it (expected 0 with two buffers).
    """

    def __init__(self, images: Tensor, device: torch.device | str, max_rows: int, buffers: int = 2) -> None:
        self.images, self.device, self.max_rows = images, torch.device(device), max_rows
        self.on_device = images.device.type != "cpu"
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.waits = 0
        self._bufs: list[Tensor] = []
        self._events: list[torch.cuda.Event | None] = []
        self._next = 0
        if not self.on_device and self.device.type != "cpu":
            shape = (max_rows, *images.shape[1:])
            self._bufs = [torch.empty(shape, dtype=images.dtype, pin_memory=self.cuda) for _ in range(buffers)]
            self._events = [None] * buffers

    def _index(self, idx: Tensor) -> Tensor:
        """The index on the split's device; from pinned memory without a sync on CUDA."""
        if not self.on_device:
            return idx
        if self.images.device.type == "cuda":
            return idx.pin_memory().to(self.images.device, non_blocking=True)
        return idx.to(self.images.device)

    def __call__(self, idx: Tensor) -> Tensor:
        if idx.dim() != 1 or idx.shape[0] > self.max_rows:
            raise ValueError(f"RowGather: idx must be 1-D with at most {self.max_rows} rows, got shape "
                             f"{tuple(idx.shape)}")
        if self.on_device or self.device.type == "cpu":
            return self.images.index_select(0, self._index(idx)).to(self.device)
        i = self._next
        self._next = (i + 1) % len(self._bufs)
        event = self._events[i]
        if event is not None and not event.query():
            self.waits += 1
            event.synchronize()  # the copy that last read this buffer is still running
        out = torch.index_select(self.images, 0, idx, out=self._bufs[i][: idx.shape[0]])
        moved = out.to(self.device, non_blocking=True)
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._events[i] = event
        return moved


__getattr__ = renamed_names(__name__, {"BatchGather": "RowGather"})  # the former name, until it goes
