"""More views on less data: (2 views, 100%), (4 views, 50%), (8 views, 25%) at equal views per epoch and steps.

The paper's second claim (docs/method.md): with M views per image, a fraction of the data reaches the
accuracy of two views on all of it. Here every run sees the same number of views per epoch (M x fraction
= 2 x 100%) and takes the same number of optimiser steps at the same batch of unique images, so the runs
differ in data (a class-balanced fraction, ``--fraction``) and in work per step (M views per image).

Each run is ``recipes/pretrain.py --config CONFIG --num_views M --fraction F --max_steps S --run_state_every K``
(``--clock process --threads 1``: its own CPU seconds, fair when runs share the machine; its kNN monitor
off). Every kept checkpoint is then evaluated with the projector x beta study's protocol
(``beta_study.evaluate_model``: kNN top-1, k = 200, bank = the config's training split (all of it, not the
fraction), queries = CIFAR-10's 10,000 test images when present; RankMe / alpha-ReQ / LiDAR on a fixed
held-out sample). Reported against each checkpoint's training seconds: the curve of kNN against
wall-clock (CPU seconds at one thread), with the random-init kNN of the same network as a line.

Resumable: runs are keyed by (M, fraction) in ``benchmarks/results/views_fraction.json``, rewritten after
every run; a finished run is not rerun. ``--markdown`` prints the README table from the JSON.

    python benchmarks/studies/views_fraction.py                     # 3 runs, ~15 CPU-minutes (2 side by side)
    python benchmarks/studies/views_fraction.py --analyze_only      # re-plot the stored runs
    python benchmarks/studies/views_fraction.py --dry_run           # pipeline check (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import beta_study
import torch

from mvssl_hub.train.run_state import load_run_state_model as load_run_state_model_with
from mvssl_hub.train.run_state import read_run_config, run_states_dir
from recipes import load_recipe

from harness import ROOT, default_out, write_result

pretrain = load_recipe("pretrain")  # the recipe's own model: a run state loads into what the run trained

RUNS = ((2, 1.0), (4, 0.5), (8, 0.25))
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "views_fraction.json"


def run_key(m: int, fraction: float) -> str:
    return f"m{m}_f{fraction:g}"


def load_run_state_model(run_state: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The SSL model of one run state (``step-*/``, strict load), and its training state."""
    return load_run_state_model_with(run_state, pretrain.model_from_config)


