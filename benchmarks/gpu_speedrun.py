"""Time-boxed speedrun: kNN top-1 vs seconds of training, with the device-side step (benchmarks/gpu_sync_count.py).

Full-width ResNet-18 (small-image stem), full CIFAR-10, the recommended recipe (Barlow Twins, d = 256,
M = 4 views, batch 128, Adam 1e-3 / wd 1e-6, recommended beta), bf16 where fast, channels_last. Every
``--knn-every`` seconds of training the clock stops and kNN top-1 (k = 200, T = 0.1, 1 centre view) is
measured on the test split with the train split as the bank. JSON: {gpu, settings, points: [{seconds,
steps, knn_top1}], views_per_s, peak_memory_mb, nan_skipped} -> --out.

    python benchmarks/gpu_speedrun.py --device cuda --budget 180 --knn-every 60
    python benchmarks/gpu_speedrun.py --device cpu --dry-run      # seconds, tiny: keeps the code path tested
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_sync_count import build_parts, new_step

from mvssl_hub.data.splits import load_split
from mvssl_hub.device import hardware_string, peak_memory_mb
from mvssl_hub.eval.probes import extract_features, knn_accuracy
from mvssl_hub.views import EvalTransform, get_view_preset

ROOT = Path(__file__).resolve().parents[1]


def knn_top1(model: torch.nn.Module, bank: Any, queries: Any, k: int) -> float:
    """kNN top-1 (percent) of the backbone's features; the model is back in train mode afterwards."""
    transform = EvalTransform(get_view_preset("cifar10"))
    backbone = model.backbone
    kw: dict[str, Any] = {"batch_size": 1024, "channels_last": True}
    train_f = extract_features(backbone, bank.images, transform, **kw)
    test_f = extract_features(backbone, queries.images, transform, **kw)
    acc = knn_accuracy(train_f, bank.labels, test_f, queries.labels, k=min(k, len(bank)), temperature=0.1,
                       num_classes=bank.num_classes, device=next(backbone.parameters()).device)
    model.train()
    return float(acc["top1"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--budget", type=float, default=180.0, help="seconds of training (kNN time excluded)")
    ap.add_argument("--knn-every", type=float, default=60.0, help="seconds of training between kNN evaluations")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="first images of each split")
    ap.add_argument("--dry-run", action="store_true", help="tiny: width 4, 64 images, 3 s, kNN every 1 s")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_speedrun.json"))
    args = ap.parse_args(argv)
    if args.dry_run:
        args.width, args.batch, args.limit, args.budget, args.knn_every = 4, 16, 64, 3.0, 1.0
        if not Path(args.data).exists():
            args.data = str(ROOT / "recipes" / "data" / "cifar10-5k")
    device = torch.device(args.device)
    t0 = time.time()
    train = load_split(args.data, "train", limit=args.limit)
    queries = load_split(args.data, "test", limit=args.limit)
    print(f"# data: {len(train)} train / {len(queries)} test images in {time.time() - t0:.1f}s", flush=True)
    p = build_parts(device, train.images, width=args.width, num_views=args.views, batch=args.batch)
    points = [{"seconds": 0.0, "steps": 0, "knn_top1": knn_top1(p.model, train, queries, 200)}]
    print(f"# kNN at init: {points[0]['knn_top1']:.2f}%", flush=True)
    trained, step, next_knn = 0.0, 0, args.knn_every
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    while trained < args.budget:
        start = time.perf_counter()
        while trained + time.perf_counter() - start < min(next_knn, args.budget):
            new_step(p, step)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the clock covers finished GPU work only
        trained += time.perf_counter() - start
        next_knn += args.knn_every
        acc = knn_top1(p.model, train, queries, 200)
        points.append({"seconds": round(trained, 2), "steps": step, "knn_top1": acc})
        print(f"# {trained:.0f}s, {step} steps: kNN top-1 {acc:.2f}%", flush=True)
    views_per_s = step * args.batch * args.views / trained
    result = {
        "benchmark": "gpu_speedrun",
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "hardware": hardware_string(device),
        "settings": {"arch": "resnet18", "width": args.width, "small_images": True, "method": "barlowtwins",
                     "proj_dim": 256, "num_views": args.views, "batch": args.batch, "lr": 1e-3,
                     "weight_decay": 1e-6, "bf16": p.bf16, "budget_s": args.budget, "knn_every_s": args.knn_every,
                     "knn": "k=200, T=0.1, bank = train split, queries = test split",
                     "train_images": len(train), "test_images": len(queries), "dry_run": args.dry_run,
                     "optimizer": "fused Adam" if p.optimizer.defaults.get("fused") else "foreach Adam"},
        "points": points,
        "views_per_s": views_per_s,
        "peak_memory_mb": peak_memory_mb(device),
        "nan_skipped": p.guard.poll().skipped,
        "gather_waits": p.gather.waits,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"# {views_per_s:.0f} views/s, peak memory {result['peak_memory_mb']:.0f} MiB; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
