"""Host syncs per pretraining step: the step built from the device-side helpers vs the former loop logic.

Both variants run the same model, augmentation and loss; they differ only in the loop around them:

- ``new``: ``RowGather`` (index sent non_blocking / pinned double-buffered gather), ``MultiViewAugment``,
  bf16 forward, loss, backward, ``StepGuard.step`` (one ``bool(ok)``; with a fused Adam none), zero_grad:
  the body of recipes/pretrain.py's ``train_step``.
- ``legacy``: what recipes/pretrain.py's loop did before those helpers: ``idx.to(device)`` (blocking), gather,
  augment, BN-buffer clones, ``bool(isfinite(z).all())``, loss, ``bool(isfinite(loss))``, backward, step.
  (Its augmentation is already the new one, so only the loop's own syncs differ.)

It keeps its own two step functions rather than calling the recipe's ``train_step``, because it compares a
legacy variant the recipe no longer has against the new one, on the same parts, on purpose.

CUDA: each step runs under ``torch.cuda.set_sync_debug_mode("warn")`` and the warnings are counted per
step. CPU (the dry run): host reads of tensor values (``.item()``, ``bool``, ...) are counted instead,
except those that stay on the host on a CUDA run too: torch.optim's step counters (CPU tensors for a
foreach Adam) and the augmentation's CPU-generator parameters. On CUDA each counted read is a sync.
Variants: ``new`` (make_adam: fused on CUDA, foreach on CPU), ``new_fused`` (fused Adam forced: the
StepGuard skips bad steps on the device, no sync; only run where make_adam is not already fused),
``legacy``. JSON, under the harness's envelope -> --out.

    python benchmarks/gpu_sync_count.py --device cuda --steps 20
    python benchmarks/gpu_sync_count.py --smoke      # seconds on the CPU: width 4, batch 8, 64 images, 2 steps
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's mvssl_hub

from mvssl_hub.data.pinned import RowGather, place_split
from mvssl_hub.data.sampling import BatchPlan, make_generator
from mvssl_hub.device import bf16_is_fast
from mvssl_hub.losses import build_loss, recommended_beta
from mvssl_hub.models import build_ssl_model
from mvssl_hub.train.backends import apply_memory_format, configure_backends, make_adam
from mvssl_hub.train.step_guard import StepGuard
from mvssl_hub.views import MultiViewAugment, get_view_preset

from harness import EMBEDDED_DATA, add_common_args, default_out, write_result

_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
# Host-side tensors by design (not syncs on CUDA): optimizer step counters, CPU-generator parameters.
_HOST_SIDE = (("torch/optim/", ""), ("mvssl_hub/views/", "sample_params"))


def _host_side(frame: Any) -> bool:
    """Whether a read happens in code whose tensors live on the host on a CUDA run too."""
    while frame is not None:
        path, func = frame.f_code.co_filename.replace("\\", "/"), frame.f_code.co_name
        if any(part in path and (not fn or fn == func) for part, fn in _HOST_SIDE):
            return True
        frame = frame.f_back
    return False


@dataclass
class Parts:
    """Everything one pretraining step touches (built by :func:`build_parts`)."""

    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    augment: MultiViewAugment
    images: torch.Tensor  # the placed split
    gather: RowGather
    batches: BatchPlan
    guard: StepGuard
    bn_buffers: list[torch.Tensor]
    num_views: int
    bf16: bool
    seed: int = 0


def build_parts(device: torch.device, images: torch.Tensor, *, width: int = 64, proj_dim: int = 256,
                num_views: int = 4, batch: int = 128, seed: int = 0, deterministic: bool = False,
                fused: bool | None = None) -> Parts:
    """The recommended recipe's pieces (ResNet-18 small-image stem, BT d=256, recommended beta) on ``device``."""
    configure_backends(device, deterministic)
    bf16 = bf16_is_fast(device)
    torch.manual_seed(seed)
    model = build_ssl_model("resnet18", small_images=True, width=width, proj_dim=proj_dim)
    channels_last = apply_memory_format(model, device)
    model = model.to(device).train()
    optimizer = (make_adam(model.parameters(), 1e-3, 1e-6, device) if fused is None else
                 torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6, fused=fused or None,
                                  foreach=None if fused else True))
    loss_fn = build_loss("barlowtwins", recommended_beta("barlowtwins", proj_dim, num_views))
    augment = MultiViewAugment(get_view_preset("cifar10"), output_dtype=torch.bfloat16 if bf16 else torch.float32,
                               channels_last=channels_last)
    placed = place_split(images, device)
    bn = [b for name, b in model.named_buffers() if "running" in name or "num_batches" in name]
    return Parts(device, model, optimizer, loss_fn, augment, placed, RowGather(placed, device, batch),
                 BatchPlan(images.shape[0], batch, seed), StepGuard(optimizer, bn), bn, num_views, bf16, seed)


