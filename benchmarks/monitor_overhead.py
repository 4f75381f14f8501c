"""Cost of the label-free monitors (RankMe, alpha-ReQ, LiDAR) relative to training steps, on CPU.

Model: ResNet-18 width 16, small-image stem, projector 256 (``build_ssl_model('resnet18', small_images=True,
width=16, proj_dim=256)``), channels_last. Training step: batch 256 unique 32 px images, 4 views made by
``MultiViewAugment`` (bf16 output), forward under bf16 autocast, multi-view Barlow Twins loss
(recommended_beta), backward, Adam step. Monitor: ``monitor_model`` on a fixed held-out sample of N images
(1 clean + 4 augmented views per image, forward only, bf16 autocast, eval mode), split into the embedding
pass and the three measures on backbone features (256-d) and projector outputs (256-d).

Interleaved A/B in one process: each round runs ``--steps`` training steps (timed one by one) and then the
monitor once for every N in ``--sizes``, so both see the same machine load; the model keeps training
between monitors, as in a real run. Images are random uint8 (cost does not depend on pixel values).
Reports medians and, for several intervals K, the overhead ``monitor_s / (K * step_s)``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor_overhead.py [--rounds 3] [--steps 6] [--sizes 1000,2048]

``--recipe``: the same question asked of one real run of the pretraining recipe (``recipes/configs/demo.yaml``,
``--max_steps S --knn_every K``): the recipe times each call of the monitors (``monitor_seconds`` in its
metrics.jsonl, beside ``train_seconds``), which run between its training steps, so both see the same
machine. Overhead = monitor seconds / training seconds at that interval; the kNN (labels) is not counted.
JSON -> benchmarks/results/monitor_overhead_recipe.json.

    .venv/bin/python benchmarks/monitor_overhead.py --recipe [--recipe_steps 600] [--knn_every 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from mvssl_hub import build_loss, build_ssl_model, get_view_preset, recommended_beta
from mvssl_hub.device import bf16_is_fast, cpu_name
from mvssl_hub.eval.monitor import embed_sample, monitor_embeddings
from mvssl_hub.train.plots import read_metrics
from mvssl_hub.views import MultiViewAugment


def recipe_run(args: argparse.Namespace) -> None:
    """One pretraining run with the monitors every ``--knn_every`` steps; their cost from its own log."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(root / "recipes" / "pretrain.py"), "--config", str(root / args.config),
               "--max_steps", str(args.recipe_steps), "--time_budget", "none", "--knn_every", str(args.knn_every),
               "--monitors", "--output_dir", tmp, "--progress", "false", "--save_every", "0", "--export", "false",
               "--knn_random_init", "false"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"recipe failed ({proc.returncode}): {proc.stderr[-3000:]}")
        rows = read_metrics(Path(tmp) / "logs" / "metrics.jsonl")
    calls = [r for r in rows if "monitor_seconds" in r]
    train_s = max(r["train_seconds"] for r in rows if "train_seconds" in r)
    during = [r for r in calls if r["step"] < args.recipe_steps]  # the final call happens after training
    monitor_s = sum(r["monitor_seconds"] for r in during)
    result = {
        "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "torch": torch.__version__,
        "bf16_is_fast(cpu)": bf16_is_fast("cpu"), "command": f"python recipes/pretrain.py --config {args.config} "
                                                  f"--max_steps {args.recipe_steps} --knn_every {args.knn_every} --monitors",
        "steps": args.recipe_steps, "knn_every": args.knn_every, "train_seconds": round(train_s, 1),
        "monitor_calls_during_training": len(during), "monitor_seconds_each": [round(r["monitor_seconds"], 3) for r in calls],
        "monitor_seconds_during_training": round(monitor_s, 2),
        "overhead_pct": round(100 * monitor_s / train_s, 2), "wall_s": round(wall, 1),
        "protocol": "one recipe run; the monitors (1,000 held-out images, 1 clean + 4 views) run with each kNN, "
                    "between training steps; overhead = their seconds / training seconds (kNN excluded)",
    }
    print(f"{len(during)} monitor calls, {monitor_s:.1f}s against {train_s:.0f}s of training: "
          f"{result['overhead_pct']:.2f}% at every {args.knn_every} steps")
    out = args.out.with_name("monitor_overhead_recipe.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", action="store_true", help="measure inside one run of the pretraining recipe")
    ap.add_argument("--config", default="recipes/configs/demo.yaml")
    ap.add_argument("--recipe_steps", type=int, default=600)
    ap.add_argument("--knn_every", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="training steps per round")
    ap.add_argument("--sizes", default="1000,2048", help="held-out sample sizes N, comma-separated")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "monitor_overhead.json")
    args = ap.parse_args()
    if args.recipe:
        recipe_run(args)
        return
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    preset = get_view_preset("cifar10")
    bf16 = True  # the benchmark's stated setting, also where oneDNN emulates bf16 (recorded below)
    train_aug = MultiViewAugment(preset, output_dtype=torch.bfloat16, channels_last=True)
    monitor_aug = MultiViewAugment(preset)
    torch.manual_seed(0)
    model = build_ssl_model("resnet18", small_images=True, width=16, proj_dim=256).to(memory_format=torch.channels_last)
    beta = recommended_beta("barlowtwins", 256, args.views)
    loss_fn = build_loss("barlowtwins", beta)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (4 * args.batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    held = torch.randint(0, 256, (max(sizes), 3, 32, 32), dtype=torch.uint8, generator=g)
    step_no = 0

    def train_step() -> float:
        nonlocal step_no
        t0 = time.perf_counter()
        idx = torch.randperm(pool.shape[0], generator=g)[: args.batch]
        views = train_aug(pool[idx], args.views, generator=torch.Generator().manual_seed(step_no))
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model(views)
        loss = loss_fn(z.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_no += 1
        return time.perf_counter() - t0

    def monitor(n: int) -> dict:
        t0 = time.perf_counter()
        emb = embed_sample(model, held[:n], monitor_aug, num_views=args.views, seed=0, batch_size=1280, bf16=bf16)
        t1 = time.perf_counter()
        rep = monitor_embeddings(emb.features, emb.projections, feature_views=emb.feature_views,
                                 projection_views=emb.projection_views, protocol=emb.protocol)
        t2 = time.perf_counter()
        return {"embed_s": t1 - t0, "measures_s": t2 - t1, "total_s": t2 - t0,
                "values": {k: round(v, 4) for k, v in rep.values().items()}}

    # warm-up: oneDNN primitive creation, first-touch allocations (not timed)
    train_step()
    monitor(min(sizes))

    steps: list[float] = []
    mons: dict[int, list[dict]] = {n: [] for n in sizes}
    for r in range(args.rounds):
        steps.extend(train_step() for _ in range(args.steps))
        for n in sizes:
            mons[n].append(monitor(n))
        print(f"round {r + 1}/{args.rounds}: step median so far {statistics.median(steps):.3f}s; monitor "
              + ", ".join(f"N={n} {mons[n][-1]['total_s']:.2f}s" for n in sizes), flush=True)

    step_s = statistics.median(steps)
    intervals = [19, 100, 500, 1000]  # 19 = one epoch of the 5k-image demo at batch 256
    summary = {}
    for n in sizes:
        tot = statistics.median(m["total_s"] for m in mons[n])
        summary[str(n)] = {
            "median_total_s": round(tot, 3),
            "median_embed_s": round(statistics.median(m["embed_s"] for m in mons[n]), 3),
            "median_measures_s": round(statistics.median(m["measures_s"] for m in mons[n]), 4),
            "step_equivalents": round(tot / step_s, 3),
            "overhead_pct_every_K_steps": {str(k): round(100 * tot / (k * step_s), 3) for k in intervals},
            "total_s": [round(m["total_s"], 3) for m in mons[n]],
            "embed_s": [round(m["embed_s"], 3) for m in mons[n]],
            "measures_s": [round(m["measures_s"], 4) for m in mons[n]],
            "last_values": mons[n][-1]["values"],
        }
    result = {
        "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "torch": torch.__version__,
        "threads": args.threads, "bf16_is_fast(cpu)": bf16_is_fast("cpu"), "bf16_autocast": bf16,
        "model": "resnet18 width 16, small-image stem, projector 256 (2-layer), channels_last",
        "train_step": f"batch {args.batch} x {args.views} views (32 px), MultiViewAugment bf16, bf16 autocast, "
                      f"Barlow Twins (auto form, beta {beta:g}), backward, Adam",
        "monitor_protocol": f"embed_sample (1 clean + {args.views} augmented views, eval mode, bf16 autocast, 1280 inputs "
                   "per forward) + RankMe, alpha-ReQ (clean view) and LiDAR (views) on backbone and projector, "
                   "float64",
        "protocol": f"{args.rounds} interleaved rounds of {args.steps} timed training steps then one monitor per "
                    "N; 1 warm-up step and monitor untimed; random uint8 images",
        "rounds": args.rounds, "steps_per_round": args.steps,
        "step_s": [round(s, 3) for s in steps], "median_step_s": round(step_s, 3),
        "monitor": summary,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    for n in sizes:
        s = summary[str(n)]
        print(f"N={n}: monitor {s['median_total_s']:.2f}s (embed {s['median_embed_s']:.2f}s, measures "
              f"{s['median_measures_s']:.3f}s) = {s['step_equivalents']:.2f} training steps of {step_s:.2f}s; "
              + ", ".join(f"every {k} steps: {v:.2f}%" for k, v in s["overhead_pct_every_K_steps"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
