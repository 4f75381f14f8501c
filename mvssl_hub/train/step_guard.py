"""Skip non-finite training steps with at most one host sync per step (none with a fused optimizer).

The loss never reads the device (see :mod:`mvssl_hub.losses`): a non-finite batch gives a non-finite
loss. One flag per step then decides whether the optimizer step counts:

- :func:`finite_flag`: a () bool on the device, the AND of ``isfinite`` over the loss (and any extra
  tensors) and, under DDP, over every rank (one all-reduce, enqueued, not waited for).
- :class:`StepGuard`: backward always runs (so every rank issues the same collectives); then
  ``guard.step(optimizer, loss)`` (read it as ``GradScaler.step(optimizer)``): either
  ``bool(ok)`` decides whether ``optimizer.step()`` runs (the one sync of the step), or, when the
  optimizer is a fused Adam/AdamW, the flag is handed to the fused kernel as ``found_inf`` (the
  mechanism GradScaler uses) and the step is skipped on the device: no sync at all. BatchNorm running
  statistics of a skipped step are restored (on the host path by a copy, on the device path by
  ``torch.where``). Counters are Python ints (sync path) or device tensors read by :meth:`StepGuard.poll`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import distributed as distributed_mod
from ..version import MOVED_UNTIL

__all__ = ["BufferSnapshot", "StepCounts", "StepGuard", "finite_flag", "nonfinite_views", "supports_device_skip"]


def finite_flag(*tensors: Tensor, distributed: bool = False) -> Tensor:
    """() bool on the first tensor's device: every element of every tensor is finite (on every rank when
    ``distributed`` and a process group of world size > 1 exists). Device ops only, no host read."""
    if not tensors:
        raise ValueError("finite_flag needs at least one tensor")
    flags = [torch.isfinite(t.detach()).all() for t in tensors]
    ok = flags[0] if len(flags) == 1 else torch.stack(flags).all()
    if distributed and distributed_mod.world_size() > 1:
        import torch.distributed as dist

        as_int = ok.to(torch.int32)  # NCCL has no bool all-reduce
        dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
        ok = as_int.bool()
    return ok


def nonfinite_views(z: Tensor) -> list[int]:
    """Indices of the views of z (M, N, d) holding nan/inf. Reads the device: for messages on bad steps."""
    bad = ~torch.isfinite(z.detach()).flatten(1).all(dim=1)
    return [int(i) for i in bad.nonzero().flatten().tolist()]


class BufferSnapshot:
    """Pre-allocated copies of some buffers (e.g. BatchNorm running statistics), refreshed per step."""

    def __init__(self, buffers: Iterable[Tensor]) -> None:
        self.buffers = list(buffers)
        self.saved = [b.detach().clone() for b in self.buffers]

    def take(self) -> None:
        """Copy the buffers' current values into the snapshot (device copies, no sync)."""
        with torch.no_grad():
            for s, b in zip(self.saved, self.buffers):
                s.copy_(b)

    def restore(self) -> None:
        """Put the snapshot back."""
        with torch.no_grad():
            for s, b in zip(self.saved, self.buffers):
                b.copy_(s)

    def restore_unless(self, ok: Tensor) -> None:
        """Keep the buffers where ``ok`` (a () bool on their device), else restore them; no sync."""
        with torch.no_grad():
            for s, b in zip(self.saved, self.buffers):
                b.copy_(torch.where(ok, b, s))


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under an accelerate ``AcceleratedOptimizer`` (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def supports_device_skip(optimizer: Any) -> bool:
    """True for a fused Adam/AdamW without a GradScaler: its step honours ``found_inf`` on the device."""
    inner = _inner_optimizer(optimizer)
    return (isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)) and bool(inner.defaults.get("fused"))
            and getattr(optimizer, "scaler", None) is None)


@dataclass(frozen=True)
class StepCounts:
    """Non-finite steps: ``skipped`` in all, ``streak`` ending at the last step, ``max_streak`` longest seen."""

    skipped: int
    streak: int
    max_streak: int