def new_step(p: Parts, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step with the device-side helpers; returns (loss, ok) as device tensors (nothing read back)."""
    epoch, in_epoch, idx = p.batches(step)
    images = p.gather(idx)
    views = p.augment(images, p.num_views, generator=make_generator(p.seed, epoch, in_epoch, 0))
    p.guard.before_forward()
    with torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=p.bf16):
        z = p.model(views)
    loss = p.loss_fn(z.float())
    loss.backward()
    ok = p.guard.step(p.optimizer, loss)
    p.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), ok


def legacy_step(p: Parts, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step as recipes/pretrain.py's loop does it today (single process)."""
    epoch, in_epoch, idx = p.batches(step)
    images = p.images[idx.to(p.images.device)].to(p.device, non_blocking=True)
    views = p.augment(images, p.num_views, generator=make_generator(p.seed, epoch, in_epoch, 0))
    saved = [b.clone() for b in p.bn_buffers]
    with torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=p.bf16):
        z = p.model(views)
    ok = torch.isfinite(z).all()
    loss = torch.full((), float("nan"), device=p.device)
    if bool(ok):
        loss = p.loss_fn(z.float())
        ok = torch.isfinite(loss)
    if bool(ok):
        loss.backward()
        p.optimizer.step()
    else:
        with torch.no_grad():
            for b, s in zip(p.bn_buffers, saved):
                b.copy_(s)
    p.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), ok


@contextlib.contextmanager
def count_syncs(device: torch.device) -> Iterator[Callable[[], int]]:
    """Count host syncs inside the block: CUDA sync-debug warnings, or host reads of tensors on the CPU."""
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield lambda: sum("synchronizing" in str(w.message) for w in caught)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return
    count = [0]
    saved = {k: torch.Tensor.__dict__.get(k) for k in _READS}
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: Any, _orig: Any = original, **k: Any) -> Any:
            if not _host_side(sys._getframe(1)):
                count[0] += 1
            return _orig(self, *a, **k)

        setattr(torch.Tensor, name, counted)
    try:
        yield lambda: count[0]
    finally:
        for k, v in saved.items():
            if v is None:
                delattr(torch.Tensor, k)
            else:
                setattr(torch.Tensor, k, v)


def syncs_per_step(p: Parts, step_fn: Callable[[Parts, int], Any], steps: int, first: int) -> list[int]:
    """Sync count of each of ``steps`` steps starting at global step ``first``."""
    counts = []
    for s in range(first, first + steps):
        with count_syncs(p.device) as seen:
            step_fn(p, s)
            counts.append(seen())
    return counts


def load_images(data: str, limit: int | None) -> torch.Tensor:
    from mvssl_hub.data.splits import load_split

    return load_split(data, "train", limit=limit).images


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(EMBEDDED_DATA))
    ap.add_argument("--limit", type=int, default=None, help="first images of the split")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="counted steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="uncounted steps per variant first")
    add_common_args(ap, "gpu_sync_count")
    args = ap.parse_args(argv)
    if args.smoke:  # the width-4 network runs contiguous on the CPU (a oneDNN channels_last fault), as in the recipe
        args.width, args.batch, args.steps, args.warmup, args.limit = 4, 8, 2, 1, 64
    out = default_out("gpu_sync_count", args.smoke, args.out)
    device = torch.device(args.device)
    images = load_images(args.data, args.limit)
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "counted": "CUDA sync-debug warnings" if device.type == "cuda" else "host reads of tensor values (CPU proxy)",
        "settings": {"width": args.width, "batch": args.batch, "views": args.views, "steps": args.steps,
                     "smoke": args.smoke},
        "variants": {},
    }
    variants = [("new", new_step, None), ("legacy", legacy_step, None)]
    if device.type != "cuda":
        variants.insert(1, ("new_fused", new_step, True))
    for name, fn, fused in variants:
        p = build_parts(device, images, width=args.width, num_views=args.views, batch=args.batch, fused=fused)
        for s in range(args.warmup):
            fn(p, s)
        t = time.perf_counter()
        counts = syncs_per_step(p, fn, args.steps, args.warmup)
        if device.type == "cuda":
            torch.cuda.synchronize()
        result["variants"][name] = {
            "syncs_per_step": counts, "max": max(counts), "mean": sum(counts) / len(counts),
            "seconds_per_step_under_debug_mode": (time.perf_counter() - t) / args.steps,
            "optimizer": "fused Adam" if p.optimizer.defaults.get("fused") else "foreach Adam",
            "device_skip": p.guard.device_skip, "gather_waits": p.gather.waits,
        }
        print(f"{name}: syncs per step {counts} ({result['variants'][name]['optimizer']})", flush=True)
    return write_result(out, "gpu_sync_count", result, None if argv is None else ["benchmarks/gpu_sync_count.py", *argv])


if __name__ == "__main__":
    main()
