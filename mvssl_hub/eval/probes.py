"""Frozen-feature evaluation: batched feature extraction, weighted kNN, and a linear probe on cached features.

Extraction runs under ``torch.inference_mode`` with bf16 autocast where the device computes bf16 fast
(CUDA with bf16, or a CPU with AMX / AVX512-BF16) and channels_last inputs. When ``torch.distributed``
is initialised with several processes (e.g. under ``accelerate launch``), each process extracts a
contiguous shard of the images and every process receives all N features, in order.

The kNN is the usual monitor of self-supervised training (k = 200, temperature 0.1, cosine similarity
of L2-normalised features; each of the k neighbours votes for its class with weight exp(sim / T)).
The linear probe follows the paper's protocol (Agrawal et al., NeurIPS 2024, read from their code): one
``nn.Linear`` on raw cached features, Adam lr 1e-3, weight decay 1e-6, 200 epochs, label smoothing 0.1.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import bf16_is_fast
from ..distributed import rank_and_world

__all__ = [
    "extract_features",
    "extract_multiview_features",
    "knn_accuracy",
    "knn_evaluate",
    "knn_predict",
    "linear_probe",
    "topk_accuracy",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Device helpers


def _module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on the main process when ``enabled``; a no-op object otherwise."""
    rank, _ = rank_and_world()
    if not enabled or rank != 0:
        return _NoBar()
    from tqdm.auto import tqdm

    unit = "epoch" if desc == "linear probe" else "img"
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Feature extraction


