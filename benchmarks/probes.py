"""Speed of the evaluation probes on CPU: feature extraction, the full linear probe, and kNN.

1. Extraction throughput of ResNet-18 (full width, small-image stem) at 32 px, batch 512, through
   ``extract_features`` (EvalTransform included): bf16 autocast + channels_last vs fp32, interleaved
   repeats, medians and their ratio.
2. The paper's linear probe (200 epochs, Adam, batch 512) on 50,000 x 512 synthetic cached features
   (10 Gaussian classes), timed once in full; plus per-epoch time with 1 vs 2 intra-op threads
   (interleaved repeats), which is why ``linear_probe`` trains on 1 thread by default.
3. Weighted kNN (k = 200) of 10,000 test against 50,000 train features, median of repeats.

Runs with ``torch.set_num_threads(2)``. The load average is recorded: on a shared machine other
processes slow every number here. Prints a summary and writes benchmarks/results/probes.json.

    .venv/bin/python benchmarks/probes.py [--repeats 3] [--images 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from mvssl_hub import build_backbone
from mvssl_hub.device import bf16_is_fast, cpu_name
from mvssl_hub.eval.probes import extract_features, knn_accuracy, linear_probe
from mvssl_hub.views import VIEW_PRESETS, EvalTransform

from harness import default_out, timed, write_result


def synthetic_features(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes (non-trivial accuracy), non-negative like post-ReLU pooled features."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 0.06
    labels = torch.randint(0, classes, (n,), generator=g)
    feats = (centres[labels] + torch.randn(n, dim, generator=g)).relu()
    return feats, labels


def extraction_speed(images_per_repeat: int, repeats: int, width: int) -> dict:
    """1. Extraction: bf16 + channels_last vs fp32, interleaved repeats after an untimed warm-up."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", small_images=True, width=width)
    images = torch.randint(0, 256, (images_per_repeat, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    transform = EvalTransform(VIEW_PRESETS["cifar10"])
    variants = {"bf16_channels_last": {"bf16": True, "channels_last": True},
                "fp32": {"bf16": False, "channels_last": False}}
    for kw in variants.values():  # warm-up: oneDNN primitive creation, first-touch allocations
        extract_features(backbone, images[:512], transform, batch_size=512, **kw)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, kw in variants.items():
            sec = timed(lambda kw=kw: extract_features(backbone, images, transform, batch_size=512, **kw))
            rates[name].append(images_per_repeat / sec)
    med = {name: statistics.median(r) for name, r in rates.items()}
    found = {
        "model": "resnet18, width 64, small-image stem, 32 px, batch 512, EvalTransform included",
        "images_per_repeat": images_per_repeat,
        "images_per_s": {name: [round(x, 1) for x in r] for name, r in rates.items()},
        "median_images_per_s": {name: round(v, 1) for name, v in med.items()},
        "bf16_speedup": round(med["bf16_channels_last"] / med["fp32"], 2),
    }
    print(f"extraction: bf16+channels_last {med['bf16_channels_last']:.0f} img/s, fp32 {med['fp32']:.0f} img/s "
          f"(x{found['bf16_speedup']:.2f})", flush=True)
    return found


def linear_probe_speed(features: tuple[torch.Tensor, ...], repeats: int, full_epochs: int) -> dict:
    """2. The linear probe on cached features: seconds per epoch at 1 vs 2 threads, then one full run."""
    train_f, train_l, test_f, test_l = features
    epoch_times: dict[str, list[float]] = {"1_thread": [], "2_threads": []}
    probe_epochs = 3
    for _ in range(repeats):
        for name, threads in (("1_thread", 1), ("2_threads", 2)):
            sec = timed(lambda t=threads: linear_probe(train_f, train_l, test_f, test_l, epochs=probe_epochs,
                                                       cpu_threads=t))
            epoch_times[name].append(sec / probe_epochs)
    t_full = time.perf_counter()
    full = linear_probe(train_f, train_l, test_f, test_l, epochs=full_epochs)  # the paper's: 200 epochs, batch 512
    t_full = time.perf_counter() - t_full
    print(f"linear probe: 200 epochs in {t_full:.1f}s (test top-1 {full['top1']:.2f}%); per epoch "
          f"1 thread {statistics.median(epoch_times['1_thread']):.3f}s, 2 threads "
          f"{statistics.median(epoch_times['2_threads']):.3f}s", flush=True)
    return {
        "features": "50000 train / 10000 test x 512, 10 classes (synthetic)",
        "protocol": "200 epochs, Adam lr 1e-3, wd 1e-6, batch 512, label smoothing 0.1, raw features, 1 thread",
        "full_run_s": round(t_full, 2),
        "top1": full["top1"], "train_top1": full["train_top1"], "final_loss": round(full["final_loss"], 4),
        "seconds_per_epoch": {k: [round(x, 4) for x in v] for k, v in epoch_times.items()},
        "median_seconds_per_epoch": {k: round(statistics.median(v), 4) for k, v in epoch_times.items()},
    }


def knn_speed(features: tuple[torch.Tensor, ...], repeats: int) -> dict:
    """3. kNN of the test features against the training features, median of repeats."""
    train_f, train_l, test_f, test_l = features
    knn_times = []
    for _ in range(repeats):
        knn_times.append(timed(lambda: knn_accuracy(train_f, train_l, test_f, test_l, k=200, temperature=0.1)))
    acc = knn_accuracy(train_f, train_l, test_f, test_l)
    found = {
        "features": "10000 queries vs 50000 train x 512, k=200, T=0.1, chunk 1024",
        "seconds": [round(x, 2) for x in knn_times], "median_s": round(statistics.median(knn_times), 2),
        "top1": acc["top1"],
    }
    print(f"kNN: {found['median_s']:.2f}s (median of {repeats})", flush=True)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=1024, help="images per extraction repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/probes.json")
    ap.add_argument("--smoke", action="store_true", help="seconds: 32 images, 1 repeat, temporary folder")
    args = ap.parse_args()
    args.out = default_out("probes", args.smoke, args.out)
    width, n_train, n_test, full_epochs = 64, 50_000, 10_000, 200
    if args.smoke:
        args.images, args.repeats = 32, 1
        width, n_train, n_test, full_epochs = 8, 1024, 256, 2
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    result: dict = {
        "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "torch": torch.__version__,
        "threads": args.threads, "bf16_is_fast(cpu)": bf16_is_fast("cpu"), "repeats": args.repeats,
        "load_average_start": [round(x, 2) for x in load_start],
    }
    result["extraction"] = extraction_speed(args.images, args.repeats, width)
    features = (*synthetic_features(n_train, 512, 10, seed=1), *synthetic_features(n_test, 512, 10, seed=2))
    result["linear_probe"] = linear_probe_speed(features, args.repeats, full_epochs)
    result["knn"] = knn_speed(features, args.repeats)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_result(args.out, "probes", result)


if __name__ == "__main__":
    main()