def train_and_evaluate(args: argparse.Namespace, base: dict[str, Any], m: int, fraction: float) -> dict[str, Any]:
    run_dir = args.out_dir / run_key(m, fraction)
    every = max(1, args.steps // args.points)
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--config", str(args.config),
           "--num_views", str(m), "--fraction", str(fraction), "--max_steps", str(args.steps), "--time_budget", "none",
           "--epochs", "100000", "--clock", "process", "--threads", "1", "--run_state_every", str(every),
           "--keep_run_states", str(args.points + 1), "--eval_split=", "--knn_random_init", "false",
           "--output_dir", str(run_dir), "--overwrite", "true", "--progress", "false", "--export", "false",
           "--seed", str(args.seed)]
    if args.smoke:
        cmd += ["--limit", "64", "--batch_size", "16", "--width", "4", "--log_every", "1"]
    elif args.dry_run:
        cmd += ["--limit", "512", "--batch_size", "32", "--log_every", "1"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "study_train.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        tail = (run_dir / "study_train.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"pretrain failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    torch.set_num_threads(1)
    data = beta_study.load_eval_data(args, base)
    points = []
    for run_state in sorted(run_states_dir(run_dir).glob("step-*")):
        model, state = load_run_state_model(run_state)
        ev = beta_study.evaluate_model(model, data, args)
        points.append({"step": state["global_step"], "train_seconds": round(state["train_seconds"], 1),
                       "images_seen": state["images_seen"], "knn_top1": ev["knn_top1"], "monitors": ev["monitors"]})
    train_cfg = read_run_config(run_states_dir(run_dir) / f"step-{points[-1]['step']:08d}")
    torch.manual_seed(args.seed)  # the recipe's seed before building its model: the same random init
    random_knn = beta_study.evaluate_model(pretrain.model_from_config(train_cfg), data, args)["knn_top1"]
    return {"num_views": m, "fraction": fraction, "steps": args.steps, "points": points,
            "knn_random_init": random_knn, "knn_protocol": ev["knn_protocol"],
            "beta": train_cfg.get("resolved_beta"), "status": "done"}


def plot(store: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    randoms = []
    for r in store["runs"].values():
        if r.get("status") != "done":
            continue
        xs = [p["train_seconds"] for p in r["points"]]
        ys = [p["knn_top1"] for p in r["points"]]
        ax.plot(xs, ys, marker="o", label=f"{r['num_views']} views, {r['fraction']:.0%} of the images")
        randoms.append(r["knn_random_init"])
    if randoms:
        ax.axhline(sum(randoms) / len(randoms), color="gray", linestyle="--", label="random init")
    ax.set_xlabel("training time (CPU seconds, 1 thread)")
    ax.set_ylabel("kNN top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(store: dict[str, Any]) -> str:
    lines = ["| views | fraction of images | steps | training CPU-s | kNN top-1 (random init) | kNN at the middle evaluation |",
             "|---|---|---|---|---|---|"]
    for r in store["runs"].values():
        if r.get("status") != "done":
            continue
        last, mid = r["points"][-1], r["points"][(len(r["points"]) - 1) // 2]
        lines.append(f"| {r['num_views']} | {r['fraction']:.0%} | {last['step']} | {last['train_seconds']:.0f} | "
                     f"{last['knn_top1']:.2f} ({r['knn_random_init']:.2f}, {last['knn_top1'] - r['knn_random_init']:+.1f}) | "
                     f"{mid['knn_top1']:.2f} at step {mid['step']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "recipes" / "configs" / "demo.yaml")
    ap.add_argument("--steps", type=int, default=1000, help="optimiser steps of every run")
    ap.add_argument("--points", type=int, default=5, help="evaluated run states per run")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--monitor_images", type=int, default=1000)
    ap.add_argument("--monitor_views", type=int, default=4)
    ap.add_argument("--eval_data", type=Path,
                    default=beta_study.DEFAULT_EVAL_DATA if beta_study.DEFAULT_EVAL_DATA.is_dir() else None)
    ap.add_argument("--out_dir", type=Path, default=None, help="run folders (default runs/views_fraction[_dry])")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--dry_run", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="seconds: one run (2 views), width 4, 2 steps, temporary folder")
    ap.add_argument("--out", type=Path, default=None, help="the same as --results")
    ap.add_argument("--analyze_only", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    args.results = args.results or args.out
    runs = RUNS
    if args.smoke:  # never near the real study's runs or results
        import tempfile

        args.dry_run, args.jobs, args.eval_data, runs = True, 1, None, RUNS[:1]
        args.results = args.results or default_out("views_fraction", smoke=True)
        args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="views-fraction-smoke-"))
    if args.dry_run:
        args.steps, args.points, args.monitor_images = (2, 1, 32) if args.smoke else (4, 2, 128)
    args.out_dir = args.out_dir or ROOT / "runs" / ("views_fraction_dry" if args.dry_run else "views_fraction")
    results = args.results or (args.out_dir / "views_fraction.json" if args.dry_run else DEFAULT_RESULTS)
    import yaml

    base = yaml.safe_load(args.config.read_text())
    settings = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
                "config_values": {k: base[k] for k in ("width", "batch_size", "lr", "proj_dim", "data") if k in base},
                "steps": args.steps, "points": args.points, "seed": args.seed, "dry_run": args.dry_run,
                "clock": "process CPU seconds, 1 thread per run", "monitor_images": args.monitor_images,
                "queries": "CIFAR-10 test (uoft-cs/cifar10)" if args.eval_data else "the config's test split"}
    store = json.loads(results.read_text()) if results.exists() else {"settings": settings, "runs": {}}
    if args.markdown:
        print(markdown(store))
        return
    if store["settings"] != settings:
        sys.exit(f"error: {results} holds runs made with settings {store['settings']}, not {settings}")
    if not args.analyze_only:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        results.parent.mkdir(parents=True, exist_ok=True)
        lock = threading.Lock()
        todo = [(m, f) for m, f in runs if store["runs"].get(run_key(m, f), {}).get("status") != "done"]
        print(f"# {len(todo)} of {len(runs)} runs to do ({results})", flush=True)

        def one(mf: tuple[int, float]) -> None:
            t0 = time.time()
            r = train_and_evaluate(args, base, *mf)
            with lock:
                store["runs"][run_key(*mf)] = r
                beta_study.write_json(results, store)
            last = r["points"][-1]
            print(f"{run_key(*mf)}: kNN {last['knn_top1']:.2f}% (random {r['knn_random_init']:.2f}) after "
                  f"{last['step']} steps, {last['train_seconds']:.0f} CPU-s ({time.time() - t0:.0f}s wall)", flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, todo))  # the largest M first in RUNS' reverse would balance better; kept simple
    store = write_result(results, "views_fraction", store)
    png = results.with_suffix(".png")
    plot(store, png, f"views x data fraction at equal views/epoch and {args.steps} steps; config {settings['config']}"
         + ("  [DRY RUN]" if args.dry_run else ""))
    print(markdown(store))
    print(f"wrote {results} and {png}")


if __name__ == "__main__":
    main()