def _check_images(images: Any, where: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where}: images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{where}: images must be 4-D (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{where}: images is empty, shape {tuple(images.shape)}")
    return images


def _check_batch_size(batch_size: int, where: str) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")


def _is_channels_last(module: nn.Module) -> bool | None:
    """Whether the module's 4-D tensors are channels_last; None if no 4-D tensor tells the formats apart."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.dim() == 4:
            plain, cl = t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)
            if plain != cl:
                return cl
    return None


class _Runner:
    """Runs a backbone on ready inputs: eval mode, device, channels_last, optional bf16 autocast.

    ``restore()`` puts back the backbone's training flag, device and memory format.
    """

    def __init__(self, backbone: nn.Module, device: torch.device | str | None, bf16: bool | None,
                 channels_last: bool) -> None:
        self.orig_device = _module_device(backbone)
        self.device = torch.device(device) if device is not None else self.orig_device
        self.bf16 = bf16_is_fast(self.device) if bf16 is None else bool(bf16)
        self.channels_last = channels_last
        self.backbone = backbone
        self.was_training = backbone.training
        self.was_channels_last = _is_channels_last(backbone)
        backbone.eval()
        backbone.to(self.device)
        if channels_last:
            backbone.to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, 3, s, s) on ``device`` -> float32 (B, D) on ``device``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with ctx:
            out = self.backbone(x)
        if out.dim() != 2:
            raise ValueError(f"backbone must return (B, D) features, got shape {tuple(out.shape)}")
        return out.float()

    def restore(self) -> None:
        """Training flag, device and (if changed) memory format back to what they were before."""
        self.backbone.train(self.was_training)
        if self.device != self.orig_device:
            self.backbone.to(self.orig_device)
        if self.channels_last and self.was_channels_last is False:
            self.backbone.to(memory_format=torch.contiguous_format)


def _gather_rows(local: torch.Tensor, n_total: int, per_rank: int, device: torch.device) -> torch.Tensor:
    """All-gather equal-size (per_rank, D) shards from every rank; return the first n_total rows on CPU."""
    import torch.distributed as dist

    _, world = rank_and_world()
    # NCCL gathers CUDA tensors only; gloo gathers CPU tensors.
    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(per_rank, local.shape[1], dtype=local.dtype, device=comm_device)
    padded[: local.shape[0]] = local.to(comm_device)
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    return torch.cat(shards)[:n_total].cpu()


def _extract(
    images: torch.Tensor,
    batch_size: int,
    runner: _Runner,
    featurize: Callable[[torch.Tensor], torch.Tensor],
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """Shard over processes, run ``featurize`` (uint8 batch on device -> (B, D)) batch by batch, gather."""
    n = images.shape[0]
    rank, world = rank_and_world()
    per_rank = math.ceil(n / world)
    lo, hi = min(n, rank * per_rank), min(n, (rank + 1) * per_rank)
    out: list[torch.Tensor] = []
    bar = _progress(n, desc, progress)
    try:
        with torch.inference_mode():
            for start in range(lo, hi, batch_size):
                batch = images[start : min(hi, start + batch_size)].to(runner.device, non_blocking=True)
                out.append(featurize(batch).cpu())
                bar.update(batch.shape[0] * world)
            if not out:  # this rank got no rows (N < world): learn D from one image, contribute nothing
                out.append(featurize(images[:1].to(runner.device))[:0].cpu())
    finally:
        bar.close()
        runner.restore()
    local = torch.cat(out)
    if world == 1:
        return local
    return _gather_rows(local, n, per_rank, runner.device)


def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    transform: Transform | None,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    channels_last: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Features of every image: uint8 (N, 3, H, W) -> float32 (N, D) on the CPU.

    ``transform`` maps a uint8 batch (B, 3, H, W) on ``device`` to the network's float input (e.g.
    :class:`mvssl_hub.views.EvalTransform`); ``None`` feeds ``images`` as they are (already float).
    ``device`` defaults to the backbone's; the backbone is moved there, put in eval mode for the call
    (its training flag is restored afterwards) and converted to channels_last when asked. ``bf16=None``
    turns autocast on where :func:`bf16_is_fast`. Under several processes every process gets all N rows.
    """
    images = _check_images(images, "extract_features")
    _check_batch_size(batch_size, "extract_features")
    if transform is None and not images.is_floating_point():
        raise TypeError(f"extract_features: transform=None needs float images, got {images.dtype}")
    runner = _Runner(backbone, device, bf16, channels_last)

    def featurize(batch: torch.Tensor) -> torch.Tensor:
        return runner(transform(batch) if transform is not None else batch)

    return _extract(images, batch_size, runner, featurize, progress, "extract features")


def extract_multiview_features(
    backbone: nn.Module,
    images: torch.Tensor,
    augment: Callable[..., torch.Tensor],
    eval_transform: Transform,
    num_views: int = 16,
    generator: torch.Generator | None = None,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    channels_last: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Features averaged over 1 clean + (num_views - 1) augmented views: uint8 (N, 3, H, W) -> (N, D).

    The paper's multi-view probe uses 16 views (1 clean + 15 augmented). ``augment(batch, m, generator)``
    returns (m, B, 3, s, s) (e.g. :class:`mvssl_hub.views.MultiViewAugment` of a preset whose crop size is
    the evaluation size) and must produce the same size as ``eval_transform``. ``batch_size`` counts
    network inputs: each step takes ``max(1, batch_size // num_views)`` images with all their views.
    Under several processes each draws its own views (same seed, different shard): results then differ
    from a single process run by the augmentation noise only.
    """
    images = _check_images(images, "extract_multiview_features")
    _check_batch_size(batch_size, "extract_multiview_features")
    if not isinstance(num_views, int) or isinstance(num_views, bool) or num_views < 1:
        raise ValueError(f"extract_multiview_features: num_views must be an int >= 1, got {num_views!r}")
    runner = _Runner(backbone, device, bf16, channels_last)

    def featurize(batch: torch.Tensor) -> torch.Tensor:
        clean = eval_transform(batch)
        total = runner(clean)
        if num_views > 1:
            views = augment(batch, num_views - 1, generator)
            if views.dim() != 5 or views.shape[0] != num_views - 1 or views.shape[1:] != clean.shape:
                raise ValueError(
                    f"extract_multiview_features: augment returned shape {tuple(views.shape)}, expected "
                    f"({num_views - 1}, {', '.join(str(s) for s in clean.shape)}) like the clean view; "
                    "build the augmentation with crop_size equal to the evaluation size"
                )
            feats = runner(views.flatten(0, 1)).view(num_views - 1, batch.shape[0], -1)
            total = total + feats.sum(dim=0)
        return total / num_views

    step = max(1, batch_size // num_views)
    return _extract(images, step, runner, featurize, progress, f"extract features ({num_views} views)")


# --------------------------------------------------------------------------------------------------
# Input checks shared by the probes


def _check_features(feats: Any, name: str, where: str) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(feats).__name__}")
    if feats.dim() != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise ValueError(f"{where}: {name} must be a non-empty 2-D (N, D) tensor, got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"{where}: {name} must be a float tensor, got {feats.dtype}")
    if not bool(torch.isfinite(feats).all()):
        raise ValueError(f"{where}: {name} of shape {tuple(feats.shape)} contains NaN or Inf")
    return feats


def _check_labels(labels: Any, feats: torch.Tensor, name: str, fname: str, where: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"{where}: {name} must be a 1-D integer tensor, got shape {tuple(labels.shape)} {labels.dtype}"
        )
    if labels.shape[0] != feats.shape[0]:
        raise ValueError(
            f"{where}: {name} has {labels.shape[0]} labels but {fname} has shape {tuple(feats.shape)} "
            f"({feats.shape[0]} rows)"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{where}: {name} contains negative label {int(labels.min())}")
    return labels.long()


def _resolve_num_classes(num_classes: int | None, where: str, *labels: torch.Tensor) -> int:
    top = max(int(lab.max()) for lab in labels) + 1
    if num_classes is None:
        return top
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{where}: num_classes must be a positive int, got {num_classes!r}")
    if top > num_classes:
        raise ValueError(f"{where}: label {top - 1} is out of range for num_classes={num_classes}")
    return num_classes


def _check_same_dim(a: torch.Tensor, b: torch.Tensor, na: str, nb: str, where: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{where}: {na} has shape {tuple(a.shape)} but {nb} has shape {tuple(b.shape)}: feature dims differ"
        )


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent from scores (Q, C) and labels (Q,): {"top1": .., "top5": ..}.

    k larger than C counts every prediction as correct (k is clamped to C). Ties go to the lower class index.
    """
    if scores.dim() != 2 or labels.dim() != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"topk_accuracy: scores {tuple(scores.shape)} and labels {tuple(labels.shape)} do not match")
    kmax = min(max(ks), scores.shape[1])
    # stable descending sort: equal scores keep class order, so ties resolve deterministically
    ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, :kmax]
    hit = ranked.eq(labels.to(ranked.device).view(-1, 1))
    q = max(1, labels.shape[0])
    return {f"top{k}": 100.0 * int(hit[:, : min(k, kmax)].any(dim=1).sum()) / q for k in ks}


# --------------------------------------------------------------------------------------------------
# Weighted kNN


def knn_predict(
    train_f: torch.Tensor,
    train_l: torch.Tensor,
    test_f: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Class scores (Q, C) of a weighted kNN on cosine similarity.

    train_f (N, D), train_l (N,) int, test_f (Q, D). Features are L2-normalised; for each query the k
    most similar training rows vote for their class with weight exp(sim / temperature). Queries are
    processed ``chunk_size`` at a time (memory: chunk_size x N similarities). Returns float32 on the CPU.
    """
    where = "knn_predict"
    train_f = _check_features(train_f, "train_f", where)
    test_f = _check_features(test_f, "test_f", where)
    train_l = _check_labels(train_l, train_f, "train_l", "train_f", where)
    _check_same_dim(train_f, test_f, "train_f", "test_f", where)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{where}: k must be a positive int, got {k!r}")
    if k > train_f.shape[0]:
        raise ValueError(
            f"{where}: k={k} exceeds the {train_f.shape[0]} training rows of train_f {tuple(train_f.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"{where}: temperature must be > 0, got {temperature!r}")
    _check_batch_size(chunk_size, where)
    c = _resolve_num_classes(num_classes, where, train_l)
    dev = torch.device(device) if device is not None else train_f.device
    bank = F.normalize(train_f.to(dev, torch.float32), dim=1)
    bank_l = train_l.to(dev)
    queries = F.normalize(test_f.to(dev, torch.float32), dim=1)
    out = torch.empty(queries.shape[0], c, dtype=torch.float32)
    bar = _progress(queries.shape[0], "kNN", progress)
    try:
        for start in range(0, queries.shape[0], chunk_size):
            q = queries[start : start + chunk_size]
            sim, idx = (q @ bank.T).topk(k, dim=1)
            weights = (sim / temperature).exp()
            scores = torch.zeros(q.shape[0], c, dtype=torch.float32, device=dev)
            scores.scatter_add_(1, bank_l[idx], weights)
            out[start : start + q.shape[0]] = scores.cpu()
            bar.update(q.shape[0])
    finally:
        bar.close()
    return out


def knn_accuracy(
    train_f: torch.Tensor,
    train_l: torch.Tensor,
    test_f: torch.Tensor,
    test_l: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Weighted-kNN top-1 / top-5 accuracy in percent: {"top1": .., "top5": ..}. See :func:`knn_predict`."""
    test_f = _check_features(test_f, "test_f", "knn_accuracy")
    test_l = _check_labels(test_l, test_f, "test_l", "test_f", "knn_accuracy")
    train_l = _check_labels(train_l, _check_features(train_f, "train_f", "knn_accuracy"), "train_l", "train_f",
                            "knn_accuracy")
    c = _resolve_num_classes(num_classes, "knn_accuracy", train_l, test_l)
    scores = knn_predict(train_f, train_l, test_f, k=k, temperature=temperature, num_classes=c,
                         chunk_size=chunk_size, device=device, progress=progress)
    return topk_accuracy(scores, test_l)


# --------------------------------------------------------------------------------------------------
# Linear probe


def _init_linear(head: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's default initialisation (U(-1/sqrt(D), 1/sqrt(D)) for weight and bias), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(head.in_features)
    with torch.no_grad():
        w = torch.rand(head.weight.shape, generator=generator) * (2 * bound) - bound
        b = torch.rand(head.bias.shape, generator=generator) * (2 * bound) - bound
        head.weight.copy_(w)
        head.bias.copy_(b)


_THREADS_LOCK = threading.Lock()


@contextmanager
def _cpu_threads(cpu_threads: int | None) -> Iterator[None]:
    """Run the block with ``cpu_threads`` torch threads, restoring the count after; no-op if unchanged.

    torch's thread count is process-wide, so a change (and its restore) holds a module-level lock: two
    probes in different threads never undo each other's setting.
    """
    if cpu_threads is None:
        yield
        return
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        if cpu_threads != before:
            torch.set_num_threads(cpu_threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)
            return
    yield  # already the requested count: nothing to set, nothing to restore


def linear_probe(
    train_f: torch.Tensor,
    train_l: torch.Tensor,
    test_f: torch.Tensor,
    test_l: torch.Tensor,
    *,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    label_smoothing: float = 0.1,
    batch_size: int | None = 512,
    standardize: bool = False,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    cpu_threads: int | None = 1,
    progress: bool = False,
    return_head: bool = False,
) -> dict[str, Any]:
    """Train one ``nn.Linear`` on cached features and report accuracies in percent.

    train_f (N, D), train_l (N,), test_f (Q, D), test_l (Q,). The paper's protocol is the default: raw
    features, Adam (lr 1e-3, L2 weight decay 1e-6 as in ``torch.optim.Adam``), 200 epochs, cross-entropy
    with label smoothing 0.1, constant learning rate. Each epoch visits the training rows in a random
    order in mini-batches of ``batch_size`` (``None``: one full batch per epoch); 512 is the batch of the
    reference code's CIFAR classifier loader (kumarkrishna/fastssl; 256 there for STL-10 / ImageNet).

    ``standardize=True`` subtracts the training mean and divides by the training std per feature (test
    features use the training statistics). It is off by default to keep the paper's protocol; turn it
    on when feature scales are far from 1 (e.g. randomly initialised networks), where Adam's fixed step
    size then needs many more epochs.

    ``cpu_threads``: intra-op threads while training on the CPU (restored afterwards; ``None`` leaves
    the setting alone). A step on 512 x 512 features is too small to gain from threads, and on a busy
    2-core machine OpenMP's waiting made 2 threads several times slower than 1 (benchmarks/probes.py
    records this A/B).

    Deterministic for a given ``seed``: the weights (nn.Linear's default uniform init) and each epoch's
    permutation are drawn, in that order, from one CPU ``torch.Generator(seed)``.

    Returns {"top1", "top5", "train_top1", "train_top5", "loss_per_epoch" (mean training loss of each
    epoch), "final_loss", "epochs", "num_classes"}, and with ``return_head`` the trained "head" (on the CPU,
    fp32), e.g. to start a fine-tune from it.
    """
    where = "linear_probe"
    train_f, train_l, test_f, test_l = _check_probe_inputs(where, train_f, train_l, test_f, test_l)
    _check_probe_settings(where, epochs, batch_size, label_smoothing, lr, weight_decay, cpu_threads)
    c = _resolve_num_classes(num_classes, where, train_l, test_l)
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    )
    x_train, x_test = _probe_features(train_f, test_f, dev, standardize)
    y_train = train_l.to(dev)
    head, losses = _train_head(x_train, y_train, c, epochs=epochs, lr=lr, weight_decay=weight_decay,
                               label_smoothing=label_smoothing, batch_size=batch_size, seed=seed,
                               cpu_threads=cpu_threads, progress=progress)
    with torch.no_grad():
        test_acc = topk_accuracy(head(x_test).float().cpu(), test_l)
        train_acc = topk_accuracy(head(x_train).float().cpu(), y_train.cpu())
    out: dict[str, Any] = {"head": head.cpu()} if return_head else {}
    return {
        **out,
        "top1": test_acc["top1"],
        "top5": test_acc["top5"],
        "train_top1": train_acc["top1"],
        "train_top5": train_acc["top5"],
        "loss_per_epoch": losses,
        "final_loss": losses[-1],
        "epochs": epochs,
        "num_classes": c,
    }


def _check_probe_inputs(where: str, train_f: torch.Tensor, train_l: torch.Tensor, test_f: torch.Tensor,
                        test_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe's features (2-D, finite) and labels (one per row), checked; the same dimension on both sides."""
    train_f = _check_features(train_f, "train_f", where)
    test_f = _check_features(test_f, "test_f", where)
    train_l = _check_labels(train_l, train_f, "train_l", "train_f", where)
    test_l = _check_labels(test_l, test_f, "test_l", "test_f", where)
    _check_same_dim(train_f, test_f, "train_f", "test_f", where)
    return train_f, train_l, test_f, test_l


def _check_probe_settings(where: str, epochs: Any, batch_size: int | None, label_smoothing: float, lr: float,
                          weight_decay: float, cpu_threads: Any) -> None:
    """ValueError naming the first setting of :func:`linear_probe` out of its range."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"{where}: epochs must be a positive int, got {epochs!r}")
    if batch_size is not None:
        _check_batch_size(batch_size, where)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not lr > 0 or weight_decay < 0:
        raise ValueError(f"{where}: need lr > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}")
    if cpu_threads is not None and (not isinstance(cpu_threads, int) or cpu_threads < 1):
        raise ValueError(f"{where}: cpu_threads must be a positive int or None, got {cpu_threads!r}")


def _probe_features(train_f: torch.Tensor, test_f: torch.Tensor, dev: torch.device,
                    standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 features on ``dev``; with ``standardize``, both scaled by the training rows' mean and std."""
    x_train = train_f.to(dev, torch.float32)
    x_test = test_f.to(dev, torch.float32)
    if standardize:
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True).clamp_min(1e-6)
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return x_train, x_test


def _train_head(x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, *, epochs: int, lr: float,
                weight_decay: float, label_smoothing: float, batch_size: int | None, seed: int,
                cpu_threads: int | None, progress: bool) -> tuple[nn.Linear, list[float]]:
    """The probe's ``nn.Linear`` trained with Adam on shuffled mini-batches, and its mean loss of each epoch. The
    weights, then each epoch's order, are drawn from one CPU generator seeded with ``seed``."""
    dev = x_train.device
    n = x_train.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x_train.shape[1], num_classes)
    _init_linear(head, gen)
    head.to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    bar = _progress(epochs, "linear probe", progress)
    threads = _cpu_threads(cpu_threads) if dev.type == "cpu" else nullcontext()
    with threads:
        try:
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen).to(dev)
                total = torch.zeros((), device=dev)
                for start in range(0, n, bs):
                    idx = order[start : start + bs]
                    loss = F.cross_entropy(head(x_train[idx]), y_train[idx], label_smoothing=label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * idx.numel()
                losses.append(total.item() / n)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        finally:
            bar.close()
    return head, losses


def knn_evaluate(backbone: nn.Module, bank: Any, queries: Any, transform: Transform | None, *, k: int = 200,
                 temperature: float = 0.1, batch_size: int = 512, channels_last: bool = True,
                 progress: bool = False) -> float:
    """kNN top-1 (%) of ``backbone`` features: ``bank`` / ``queries`` hold ``images`` uint8 (N, 3, H, W),
    ``labels`` (N,) and ``num_classes`` (an :class:`mvssl_hub.data.splits.ImageSplit`). The training monitor's probe."""
    kw: dict[str, Any] = dict(batch_size=batch_size, channels_last=channels_last, progress=progress)
    bank_f = extract_features(backbone, bank.images, transform, **kw)
    query_f = extract_features(backbone, queries.images, transform, **kw)
    result = knn_accuracy(bank_f, bank.labels, query_f, queries.labels, k=min(k, len(bank_f)),
                          temperature=temperature, num_classes=bank.num_classes, device=_module_device(backbone))
    return float(result["top1"])
