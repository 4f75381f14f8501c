"""Time-boxed speedrun: kNN top-1 vs seconds of training, timing the recipe's own step (recipes/pretrain.py).

Full-width ResNet-18 (small-image stem), full CIFAR-10, the recommended recipe (Barlow Twins, d = 256,
M = 4 views, batch 128, Adam 1e-3 / wd 1e-6, recommended beta), bf16 where fast, channels_last: built by
``pretrain.setup`` and stepped by ``pretrain.train_step`` (the device-side step: gather, views, guarded update).
Every ``--knn-every`` seconds of training the clock stops and the recipe's kNN monitor (k = 200, T = 0.1,
1 centre view) is measured on the test split with the train split as the bank. JSON, under the harness's
envelope: {gpu, settings, points: [{seconds, steps, knn_top1}], views_per_s, peak_memory_mb, nan_skipped} -> --out.

    python benchmarks/gpu_speedrun.py --device cuda --budget 180 --knn-every 60
    python benchmarks/gpu_speedrun.py --smoke     # seconds on the CPU, tiny: keeps the code path tested
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's mvssl_hub and recipes

from mvssl_hub.data.splits import load_split
from mvssl_hub.device import hardware_string, peak_memory_mb
from recipes import load_recipe

from harness import EMBEDDED_DATA, ROOT, add_common_args, default_out, write_result

pretrain = load_recipe("pretrain")


def recipe_argv(args: argparse.Namespace, output_dir: str) -> list[str]:
    """The recipe's command line for this run: the recommended settings, no kNN split (the bank is the training
    split itself, set after ``setup`` so that it is not decoded twice), no monitors, checkpoints or export."""
    return ["--data", args.data, "--arch", "resnet18", "--small_images", "true", "--width", str(args.width),
            "--method", "barlowtwins", "--proj_dim", "256", "--beta", "auto", "--num_views", str(args.views),
            "--batch_size", str(args.batch), "--lr", "1e-3", "--weight_decay", "1e-6", "--schedule", "constant",
            "--precision", "auto", "--channels_last", "true", "--cpu", str(args.device == "cpu").lower(),
            *(["--limit", str(args.limit)] if args.limit else []), "--eval_split", "", "--knn_k", "200",
            "--knn_temperature", "0.1", "--monitors", "false", "--knn_random_init", "false",
            "--output_dir", output_dir, "--run_state_every", "0", "--export", "false", "--progress", "false"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="default: cuda when available (cpu with --smoke)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--budget", type=float, default=180.0, help="seconds of training (kNN time excluded)")
    ap.add_argument("--knn-every", type=float, default=60.0, help="seconds of training between kNN evaluations")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="first images of each split")
    add_common_args(ap, "gpu_speedrun")
    ap.add_argument("--dry-run", dest="smoke", action="store_true", help="the same as --smoke (its former name)")
    args = ap.parse_args(argv)
    if args.smoke:  # width 4 (the recipe runs it contiguous), 64 images, 3 s, kNN every 1 s
        args.width, args.batch, args.limit, args.budget, args.knn_every = 4, 16, 64, 3.0, 1.0
        if not Path(args.data).exists():
            args.data = str(EMBEDDED_DATA)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    out = default_out("gpu_speedrun", args.smoke, args.out)
    with tempfile.TemporaryDirectory(prefix="gpu_speedrun-") as run_dir:
        t0 = time.time()
        cfg, run, data, trainer = pretrain.setup(recipe_argv(args, run_dir))
        data.bank = data.train  # the kNN bank: the training split (the same images, decoded once)
        data.queries = load_split(args.data, "test", limit=args.limit)
        device = run.device
        print(f"# data: {len(data.train)} train / {len(data.queries)} test images; set up in "
              f"{time.time() - t0:.1f}s", flush=True)
        points = [{"seconds": 0.0, "steps": 0, "knn_top1": pretrain.knn(cfg, run, data, trainer)}]
        print(f"# kNN at init: {points[0]['knn_top1']:.2f}%", flush=True)
        trained, step, next_knn = 0.0, 0, args.knn_every
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        while trained < args.budget:
            start = time.perf_counter()
            while trained + time.perf_counter() - start < min(next_knn, args.budget):
                pretrain.train_step(cfg, run, trainer, step)
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the clock covers finished GPU work only
            trained += time.perf_counter() - start
            next_knn += args.knn_every
            acc = pretrain.knn(cfg, run, data, trainer)
            points.append({"seconds": round(trained, 2), "steps": step, "knn_top1": acc})
            print(f"# {trained:.0f}s, {step} steps: kNN top-1 {acc:.2f}%", flush=True)
        trainer.batches.close()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
        views_per_s = step * args.batch * args.views / trained
        result = {
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "hardware": hardware_string(device),
            "settings": {"arch": "resnet18", "width": args.width, "small_images": True, "method": "barlowtwins",
                         "proj_dim": 256, "num_views": args.views, "batch": args.batch, "lr": 1e-3,
                         "weight_decay": 1e-6, "bf16": run.precision == "bf16", "budget_s": args.budget,
                         "knn_every_s": args.knn_every,
                         "knn": "k=200, T=0.1, bank = train split, queries = test split",
                         "train_images": len(data.train), "test_images": len(data.queries), "smoke": args.smoke,
                         "step": "recipes/pretrain.py train_step",
                         "optimizer": "fused Adam" if optimizer.defaults.get("fused") else "foreach Adam"},
            "points": points,
            "views_per_s": views_per_s,
            "peak_memory_mb": peak_memory_mb(device),
            "nan_skipped": trainer.guard.poll().skipped,
            "gather_waits": trainer.batches.gather.waits,
        }
    write_result(out, "gpu_speedrun", result, None if argv is None else ["benchmarks/gpu_speedrun.py", *argv])
    print(f"# {views_per_s:.0f} views/s, peak memory {result['peak_memory_mb']:.0f} MiB")
    return result


if __name__ == "__main__":
    main()
