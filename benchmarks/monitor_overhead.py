"""Cost of the label-free monitors (RankMe, alpha-ReQ, LiDAR) relative to training steps, on CPU.

Training step: the pretraining recipe's own (``recipes/pretrain.py``: ``setup`` then ``train_step``), on the
embedded 5k CIFAR-10 cut, with ``--arch resnet18 --width 16 --small_images true --proj_dim 256 --num_views 4
--batch_size 256 --precision auto`` (bf16 where it is native), Barlow Twins at recommended_beta, Adam 1e-3:
views by the recipe's ``MultiViewAugment``, forward, loss, backward, the guarded update. Monitor: the recipe's
call, split into ``embed_sample`` (1 clean + 4 augmented views per image, forward only, eval mode, bf16
autocast where fast) and ``monitor_embeddings`` (the three measures on backbone features and projector
outputs), on the first N training images of the cut (cost does not depend on which images).

Interleaved A/B in one process: each round runs ``--steps`` training steps (timed one by one) and then the
monitor once for every N in ``--sizes``, so both see the same machine load; the model keeps training
between monitors, as in a real run. Reports medians and, for several intervals K, the overhead
``monitor_s / (K * step_s)``. JSON -> benchmarks/results/monitor_overhead.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor_overhead.py [--rounds 3] [--steps 6] [--sizes 1000,2048]

``--recipe``: the same question asked of one real run of the pretraining recipe (``recipes/configs/demo.yaml``,
``--max_steps S --knn_every K``, in this process): the recipe times each call of the monitors
(``monitor_seconds`` in its metrics.jsonl, beside ``train_seconds``), which run between its training steps, so
both see the same machine. Overhead = monitor seconds / training seconds at that interval; the kNN (labels)
is not counted. JSON -> benchmarks/results/monitor_overhead_recipe.json.

    .venv/bin/python benchmarks/monitor_overhead.py --recipe [--recipe_steps 600] [--knn_every 100]

``--smoke`` (seconds, width 4, 64 images, a temporary folder): the A/B into ``--out`` and then the recipe run
into ``<out stem>_recipe.json`` beside it; ``--smoke --recipe``: the recipe run alone, into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import tempfile
from pathlib import Path
from typing import Any

from harness import EMBEDDED_DATA, ROOT, Timer, add_common_args, default_out, write_result

# tiny settings for --smoke: the code path in seconds, numbers meaningless
SMOKE_AB = {"width": 4, "proj_dim": 16, "batch": 16, "rounds": 1, "steps": 2, "sizes": "32", "limit": 64}
SMOKE_RECIPE = ["--width", "4", "--proj_dim", "16", "--limit", "64", "--eval_limit", "64", "--batch_size", "16",
                "--knn_k", "10", "--knn_every_seconds", "0"]
INTERVALS = [19, 100, 500, 1000]  # 19 = one epoch of the 5k-image demo at batch 256


def recipe_run(args: argparse.Namespace, out: Path) -> None:
    """One pretraining run with the monitors every ``--knn_every`` steps; their cost from its own log."""
    from mvssl_hub.device import bf16_is_fast, cpu_name
    from mvssl_hub.train.plots import read_metrics
    from recipes import load_recipe

    pretrain = load_recipe("pretrain")
    settings = ["--max_steps", str(args.recipe_steps), "--time_budget", "none", "--knn_every", str(args.knn_every),
                "--monitors", "true", "--progress", "false", "--run_state_every", "0", "--export", "false",
                "--knn_random_init", "false", *(SMOKE_RECIPE if args.smoke else [])]
    with tempfile.TemporaryDirectory(prefix="monitor_overhead-") as tmp, Timer() as wall:
        pretrain.main(["--config", str(ROOT / args.config), *settings, "--output_dir", tmp])
        rows = read_metrics(Path(tmp) / "logs" / "metrics.jsonl")
    calls = [r for r in rows if "monitor_seconds" in r]
    train_s = max(r["train_seconds"] for r in rows if "train_seconds" in r)
    during = [r for r in calls if r["step"] < args.recipe_steps]  # the final call happens after training
    monitor_s = sum(r["monitor_seconds"] for r in during)
    result = {
        "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "bf16_is_fast(cpu)": bf16_is_fast("cpu"),
        "recipe_command": shlex.join(["python", "recipes/pretrain.py", "--config", args.config, *settings]),
        "steps": args.recipe_steps, "knn_every": args.knn_every, "train_seconds": round(train_s, 1),
        "monitor_calls_during_training": len(during), "monitor_seconds_each": [round(r["monitor_seconds"], 3) for r in calls],
        "monitor_seconds_during_training": round(monitor_s, 2),
        "overhead_pct": round(100 * monitor_s / train_s, 2), "wall_s": round(wall.seconds, 1),
        "protocol": "one recipe run; the monitors (1,000 held-out images, 1 clean + 4 views) run with each kNN, "
                    "between training steps; overhead = their seconds / training seconds (kNN excluded)",
        **({"smoke": True} if args.smoke else {}),
    }
    print(f"{len(during)} monitor calls, {monitor_s:.1f}s against {train_s:.0f}s of training: "
          f"{result['overhead_pct']:.2f}% at every {args.knn_every} steps")
    write_result(out, "monitor_overhead", result)


def recipe_argv(args: argparse.Namespace, output_dir: str) -> list[str]:
    """The recipe's command line for the A/B's network and step (no kNN, no export, no checkpoint)."""
    return ["--data", str(EMBEDDED_DATA), "--arch", "resnet18", "--width", str(args.width), "--small_images", "true",
            "--proj_dim", str(args.proj_dim), "--num_views", str(args.views), "--batch_size", str(args.batch),
            "--precision", "auto", "--threads", str(args.threads), "--seed", "0", "--eval_split", "",
            "--knn_random_init", "false", "--monitors", "false", "--export", "false", "--run_state_every", "0",
            "--progress", "false", "--output_dir", output_dir, *(["--limit", str(args.limit)] if args.limit else [])]


def timed_rounds(args: argparse.Namespace, sizes: list[int], tmp: str) -> tuple[Any, Any, Any, list[float],
                                                                             dict[int, list[dict]]]:
    """Set the recipe up in ``tmp``, warm up (one step, one monitor: untimed), then ``args.rounds`` rounds of
    ``args.steps`` timed training steps each followed by one timed monitor call per sample size. (cfg, run, trainer,
    the step seconds, the monitor calls by size.)"""
    from mvssl_hub.eval.monitor import embed_sample, monitor_embeddings
    from recipes import load_recipe

    pretrain = load_recipe("pretrain")
    cfg, run, data, trainer = pretrain.setup(recipe_argv(args, tmp))
    if len(data.train) < max(sizes):
        raise SystemExit(f"--sizes: {max(sizes)} images asked, the training split has {len(data.train)}")
    held = data.train.images[: max(sizes)]
    model = run.accelerator.unwrap_model(trainer.model)
    trainer.train_model.train()
    step_no = 0

    def train_step() -> float:
        nonlocal step_no
        with Timer(device=run.device) as t:
            pretrain.train_step(cfg, run, trainer, step_no)
        step_no += 1
        return t.seconds

    def monitor(n: int) -> dict[str, Any]:  # the recipe's monitor_model call, in its two parts
        with Timer(device=run.device) as embed:
            emb = embed_sample(model, held[:n], trainer.augment, num_views=args.views, seed=cfg.seed,
                               channels_last=cfg.channels_last)
        with Timer() as measures:
            rep = monitor_embeddings(emb.features, emb.projections, feature_views=emb.feature_views,
                                     projection_views=emb.projection_views, protocol=emb.protocol)
        return {"embed_s": embed.seconds, "measures_s": measures.seconds,
                "total_s": embed.seconds + measures.seconds,
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
    return cfg, run, trainer, steps, mons


def monitor_summary(calls: list[dict], step_s: float) -> dict[str, Any]:
    """One sample size's monitor calls: medians, the cost in training steps and as a share of K steps, every call."""
    tot = statistics.median(m["total_s"] for m in calls)
    return {
        "median_total_s": round(tot, 3),
        "median_embed_s": round(statistics.median(m["embed_s"] for m in calls), 3),
        "median_measures_s": round(statistics.median(m["measures_s"] for m in calls), 4),
        "step_equivalents": round(tot / step_s, 3),
        "overhead_pct_every_K_steps": {str(k): round(100 * tot / (k * step_s), 3) for k in INTERVALS},
        "total_s": [round(m["total_s"], 3) for m in calls],
        "embed_s": [round(m["embed_s"], 3) for m in calls],
        "measures_s": [round(m["measures_s"], 4) for m in calls],
        "last_values": calls[-1]["values"],
    }