class StepGuard:
    """One finiteness decision per step; skipped steps change neither parameters, optimizer state nor BN stats.

    Use (the loop calls backward on every step, finite or not)::

        guard = StepGuard(optimizer, bn_buffers, distributed=world > 1)
        guard.before_forward()                  # snapshot BN running statistics
        z = model(views); loss = loss_fn(z.float())
        accelerator.backward(loss)
        ok = guard.step(optimizer, loss)        # optimizer.step() or not; () bool on the device
        optimizer.zero_grad(set_to_none=True); scheduler.step()
        counts = guard.poll()                   # free on the sync path; one read on the device path

    ``device_skip`` (default: :func:`supports_device_skip`) passes the flag to a fused Adam as
    ``found_inf`` instead of reading it: zero syncs per step; read :meth:`poll` only at log steps.
    """

    def __init__(self, optimizer: Any, buffers: Iterable[Tensor] = (), *, distributed: bool = False,
                 device_skip: bool | None = None) -> None:
        self.optimizer = optimizer
        self.snapshot = BufferSnapshot(buffers)
        self.distributed = distributed
        self.device_skip = supports_device_skip(optimizer) if device_skip is None else device_skip
        if self.device_skip and not supports_device_skip(optimizer):
            raise ValueError("StepGuard: device_skip needs a fused torch.optim.Adam/AdamW without a GradScaler")
        self._skipped = self._streak = self._max_streak = 0
        self._dev: Tensor | None = None  # (skipped, streak, max_streak) int64 on the device

    def before_forward(self) -> None:
        """Snapshot the buffers that a skipped step must not change (call before the forward)."""
        self.snapshot.take()

    def step(self, optimizer: Any, loss: Tensor | None = None, *extra: Tensor) -> Tensor:
        """``optimizer.step()`` unless ``loss`` (or an ``extra`` tensor, on any rank) is non-finite; ``optimizer``
        is the guard's own (ValueError otherwise).

        Returns the () bool flag on the device. Sync path: one ``bool(flag)``; device path: none. The older call
        ``step(loss, *extra)`` works until mvssl-hub 0.2.0, with a DeprecationWarning.
        """
        if isinstance(optimizer, Tensor):  # step(loss, *extra), the call before the optimizer was named
            warnings.warn(f"StepGuard.step(loss) is now StepGuard.step(optimizer, loss); the old call goes in "
                          f"mvssl-hub {MOVED_UNTIL}", DeprecationWarning, stacklevel=2)
            optimizer, loss, extra = self.optimizer, optimizer, (() if loss is None else (loss,)) + extra
        if optimizer is not self.optimizer:
            raise ValueError("StepGuard.step: not the optimizer this guard was made for (one guard per optimizer)")
        if loss is None:
            raise TypeError("StepGuard.step(optimizer, loss): the loss is missing")
        ok = finite_flag(loss, *extra, distributed=self.distributed)
        if self.device_skip:
            self._device_step(ok)
        elif bool(ok):  # the one host sync of the step
            self.optimizer.step()
            self._streak = 0
        else:
            self.snapshot.restore()
            self._skipped += 1
            self._streak += 1
            self._max_streak = max(self._max_streak, self._streak)
        return ok

    def _device_step(self, ok: Tensor) -> None:
        inner = _inner_optimizer(self.optimizer)
        inner.found_inf = (~ok).to(torch.float32)  # type: ignore[attr-defined]
        inner.grad_scale = None  # type: ignore[attr-defined]
        try:
            self.optimizer.step()
        finally:
            del inner.found_inf, inner.grad_scale  # type: ignore[attr-defined]
        self.snapshot.restore_unless(ok)
        bad = (~ok).to(torch.int64)
        if self._dev is None:  # device increments over the host counts; the streak carries on
            self._dev = torch.zeros(3, dtype=torch.int64, device=ok.device)
            self._dev[1:] += self._streak  # a Python scalar: no host-to-device copy
        skipped, streak, longest = self._dev.unbind(0)
        streak = (streak + 1) * bad
        self._dev = torch.stack((skipped + bad, streak, torch.maximum(longest, streak)))

    def poll(self) -> StepCounts:
        """Counts since the guard was made (or since :meth:`load_counts`); reads the device on the device path."""
        if self._dev is not None:
            skipped, streak, longest = (int(v) for v in self._dev.tolist())
            return StepCounts(self._skipped + skipped, streak, max(self._max_streak, longest))
        return StepCounts(self._skipped, self._streak, self._max_streak)

    def load_counts(self, skipped: int, streak: int) -> None:
        """Resume the counters (e.g. ``nan_skipped`` / ``nan_streak`` from a run state's training state)."""
        self._skipped, self._streak, self._max_streak, self._dev = skipped, streak, streak, None
