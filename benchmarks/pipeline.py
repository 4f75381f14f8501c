"""Does the data path keep the network busy? Full training step with data vs the same step on ready tensors.

For each number of views M (default 2, 4, 8), two variants of one pretraining step are timed, interleaved
(A, B, A, B, ...) in one process so that machine noise hits both alike:

- ``data``: index sampling (seeded permutation slice), gather from the in-memory uint8 image tensor,
  ``MultiViewAugment`` (batched, on the training device), forward, loss, backward, Adam step;
- ``premade``: forward, loss, backward, Adam step on views made once before timing.

Reported: median seconds per step of each variant, views/s, and ratio = data views/s / premade views/s.
Defaults: ResNet-18 full width (small-image stem), 32 px, d = 256 (Barlow Twins, recommended beta),
batch 256 images, bf16 autocast + channels_last where fast, 2 threads. JSON -> benchmarks/results/pipeline.json.

    python benchmarks/pipeline.py                       # ~5-10 min on 2 cores
    python benchmarks/pipeline.py --quick               # < 1 min: M=4, width 16, batch 64, no JSON written
    python benchmarks/pipeline.py --device cuda         # on a GPU: split kept on the GPU, fused Adam, TF32

On CUDA the data path is the training one: ``place_split`` + ``BatchGather`` (no blocking copies),
``configure_backends`` (cudnn.benchmark, TF32) and ``make_adam`` (fused); timings synchronise the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.data.pinned import BatchGather, place_split
from mvssl_hub.data.sampling import epoch_batches, make_generator
from mvssl_hub.data.splits import load_split
from mvssl_hub.device import bf16_is_fast, hardware_string
from mvssl_hub.losses import build_loss, recommended_beta
from mvssl_hub.models import build_ssl_model
from mvssl_hub.train.backends import apply_memory_format, configure_backends, make_adam
from mvssl_hub.views import MultiViewAugment, get_view_preset

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--batch", type=int, default=256, help="unique images per step")
    p.add_argument("--width", type=int, default=64, help="ResNet-18 width (64 = full)")
    p.add_argument("--proj-dim", type=int, default=256)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat and variant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant and M first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--data", default=str(ROOT / "recipes" / "data" / "cifar10-5k"))
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true",
                   help="short run: M=4, width 16, batch 64, 1 step x 2 repeats; no JSON unless --out")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/pipeline[_cuda].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.views, args.width, args.batch, args.steps, args.repeats, args.warmup = [4], 16, 64, 1, 2, 1
    elif args.out is None:
        suffix = "" if args.device == "cpu" else f"_{torch.device(args.device).type}"
        args.out = str(ROOT / "benchmarks" / "results" / f"pipeline{suffix}.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    configure_backends(device, deterministic=False)
    cuda = device.type == "cuda"

    def sync() -> None:  # timings cover finished device work
        if cuda:
            torch.cuda.synchronize(device)
    bf16 = bf16_is_fast(device) if args.precision == "auto" else args.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    host_images = load_split(args.data, "train").images  # uint8 (N, 3, 32, 32), decoded once
    images = place_split(host_images, device)  # on the GPU when it fits, else pinned host memory
    gather = BatchGather(images, device, args.batch)
    preset = get_view_preset("cifar10")
    model = build_ssl_model("resnet18", small_images=True, width=args.width, proj_dim=args.proj_dim)
    channels_last = apply_memory_format(model, device)
    augment = MultiViewAugment(preset, output_dtype=dtype, channels_last=channels_last)
    model = model.to(device).train()
    optimizer = make_adam(model.parameters(), 1e-3, 1e-6, device)
    n = images.shape[0]

    def optimise(views: torch.Tensor, loss_fn: torch.nn.Module) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z = model(views)
        loss = loss_fn(z.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = {"step": 0}

    def data_step(m: int, loss_fn: torch.nn.Module) -> None:
        step = counter["step"]
        counter["step"] += 1
        batches = epoch_batches(n, args.batch, seed=0, epoch=step // (n // args.batch))
        idx = batches[step % batches.shape[0]]
        views = augment(gather(idx), m, generator=make_generator(0, step))
        optimise(views, loss_fn)

    results = []
    for m in args.views:
        loss_fn = build_loss("barlowtwins", recommended_beta("barlowtwins", args.proj_dim, m))
        fixed = augment(gather(torch.arange(args.batch)), m, generator=make_generator(1, m))
        variants = {"data": lambda m=m, loss_fn=loss_fn: data_step(m, loss_fn),
                    "premade": lambda fixed=fixed, loss_fn=loss_fn: optimise(fixed, loss_fn)}
        for fn in variants.values():
            for _ in range(args.warmup):
                fn()
        sync()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                t = time.perf_counter()
                for _ in range(args.steps):
                    variants[name]()
                sync()
                times[name].append((time.perf_counter() - t) / args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        views_per_step = m * args.batch
        row = {
            "num_views": m,
            "seconds_per_step": times,
            "median_seconds_per_step": med,
            "views_per_s": {k: views_per_step / v for k, v in med.items()},
            "images_per_s": {k: args.batch / v for k, v in med.items()},
            "ratio_data_over_premade": med["premade"] / med["data"],
        }
        results.append(row)
        print(f"M={m}: data {row['views_per_s']['data']:.1f} views/s, premade {row['views_per_s']['premade']:.1f} "
              f"views/s, ratio {row['ratio_data_over_premade']:.3f}  (per-repeat s/step: "
              f"data {[round(x, 2) for x in times['data']]}, premade {[round(x, 2) for x in times['premade']]})",
              flush=True)

    # How long the data path alone takes (index + gather + augmentation), for context.
    aug_times = {}
    for m in args.views:
        ts = []
        for r in range(max(3, args.repeats)):
            t = time.perf_counter()
            idx = epoch_batches(n, args.batch, seed=0, epoch=r)[0]
            augment(gather(idx), m, generator=make_generator(2, r))
            sync()
            ts.append(time.perf_counter() - t)
        aug_times[m] = statistics.median(ts)
    out = {
        "benchmark": "pipeline",
        "what": "full training step (index sampling + uint8 gather + MultiViewAugment + fwd + loss + bwd + Adam) "
                "vs the same step on pre-made views; interleaved repeats, medians",
        "settings": {"arch": "resnet18", "width": args.width, "small_images": True, "image_size": 32,
                     "proj_dim": args.proj_dim, "batch_images": args.batch, "steps_per_repeat": args.steps,
                     "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                     "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": channels_last,
                     "device": str(device), "optimizer": "fused Adam" if cuda else "foreach Adam",
                     "split_on_device": images.device.type != "cpu"},
        "hardware": hardware_string(device),
        "platform": platform.platform(),
        "results": results,
        "data_path_only_median_s": {str(k): v for k, v in aug_times.items()},
    }
    print("data path alone (index + gather + augment), median s: "
          + ", ".join(f"M={k}: {v:.3f}" for k, v in aug_times.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