def interleaved(args: argparse.Namespace, out: Path) -> None:
    """The A/B: rounds of recipe training steps, each followed by one monitor call per sample size."""
    from mvssl_hub.device import bf16_is_fast, cpu_name

    sizes = [int(s) for s in args.sizes.split(",")]
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="monitor_overhead-") as tmp, Timer() as wall:
        cfg, run, trainer, steps, mons = timed_rounds(args, sizes, tmp)
    step_s = statistics.median(steps)
    summary = {str(n): monitor_summary(mons[n], step_s) for n in sizes}
    channels_last = trainer.augment.channels_last  # the recipe's choice (contiguous where oneDNN's hazard is)
    result = {
        "hardware": f"{cpu_name()}, {os.cpu_count()} logical CPUs",
        "threads": args.threads, "bf16_is_fast(cpu)": bf16_is_fast("cpu"), "precision": run.precision,
        "bf16_autocast": run.precision == "bf16",
        "model": f"resnet18 width {args.width}, small-image stem, projector {args.proj_dim} (2-layer), "
                 f"{'channels_last' if channels_last else 'contiguous'}",
        "train_step": f"recipes/pretrain.py train_step: batch {args.batch} x {args.views} views (32 px), "
                      f"MultiViewAugment, {run.precision}, Barlow Twins (auto form, beta {cfg.resolved_beta():g}), "
                      "backward, Adam",
        "recipe_command": shlex.join(["python", "recipes/pretrain.py", *recipe_argv(args, "TMP")]).replace(f"{ROOT}/", ""),
        "monitor_protocol": f"embed_sample (1 clean + {args.views} augmented views, eval mode, bf16 autocast where "
                            "fast, 512 inputs per forward) + RankMe, alpha-ReQ (clean view) and LiDAR (views) on "
                            "backbone and projector, float64",
        "protocol": f"{args.rounds} interleaved rounds of {args.steps} timed training steps then one monitor per "
                    "N; 1 warm-up step and monitor untimed; the first N images of the embedded 5k CIFAR-10 cut",
        "rounds": args.rounds, "steps_per_round": args.steps,
        "step_s": [round(s, 3) for s in steps], "median_step_s": round(step_s, 3),
        "monitor": summary,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(wall.seconds, 1),
        **({"smoke": True} if args.smoke else {}),
    }
    for n in sizes:
        s = summary[str(n)]
        print(f"N={n}: monitor {s['median_total_s']:.2f}s (embed {s['median_embed_s']:.2f}s, measures "
              f"{s['median_measures_s']:.3f}s) = {s['step_equivalents']:.2f} training steps of {step_s:.2f}s; "
              + ", ".join(f"every {k} steps: {v:.2f}%" for k, v in s["overhead_pct_every_K_steps"].items()))
    write_result(out, "monitor_overhead", result)


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
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--proj_dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    add_common_args(ap, "monitor_overhead")
    args = ap.parse_args()
    args.limit = None
    if args.smoke:
        for key, value in SMOKE_AB.items():
            setattr(args, key, value)
        args.recipe_steps, args.knn_every = 2, 1
    if args.recipe:
        recipe_run(args, default_out("monitor_overhead_recipe", args.smoke, args.out))
        return
    out = default_out("monitor_overhead", args.smoke, args.out)
    interleaved(args, out)
    if args.smoke:  # the second mode's code path too, beside the first
        recipe_run(args, out.with_name(f"{out.stem}_recipe.json"))


if __name__ == "__main__":
    main()
