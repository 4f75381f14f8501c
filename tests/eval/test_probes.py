"""Probes: feature extraction, weighted kNN and the linear probe against straightforward references.

Run as a script (``python test_probes.py worker RANK WORLD PORT DIR``) this file is also the worker of the
2-process gloo test of sharded extraction (no pickle: inputs are rebuilt from seeds, outputs are safetensors).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mvssl_hub import build_backbone
from mvssl_hub.device import bf16_is_fast
from mvssl_hub.eval.probes import (
    extract_features,
    extract_multiview_features,
    knn_accuracy,
    knn_predict,
    linear_probe,
    topk_accuracy,
)
from mvssl_hub.views import VIEW_PRESETS, EvalTransform, MultiViewAugment

CIFAR = VIEW_PRESETS["cifar10"]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
EMBEDDED = Path(__file__).resolve().parents[2] / "recipes" / "data" / "cifar10-5k"


def _clusters(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def _tiny_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone("resnet18", small_images=True, width=8)


def _images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


# ----------------------------------------------------------------------------------------------------- kNN


def _knn_reference(train_f, train_l, test_f, k, temperature, num_classes):
    """Per-query loop in float64: cosine similarities, k best, exp(sim/T) summed per class."""
    train = train_f.double() / train_f.double().norm(dim=1, keepdim=True)
    scores = torch.zeros(test_f.shape[0], num_classes, dtype=torch.float64)
    for q in range(test_f.shape[0]):
        query = test_f[q].double() / test_f[q].double().norm()
        sims = [(float(train[i] @ query), i) for i in range(train.shape[0])]
        sims.sort(key=lambda t: -t[0])
        for sim, i in sims[:k]:
            scores[q, int(train_l[i])] += math.exp(sim / temperature)
    return scores


@pytest.mark.parametrize("k,temperature,chunk", [(7, 0.1, 5), (30, 0.5, 1024), (1, 0.07, 3)])
def test_knn_predict_matches_float64_loop(k: int, temperature: float, chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    train_f = torch.randn(60, 16, generator=g) * torch.rand(60, 1, generator=g)  # varied norms
    train_l = torch.randint(0, 4, (60,), generator=g)
    test_f = torch.randn(13, 16, generator=g)
    got = knn_predict(train_f, train_l, test_f, k=k, temperature=temperature, num_classes=5, chunk_size=chunk)
    ref = _knn_reference(train_f, train_l, test_f, k, temperature, 5)
    assert got.shape == (13, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)
    assert torch.all(got[:, 4] == 0)  # class 4 never appears in train_l


def test_knn_accuracy_top1_top5_from_reference_scores() -> None:
    g = torch.Generator().manual_seed(2)
    train_f, train_l = torch.randn(200, 8, generator=g), torch.randint(0, 10, (200,), generator=g)
    test_f, test_l = torch.randn(50, 8, generator=g), torch.randint(0, 10, (50,), generator=g)
    acc = knn_accuracy(train_f, train_l, test_f, test_l, k=20, temperature=0.1)
    ref = _knn_reference(train_f, train_l, test_f, 20, 0.1, 10)
    ranked = ref.argsort(dim=1, descending=True)
    top1 = 100.0 * (ranked[:, 0] == test_l).double().mean().item()
    top5 = 100.0 * (ranked[:, :5] == test_l[:, None]).any(dim=1).double().mean().item()
    assert acc["top1"] == pytest.approx(top1) and acc["top5"] == pytest.approx(top5)
    assert 0 <= acc["top1"] <= acc["top5"] <= 100


def test_knn_separable_clusters_are_perfect_and_scale_invariant() -> None:
    train_f, train_l = _clusters(40, 6, 12, 0.3, seed=3)
    test_f, test_l = _clusters(10, 6, 12, 0.3, seed=3)
    test_f = test_f + 0.1 * torch.randn_like(test_f)
    acc = knn_accuracy(train_f, train_l, test_f, test_l, k=20)
    assert acc == {"top1": 100.0, "top5": 100.0}
    # cosine similarity: rescaling each feature vector changes nothing
    scaled = knn_predict(train_f * 7.0, train_l, test_f * 0.01, k=20)
    torch.testing.assert_close(scaled, knn_predict(train_f, train_l, test_f, k=20), rtol=1e-4, atol=1e-5)


def test_topk_accuracy_handles_fewer_than_five_classes_and_ties() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([1, 1, 0])
    acc = topk_accuracy(scores, labels)
    # row 2 ties: the lower class index (0) wins, so the label 1 is not top-1
    assert acc["top1"] == pytest.approx(100 / 3)
    assert acc["top5"] == 100.0  # k clamps to the 3 classes


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"train_l": torch.zeros(9, dtype=torch.long)}, "train_l has 9 labels but train_f has shape (10, 4)"),
        ({"k": 11}, "k=11 exceeds the 10 training rows"),
        ({"k": 0}, "k must be a positive int"),
        ({"test_f": torch.randn(3, 5)}, "feature dims differ"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"num_classes": 2}, "label 2 is out of range for num_classes=2"),
        ({"train_f": torch.full((10, 4), float("nan"))}, "contains NaN or Inf"),
        ({"train_l": torch.zeros(10)}, "1-D integer tensor"),
        ({"train_f": torch.randn(10)}, "2-D (N, D)"),
    ],
)
def test_knn_input_errors_name_the_shapes(kwargs: dict, message: str) -> None:
    args = {"train_f": torch.randn(10, 4), "train_l": torch.arange(10) % 3, "test_f": torch.randn(3, 4), "k": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        knn_predict(args.pop("train_f"), args.pop("train_l"), args.pop("test_f"), **args)


# ------------------------------------------------------------------------------------------- linear probe


def _reference_probe(train_f, train_l, test_f, test_l, *, epochs, batch_size, seed, num_classes):
    """Plain nn.Linear + torch.optim.Adam; same draw order as documented (init, then one permutation per epoch)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(train_f.shape[1], num_classes)
    bound = 1 / math.sqrt(train_f.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.rand(lin.weight.shape, generator=g) * 2 * bound - bound)
        lin.bias.copy_(torch.rand(lin.bias.shape, generator=g) * 2 * bound - bound)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3, weight_decay=1e-6)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(train_f), generator=g)
        epoch_loss = 0.0
        for s in range(0, len(train_f), batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(lin(train_f[idx]), train_l[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch_loss += loss.item() * len(idx)
        losses.append(epoch_loss / len(train_f))
    with torch.no_grad():
        pred = lin(test_f).argmax(dim=1)
    return losses, 100.0 * (pred == test_l).double().mean().item()


def test_linear_probe_matches_plain_nn_linear_adam_reference() -> None:
    train_f, train_l = _clusters(30, 5, 24, 4.0, seed=4)  # overlapping classes: accuracy is not trivially 100
    test_f, test_l = _clusters(10, 5, 24, 4.0, seed=5)
    out = linear_probe(train_f, train_l, test_f, test_l, epochs=6, batch_size=32, seed=7)
    ref_losses, ref_top1 = _reference_probe(train_f, train_l, test_f, test_l, epochs=6, batch_size=32, seed=7,
                                            num_classes=5)
    assert out["loss_per_epoch"] == pytest.approx(ref_losses, rel=1e-5)
    assert out["top1"] == pytest.approx(ref_top1)
    assert out["loss_per_epoch"][-1] < out["loss_per_epoch"][0]
    # return_head: the trained head itself, which scores exactly what the probe reported
    head = linear_probe(train_f, train_l, test_f, test_l, epochs=6, batch_size=32, seed=7, return_head=True)["head"]
    with torch.no_grad():
        assert 100.0 * (head(test_f).argmax(1) == test_l).double().mean().item() == pytest.approx(out["top1"])
    assert "head" not in out
    # same seed: same result; another seed: another trajectory
    again = linear_probe(train_f, train_l, test_f, test_l, epochs=6, batch_size=32, seed=7)
    other = linear_probe(train_f, train_l, test_f, test_l, epochs=6, batch_size=32, seed=8)
    assert again["loss_per_epoch"] == out["loss_per_epoch"]
    assert other["loss_per_epoch"] != out["loss_per_epoch"]


def test_linear_probe_separable_features_reach_100_percent() -> None:
    train_f, train_l = _clusters(50, 10, 32, 0.5, seed=6)
    test_f, test_l = _clusters(10, 10, 32, 0.5, seed=6)
    test_f = test_f + 0.2 * torch.randn_like(test_f)
    out = linear_probe(train_f, train_l, test_f, test_l, epochs=30, batch_size=50)
    assert out["top1"] == 100.0 and out["train_top1"] == 100.0 and out["top5"] == 100.0
    losses = out["loss_per_epoch"]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    # label smoothing 0.1 with 10 classes bounds the loss from below by the smoothed target's entropy
    p = 0.9 + 0.1 / 10
    floor = -(p * math.log(p) + 9 * (0.1 / 10) * math.log(0.1 / 10))
    assert out["final_loss"] > floor - 1e-4


def test_linear_probe_standardize_removes_feature_scale() -> None:
    train_f, train_l = _clusters(20, 4, 8, 2.0, seed=8)
    test_f, test_l = _clusters(5, 4, 8, 2.0, seed=9)
    shift, scale = torch.randn(8) * 50, torch.rand(8) * 1e3 + 1
    a = linear_probe(train_f, train_l, test_f, test_l, epochs=5, standardize=True, batch_size=16)
    b = linear_probe(train_f * scale + shift, train_l, test_f * scale + shift, test_l, epochs=5,
                     standardize=True, batch_size=16)
    assert b["loss_per_epoch"] == pytest.approx(a["loss_per_epoch"], rel=1e-3)
    assert b["top1"] == a["top1"]


def test_linear_probe_restores_threads_and_validates() -> None:
    before = torch.get_num_threads()
    f, y = torch.randn(8, 3), torch.arange(8) % 2
    linear_probe(f, y, f, y, epochs=1, cpu_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"test_l has 7 labels but test_f has shape \(8, 3\)"):
        linear_probe(f, y, f, y[:7], epochs=1)
    with pytest.raises(ValueError, match=r"train_f has shape \(8, 3\) but test_f has shape \(8, 4\)"):
        linear_probe(f, y, torch.randn(8, 4), y, epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        linear_probe(f, y, f, y, epochs=0)
    with pytest.raises(ValueError, match="negative label"):
        linear_probe(f, y - 1, f, y, epochs=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_probe(f, y, f, y, epochs=1, label_smoothing=1.0)


def test_linear_probe_sets_threads_only_when_changed(monkeypatch) -> None:
    from mvssl_hub.eval import probes

    calls: list[tuple[int, bool]] = []  # (value, lock held) of every set_num_threads call
    monkeypatch.setattr(torch, "set_num_threads", lambda k: calls.append((k, probes._THREADS_LOCK.locked())))
    f, y = torch.randn(8, 3), torch.arange(8) % 2
    current = torch.get_num_threads()
    linear_probe(f, y, f, y, epochs=1, cpu_threads=current)
    linear_probe(f, y, f, y, epochs=1, cpu_threads=None)
    assert calls == []  # same count or none asked: the process-wide setting is not touched
    linear_probe(f, y, f, y, epochs=1, cpu_threads=current + 1)
    assert calls == [(current + 1, True), (current, True)]  # set then restored, both under the lock
    assert not probes._THREADS_LOCK.locked()


# -------------------------------------------------------------------------------------- feature extraction


def test_extract_features_equals_direct_forward_and_restores_mode() -> None:
    bb = _tiny_backbone()
    bb.train()
    images = _images(10)
    transform = EvalTransform(CIFAR)
    got = extract_features(bb, images, transform, batch_size=4, bf16=False, channels_last=True)
    assert bb.training  # training flag restored
    bb.eval()
    with torch.no_grad():
        ref = bb(transform(images).contiguous())
    assert got.shape == (10, bb.feature_dim) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # batch size and memory format do not change the result (eval mode: no batch statistics)
    other = extract_features(bb, images, transform, batch_size=64, bf16=False, channels_last=False)
    torch.testing.assert_close(other, ref, rtol=1e-4, atol=1e-5)


def test_extraction_restores_device_and_memory_format() -> None:
    from mvssl_hub.eval.probes import _Runner

    bb = _tiny_backbone()
    images = _images(4)
    transform = EvalTransform(CIFAR)
    assert bb.conv1.weight.is_contiguous() and not bb.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    runner = _Runner(bb, "cpu", False, True)
    assert runner.orig_device == torch.device("cpu") and runner.was_channels_last is False
    assert bb.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # converted for the run
    runner.restore()
    assert bb.conv1.weight.is_contiguous()

    def same_view(batch: torch.Tensor, m: int, generator: torch.Generator | None) -> torch.Tensor:
        return transform(batch).unsqueeze(0).expand(m, -1, -1, -1, -1)

    for extract in (
        lambda: extract_features(bb, images, transform, batch_size=4, device="cpu", bf16=False, channels_last=True),
        lambda: extract_multiview_features(bb, images, same_view, transform, num_views=2, batch_size=4,
                                           device="cpu", bf16=False, channels_last=True),
    ):
        feats = extract()
        assert feats.shape == (4, bb.feature_dim)
        assert next(bb.parameters()).device == torch.device("cpu")
        assert bb.conv1.weight.is_contiguous(), "channels_last conversion not undone"
    # a model that was channels_last already stays so
    bb.to(memory_format=torch.channels_last)
    extract_features(bb, images, transform, batch_size=4, device="cpu", bf16=False, channels_last=True)
    assert bb.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_extract_features_bf16_is_close_to_fp32() -> None:
    bb = _tiny_backbone()
    images = _images(8)
    fp32 = extract_features(bb, images, EvalTransform(CIFAR), bf16=False)
    bf16 = extract_features(bb, images, EvalTransform(CIFAR), bf16=True)
    assert bf16.dtype == torch.float32
    rel = (bf16 - fp32).norm() / fp32.norm()
    assert 0 < rel < 0.05  # not bit-identical (autocast really ran), but close
    assert isinstance(bf16_is_fast("cpu"), bool) and bf16_is_fast("meta") is False


def test_extract_features_errors() -> None:
    bb = _tiny_backbone()
    with pytest.raises(ValueError, match=r"4-D \(N, 3, H, W\), got shape \(3, 32, 32\)"):
        extract_features(bb, _images(1)[0], EvalTransform(CIFAR))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        extract_features(bb, _images(2), EvalTransform(CIFAR), batch_size=0)
    with pytest.raises(TypeError, match="transform=None needs float images"):
        extract_features(bb, _images(2), None)


def test_multiview_features_mean_over_clean_and_augmented_views() -> None:
    bb = _tiny_backbone()
    images = _images(6, seed=1)
    aug, clean = MultiViewAugment(CIFAR), EvalTransform(CIFAR)
    got = extract_multiview_features(bb, images, aug, clean, num_views=3, generator=torch.Generator().manual_seed(5),
                                     batch_size=64, bf16=False)
    views = aug(images, 2, torch.Generator().manual_seed(5))
    bb.eval()
    with torch.no_grad():
        ref = (bb(clean(images)) + bb(views[0]) + bb(views[1])) / 3
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # one view is the clean view only
    single = extract_multiview_features(bb, images, aug, clean, num_views=1, bf16=False)
    torch.testing.assert_close(single, extract_features(bb, images, clean, bf16=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="build the augmentation with crop_size equal to the evaluation size"):
        extract_multiview_features(bb, images, MultiViewAugment(VIEW_PRESETS["stl10"]), clean, num_views=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: Path) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        bb = _tiny_backbone()
        out = {f"n{n}": extract_features(bb, _images(n), EvalTransform(CIFAR), batch_size=2, bf16=False)
               for n in (7, 1)}
        save_file(out, str(out_dir / f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_two_process_extraction_gathers_every_row_in_order(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", str(r), "2", str(port), str(tmp_path)], env=env)
        for r in range(2)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0]
    bb = _tiny_backbone()
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        for n in (7, 1):  # 7 rows: shards of 4 and 3; 1 row: rank 1 has an empty shard
            ref = extract_features(bb, _images(n), EvalTransform(CIFAR), batch_size=64, bf16=False)
            torch.testing.assert_close(got[f"n{n}"], ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- real data


def test_knn_on_real_cifar10_random_tiny_backbone_beats_chance() -> None:
    from mvssl_hub.data.splits import load_split

    source = str(SHARED) if (SHARED / "train.parquet").exists() else str(EMBEDDED)
    if not Path(source).exists():
        pytest.skip("no CIFAR-10 parquet (shared or embedded)")
    train = load_split(source, "train", limit=2000) if source == str(SHARED) else load_split(source, "train")
    test = load_split(source, "test", limit=500)
    bb = _tiny_backbone()
    transform = EvalTransform(CIFAR)
    tf = extract_features(bb, train.images[:2000], transform, batch_size=500)
    qf = extract_features(bb, test.images, transform, batch_size=500)
    acc = knn_accuracy(tf, train.labels[:2000], qf, test.labels, k=50)
    # Random conv features carry colour/texture statistics: well above the 10% of chance on CIFAR-10.
    assert acc["top1"] > 18.0 and acc["top5"] > acc["top1"]


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
