"""Throughput of MultiViewAugment (batched tensor augmentation) on CPU.

Measures views/s for 256 CIFAR-sized images x {2, 4, 8} views at 32 px on 2 threads, interleaved
with a per-image torchvision.transforms.v2 pipeline (same augmentations, uint8 tensors, one image at
a time, as a DataLoader worker would run it) so the ratio comes from one run. Medians of interleaved
repeats. Prints a table and writes benchmarks/results/augment_speed.json.

    .venv/bin/python benchmarks/augment_speed.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

from mvssl_hub.views import VIEW_PRESETS, MultiViewAugment, ViewPreset

from harness import default_out, write_result


def per_image_pipeline(p: ViewPreset) -> T.Compose:
    """The same augmentations as torchvision per-image transforms (the usual DataLoader approach)."""
    return T.Compose([
        T.RandomResizedCrop(p.crop_size, scale=p.scale, ratio=p.ratio, antialias=False),
        T.RandomHorizontalFlip(p.flip_p),
        T.RandomApply([T.ColorJitter(p.brightness, p.contrast, p.saturation, p.hue)], p=p.jitter_p),
        T.RandomGrayscale(p.grayscale_p),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(p.mean, p.std),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/augment_speed.json")
    ap.add_argument("--smoke", action="store_true", help="seconds: 16 images, 1 repeat, temporary folder")
    args = ap.parse_args()
    args.out = default_out("augment_speed", args.smoke, args.out)
    if args.smoke:
        args.images, args.repeats = 16, 1
    torch.set_num_threads(args.threads)

    preset = VIEW_PRESETS["cifar10"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    batched = MultiViewAugment(preset)
    per_image = per_image_pipeline(preset)
    views_list = (2, 4, 8)

    def run_batched(m: int, seed: int) -> None:
        batched(x, m, torch.Generator().manual_seed(seed))

    def run_per_image(m: int) -> None:
        torch.stack([torch.stack([per_image(img) for img in x]) for _ in range(m)])

    load_before = os.getloadavg()
    for m in views_list:  # warm-up
        run_batched(m, 0)
    run_per_image(2)

    times: dict[str, list[float]] = {f"batched_M{m}": [] for m in views_list}
    times["per_image_torchvision_M2"] = []
    for r in range(args.repeats):  # interleaved repeats
        for m in views_list:
            t0 = time.perf_counter()
            run_batched(m, r)
            times[f"batched_M{m}"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_per_image(2)
        times["per_image_torchvision_M2"].append(time.perf_counter() - t0)

    results = {}
    for key, ts in times.items():
        m = int(key.rsplit("M", 1)[1])
        med = statistics.median(ts)
        results[key] = {
            "num_views": m,
            "images": args.images,
            "median_s": med,
            "views_per_s": m * args.images / med,
            "times_s": ts,
        }
    ratio = results["batched_M2"]["views_per_s"] / results["per_image_torchvision_M2"]["views_per_s"]
    report = {
        "what": "MultiViewAugment views/s, 32 px CIFAR preset, CPU; per-image torchvision v2 as baseline",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        # Shared machine: a load average above the thread count means the numbers are contended.
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "results": results,
        "speedup_batched_vs_per_image_M2": ratio,
    }
    for key, r in results.items():
        print(f"{key:28s} median {r['median_s'] * 1e3:8.1f} ms  {r['views_per_s']:10.0f} views/s")
    print(f"batched / per-image speed-up at M=2: {ratio:.1f}x")
    write_result(args.out, "augment_speed", report)


if __name__ == "__main__":
    main()
