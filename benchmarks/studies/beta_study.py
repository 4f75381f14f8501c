"""Projector width x beta study: do label-free monitors pick the same beta as kNN?

Grid: projector output width d in {64, 256, 1024, 2048} x four orthogonality weights beta per d:
- ``fixed``: the beta tuned for the largest d of the grid, applied to every d (docs/method.md's
  "fixed beta" comparison; for Barlow Twins the tuned table of method.md, 0.001 at d = 2048),
- ``recommended``: ``recommended_beta(method, d, num_views)``,
- ``half`` / ``twice``: recommended / 2 and recommended * 2.

Each cell is a short fixed-budget pretraining run of ``recipes/pretrain.py`` (the recipe's CLI:
``--config CONFIG --time_budget S --clock process --threads 1 --proj_dim d --beta b``, its own kNN monitor
off), then, on the exported checkpoint (``from_pretrained(export, with_projector=True)``):
- kNN top-1 (k = 200, T = 0.1, cosine, clean view; bank = the config's train split, queries = the 10,000
  CIFAR-10 test images from ``--eval_data`` when present, else the config's test split),
- RankMe, alpha-ReQ (clean view) and LiDAR (``--monitor_views`` augmented views, fixed seed) on backbone
  features and projector outputs of a fixed held-out sample (the first ``--monitor_images`` query images).

Each cell runs in its own worker process (``--cell``), ``--jobs`` side by side. The clock is each cell's
own CPU seconds at one thread, so cells sharing two cores get the same work.

Resumable: results are keyed by cell (``d{d}_{variant}``) in a JSON file (``--results``, default
``benchmarks/results/beta_study.json``) rewritten after every cell; finished cells are not rerun. The file
records the study's settings and refuses to mix cells run under different settings. Analysis (always
recomputed from the stored cells): Spearman correlation of each monitor with kNN over all finished cells
(pooled) and within each d (mean of the per-d rhos, on the preference score below), and per d whether the
beta a monitor prefers (highest RankMe / LiDAR; alpha-ReQ closest to 1, as Agrawal et al. 2022 report the
best representations near alpha = 1) is kNN's best beta. Heatmaps (one panel per measure, rows d, columns
beta variant, best cell per row outlined) go to the PNG beside the JSON; ``--markdown`` prints the README
tables from the JSON.

``--dry_run`` uses tiny settings (2 steps at batch 64 on 512 images, 256-image kNN, 128-image monitor
sample) and writes under runs/beta_study_dry/ so the pipeline can be checked end to end in a few minutes;
its numbers mean nothing.

    pip install -e ".[train,bench]"                                         # matplotlib for the heatmaps
    python benchmarks/studies/beta_study.py --budget_s 180                         # 16 cells, ~35 min on 2 CPU cores
    python benchmarks/studies/beta_study.py --dry_run --dims 64,2048               # pipeline check
    python benchmarks/studies/beta_study.py --config recipes/configs/demo_vit.yaml --results benchmarks/results/beta_study_vit.json
                                                                           # the same grid on a timm ViT
    python benchmarks/studies/beta_study.py --analyze_only                         # re-plot stored cells
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mvssl_hub.losses import recommended_beta
from mvssl_hub.train.plots import read_metrics

from harness import ROOT, default_out, write_result

DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "beta_study.json"
DEFAULT_EVAL_DATA = ROOT.parent / "shared" / "data" / "cifar10"
DIMS = (64, 256, 1024, 2048)
VARIANTS = ("fixed", "recommended", "half", "twice")
DISPLAY_ORDER = ("fixed", "half", "recommended", "twice")  # plots and tables
# docs/method.md: Barlow Twins beta tuned per d (ResNet-50, CIFAR-10, batch 512, 2 views).
TUNED_BT_BETA = {64: 0.04, 128: 0.04, 256: 0.02, 512: 0.01, 1024: 0.002, 2048: 0.001, 4096: 4e-4, 8192: 8e-4}
MONITORS = ("rankme", "alpha_req", "lidar")
SPACES = ("backbone", "projector")


def variant_beta(method: str, variant: str, d: int, dims: list[int], num_views: int) -> float:
    if variant == "fixed":
        d_max = max(dims)
        if method == "barlowtwins" and d_max in TUNED_BT_BETA:
            return TUNED_BT_BETA[d_max]
        return recommended_beta(method, d_max, num_views)
    rec = recommended_beta(method, d, num_views)
    return {"recommended": rec, "half": rec / 2, "twice": rec * 2}[variant]


# --------------------------------------------------------------------------------------------------
# Statistics


def ranks(xs: list[float]) -> list[float]:
    """1-based ranks, ties get their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None for < 3 pairs or a constant input."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return None
    rx, ry = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def preference(name: str, value: float | None) -> float | None:
    """Score where higher = the monitor prefers this cell: RankMe/LiDAR as they are, alpha-ReQ -|alpha - 1|."""
    if value is None or not math.isfinite(value):
        return None
    return -abs(value - 1.0) if name == "alpha_req" else value


def analyze(cells: dict[str, dict], dims: list[int], variants: list[str]) -> dict[str, Any]:
    done = [c for c in cells.values() if c.get("status") == "done"]
    knn = [c["knn_top1"] for c in done]
    out: dict[str, Any] = {"num_cells": len(done), "spearman_with_knn": {}, "best_beta_per_d": {}}
    for space in SPACES:
        for name in MONITORS:
            key = f"{space}/{name}"
            vals = [c["monitors"].get(key) for c in done]
            entry = {"raw": spearman(vals, knn), "cells": len(done)}
            if name == "alpha_req":
                entry["preference_-|alpha-1|"] = spearman([preference(name, v) for v in vals], knn)
            # Pooled rho mixes widths: RankMe/LiDAR of the projector are capped by d, and kNN changes with d
            # too. Choosing beta is a within-d question, so also the mean of the per-d rhos.
            per_d = []
            for d in dims:
                row = [c for c in done if c["d"] == d]
                rho = spearman([preference(name, c["monitors"].get(key)) for c in row], [c["knn_top1"] for c in row])
                if rho is not None:
                    per_d.append(rho)
            entry["within_d_mean"] = sum(per_d) / len(per_d) if per_d else None
            entry["within_d_rows"] = len(per_d)
            out["spearman_with_knn"][key] = entry
    agree: dict[str, int] = {f"{s}/{m}": 0 for s in SPACES for m in MONITORS}
    rows_complete = 0
    for d in dims:
        row = {v: cells.get(f"d{d}_{v}") for v in variants}
        row = {v: c for v, c in row.items() if c and c.get("status") == "done"}
        if not row:
            continue
        best_knn = max(row, key=lambda v: row[v]["knn_top1"])
        rec: dict[str, Any] = {"cells": sorted(row), "knn": best_knn}
        complete = len(row) == len(variants)
        rows_complete += complete
        for key in agree:
            prefs = {v: preference(key.split("/")[1], c["monitors"].get(key)) for v, c in row.items()}
            prefs = {v: p for v, p in prefs.items() if p is not None}
            pick = max(prefs, key=prefs.get) if prefs else None
            rec[key] = {"pick": pick, "matches_knn": pick == best_knn}
            if complete and pick == best_knn:
                agree[key] += 1
        out["best_beta_per_d"][str(d)] = rec
    out["agreement_over_complete_rows"] = {k: f"{v}/{rows_complete}" for k, v in agree.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Plot


def plot(cells: dict[str, dict], dims: list[int], variants: list[str], path: Path, title: str,
         analysis: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = sorted(variants, key=DISPLAY_ORDER.index)  # columns left to right by beta at d < max
    panels = [("knn_top1", "kNN top-1 (%)", "max")] + [
        (f"{s}/{m}", f"{s} {m}", "alpha" if m == "alpha_req" else "max") for s in SPACES for m in MONITORS]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5))
    for ax, (key, label, rule) in zip(axes.flat, panels):
        grid = np.full((len(dims), len(variants)), np.nan)
        for i, d in enumerate(dims):
            for j, v in enumerate(variants):
                c = cells.get(f"d{d}_{v}")
                if c and c.get("status") == "done":
                    val = c["knn_top1"] if key == "knn_top1" else c["monitors"].get(key)
                    grid[i, j] = np.nan if val is None else val
        ax.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(dims)):
            row = grid[i]
            if np.all(np.isnan(row)):
                continue
            score = -np.abs(row - 1.0) if rule == "alpha" else row
            best = int(np.nanargmax(score))
            ax.add_patch(plt.Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
            for j, val in enumerate(row):
                if not np.isnan(val):
                    beta = cells[f"d{dims[i]}_{variants[j]}"]["beta"]
                    ax.text(j, i, f"{val:.3g}\nbeta {beta:.3g}", ha="center", va="center", color="white", fontsize=8,
                            bbox={"facecolor": "black", "alpha": 0.35, "pad": 1, "edgecolor": "none"})
        ax.set_xticks(range(len(variants)), variants)
        ax.set_yticks(range(len(dims)), [f"d={d}" for d in dims])
        ax.set_title(label + (" (best: closest to 1)" if rule == "alpha" else " (best: max)"), fontsize=10)
    # last panel: the numbers the heatmaps are read for
    ax = axes.flat[-1]
    ax.axis("off")
    lines = [f"Spearman rho with kNN ({analysis['num_cells']} cells; pooled, mean within d)", ""]
    for key, e in analysis["spearman_with_knn"].items():
        rho = "n/a" if e["raw"] is None else f"{e['raw']:+.2f}"
        extra = e.get("preference_-|alpha-1|")
        if "preference_-|alpha-1|" in e:
            rho += f"  (-|alpha-1|: {'n/a' if extra is None else f'{extra:+.2f}'})"
        wd = e.get("within_d_mean")
        lines.append(f"{key}: {rho}; within d: {'n/a' if wd is None else f'{wd:+.2f}'}")
    lines += ["", "monitor's best beta = kNN's (complete rows)", ""]
    lines += [f"{k}: {v}" for k, v in analysis["agreement_over_complete_rows"].items()]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# One cell


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def train_cell(args: argparse.Namespace, d: int, beta: float, run_dir: Path) -> float:
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--config", str(args.config),
           "--time_budget", str(args.budget_s), "--clock", args.clock, "--proj_dim", str(d), "--beta", repr(beta),
           "--output_dir", str(run_dir), "--overwrite", "true", "--progress", "false",
           "--eval_split=", "--knn_random_init", "false", "--run_state_every", "0", "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.smoke:
        cmd += ["--max_steps", "1", "--limit", "64", "--batch_size", "16", "--width", "4", "--log_every", "1"]
    elif args.dry_run:
        cmd += ["--max_steps", "2", "--limit", "512", "--batch_size", "64", "--log_every", "1"]
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(run_dir / "study_train.log", "w") as log:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        tail = (run_dir / "study_train.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"pretrain failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return time.time() - t0


def load_eval_data(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """kNN bank = the config's training split; queries and the monitor sample = ``--eval_data``'s test split."""
    from mvssl_hub.data.splits import load_split
    from mvssl_hub.views import get_view_preset

    limit = 64 if args.smoke else 256 if args.dry_run else None
    src = str(ROOT / base["data"]) if not Path(base["data"]).is_absolute() else base["data"]
    query_src = str(args.eval_data) if args.eval_data else src
    queries = load_split(query_src, base.get("eval_split", "test"), limit=limit)
    return {
        "preset": get_view_preset(base.get("view_preset", "cifar10")),
        "bank": load_split(src, base.get("eval_train_split", "train"), limit=limit),
        "queries": queries,
        "monitor_images": queries.images[: args.monitor_images],
    }


def evaluate_cell(export: Path, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mvssl_hub.hub.loading import from_pretrained

    cfg = json.loads((export / "config.json").read_text())
    return {**evaluate_model(from_pretrained(str(export), with_projector=True), data, args),
            "training": cfg.get("training")}


def evaluate_model(model: torch.nn.Module, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """kNN top-1 and the label-free monitors of an SSL model (backbone + projector), the study's protocol."""
    from mvssl_hub.eval.monitor import monitor_model
    from mvssl_hub.eval.probes import knn_evaluate
    from mvssl_hub.views import EvalTransform, MultiViewAugment

    model.eval()
    t0 = time.time()
    bank, queries = data["bank"], data["queries"]
    k = min(200, len(bank))
    knn = knn_evaluate(model.backbone, bank, queries, EvalTransform(data["preset"]), k=k, temperature=0.1)
    t1 = time.time()
    report = monitor_model(model, data["monitor_images"], MultiViewAugment(data["preset"]),
                           num_views=args.monitor_views, seed=args.seed, batch_size=1280)
    t2 = time.time()
    return {
        "knn_top1": float(knn), "knn_protocol": f"k={k}, T=0.1, cosine, clean view; bank {len(bank)}, queries {len(queries)}",
        "monitors": {k2: (v if math.isfinite(v) else None) for k2, v in report.values().items()},
        "monitor_records": report.to_record(), "eval_s": round(t1 - t0, 1), "monitor_s": round(t2 - t1, 1),
    }


def run_one_cell(args: argparse.Namespace, base: dict[str, Any], key: str) -> dict[str, Any]:
    """Train and evaluate one cell (``--cell`` worker: its own process, so cells can run side by side)."""
    d, v = int(key.split("_")[0][1:]), key.split("_", 1)[1]
    method, num_views = base.get("method", "barlowtwins"), int(base.get("num_views", 4))
    beta = variant_beta(method, v, d, parse_list(args.dims, int), num_views)
    run_dir = args.out_dir / key
    wall = train_cell(args, d, beta, run_dir)
    last = read_metrics(run_dir / "logs" / "metrics.jsonl")[-1]
    return {"d": d, "variant": v, "beta": beta, "train_wall_s": round(wall, 1),
            "train_seconds": round(last.get("train_seconds", 0.0), 1), "steps": last["step"],
            **evaluate_cell(run_dir / "export", load_eval_data(args, base), args), "status": "done"}


def parse_list(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x]


def worker_command(args: argparse.Namespace, key: str) -> list[str]:
    cmd = [sys.executable, __file__, "--cell", key, "--config", str(args.config), "--budget_s", str(args.budget_s),
           "--dims", args.dims, "--variants", args.variants, "--monitor_images", str(args.monitor_images),
           "--monitor_views", str(args.monitor_views), "--seed", str(args.seed), "--threads", str(args.threads),
           "--clock", args.clock, "--out_dir", str(args.out_dir), "--jobs", "1"]
    if args.eval_data:
        cmd += ["--eval_data", str(args.eval_data)]
    return cmd + (["--dry_run"] if args.dry_run else []) + (["--smoke"] if args.smoke else [])


def run_cells(args: argparse.Namespace, todo: list[str], store: dict, results_path: Path) -> None:
    """Each cell in a worker process, ``--jobs`` at a time; the store is written after every finished cell."""
    lock = threading.Lock()

    def one(key: str) -> None:
        t0 = time.time()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads or os.cpu_count())}
        proc = subprocess.run(worker_command(args, key), cwd=ROOT, env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CELL_JSON ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{key}: FAILED ({proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            return
        cell = json.loads(line.removeprefix("CELL_JSON "))
        with lock:
            store["cells"][key] = cell
            write_json(results_path, store)
        m = cell["monitors"]
        print(f"{key}: beta {cell['beta']:.3g}, {cell['steps']} steps, kNN {cell['knn_top1']:.2f}%, backbone RankMe "
              f"{m['backbone/rankme']:.1f} alpha {m['backbone/alpha_req']} LiDAR {m['backbone/lidar']:.1f}; projector "
              f"RankMe {m['projector/rankme']:.1f} LiDAR {m['projector/lidar']:.1f} ({time.time() - t0:.0f}s)", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, todo))


def markdown(store: dict[str, Any]) -> str:
    """The README table: kNN and each monitor per cell, and the analysis' agreement line."""
    cells, a = store["cells"], store["analysis"]
    keys = [f"{s}/{m}" for s in SPACES for m in MONITORS]
    lines = ["| d | beta variant | beta | kNN top-1 | " + " | ".join(keys) + " |", "|---" * (4 + len(keys)) + "|"]
    for c in sorted(cells.values(), key=lambda c: (c["d"], DISPLAY_ORDER.index(c["variant"]))):
        if c.get("status") != "done":
            continue
        best = a["best_beta_per_d"].get(str(c["d"]), {}).get("knn") == c["variant"]
        knn = f"**{c['knn_top1']:.2f}**" if best else f"{c['knn_top1']:.2f}"
        mons = " | ".join("n/a" if c["monitors"].get(k) is None else f"{c['monitors'][k]:.3g}" for k in keys)
        lines.append(f"| {c['d']} | {c['variant']} | {c['beta']:.3g} | {knn} | {mons} |")
    lines += ["", "| monitor | Spearman rho with kNN (all cells) | mean rho within d | best beta = kNN's best |",
              "|---|---|---|---|"]
    for k in keys:
        e = a["spearman_with_knn"][k]
        raw = "n/a" if e["raw"] is None else f"{e['raw']:+.2f}"
        if "preference_-|alpha-1|" in e and e["preference_-|alpha-1|"] is not None:
            raw += f" (-abs(alpha-1): {e['preference_-|alpha-1|']:+.2f})"
        wd = "n/a" if e["within_d_mean"] is None else f"{e['within_d_mean']:+.2f}"
        lines.append(f"| {k} | {raw} | {wd} | {a['agreement_over_complete_rows'][k]} rows |")
    return "\n".join(lines)


def parse_args() -> tuple[argparse.Namespace, list[int], list[str]]:
    """The command line, with --smoke and --dry_run applied: (args, dims, variants)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "recipes" / "configs" / "demo.yaml")
    ap.add_argument("--budget_s", type=float, default=180.0, help="training seconds per cell (see --clock)")
    ap.add_argument("--clock", choices=["wall", "process"], default="process",
                    help="process: each cell's own CPU seconds, fair when cells share the machine")
    ap.add_argument("--dims", default=",".join(map(str, DIMS)))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--monitor_images", type=int, default=1000)
    ap.add_argument("--monitor_views", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per cell (0: torch's default)")
    ap.add_argument("--jobs", type=int, default=2, help="cells trained side by side (each with --threads)")
    ap.add_argument("--eval_data", type=Path, default=DEFAULT_EVAL_DATA if DEFAULT_EVAL_DATA.is_dir() else None,
                    help="kNN queries and monitor sample: this dataset's test split (default: CIFAR-10's 10,000 "
                         "test images when present, else the config's test split)")
    ap.add_argument("--out_dir", type=Path, default=None, help="run folders (default runs/beta_study[_dry])")
    ap.add_argument("--results", type=Path, default=None,
                    help="JSON (+ PNG beside it); default benchmarks/results/beta_study.json, dry run: in --out_dir")
    ap.add_argument("--dry_run", action="store_true", help="tiny settings to check the pipeline; numbers mean nothing")
    ap.add_argument("--smoke", action="store_true", help="seconds: one cell, width 4, one step, in a temporary folder")
    ap.add_argument("--out", type=Path, default=None, help="the same as --results")
    ap.add_argument("--analyze_only", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the README tables from the stored JSON")
    ap.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    dims, variants = parse_list(args.dims, int), parse_list(args.variants, str)
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    args.results = args.results or args.out
    if args.smoke:  # never near the real study's runs or results
        import tempfile

        args.dry_run, args.jobs, args.dims, args.variants, args.eval_data = True, 1, "64", "recommended", None
        dims, variants = [64], ["recommended"]
        if args.cell is None:
            args.results = args.results or default_out("beta_study", smoke=True)
            args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="beta-study-smoke-"))
        args.monitor_images = min(args.monitor_images, 32)
    if args.dry_run:
        args.budget_s = min(args.budget_s, 20.0)
        args.monitor_images = min(args.monitor_images, 128)
    args.out_dir = args.out_dir or ROOT / "runs" / ("beta_study_dry" if args.dry_run else "beta_study")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, dims, variants


def study_settings(args: argparse.Namespace, base: dict) -> dict:
    """What every cell of one results file must share (a file holding other settings is refused)."""
    method, num_views = base.get("method", "barlowtwins"), int(base.get("num_views", 4))
    return {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "config_values": {k: base[k] for k in ("width", "batch_size", "lr", "num_views", "data") if k in base},
        "budget_s": args.budget_s, "clock": args.clock, "threads_per_cell": args.threads, "dry_run": args.dry_run,
        "seed": args.seed, "method": method, "num_views": num_views, "monitor_images": args.monitor_images,
        "monitor_views": args.monitor_views, "queries": "CIFAR-10 test (uoft-cs/cifar10)" if args.eval_data else
        "the config's test split",
    }


def main() -> None:
    args, dims, variants = parse_args()
    results_path = args.results or (args.out_dir / "beta_study.json" if args.dry_run else DEFAULT_RESULTS)

    import yaml

    base = yaml.safe_load(args.config.read_text())
    if args.cell:
        print("CELL_JSON " + json.dumps(run_one_cell(args, base, args.cell), allow_nan=False), flush=True)
        return
    settings = study_settings(args, base)
    store = json.loads(results_path.read_text()) if results_path.exists() else {"settings": settings, "cells": {}}
    if args.markdown:
        print(markdown(store))
        return
    if store["settings"] != settings:
        sys.exit(f"error: {results_path} holds cells run with settings {store['settings']}, not {settings}; "
                 "use another --results")
    cells: dict[str, dict] = store["cells"]
    if not args.analyze_only:
        todo = [f"d{d}_{v}" for d in dims for v in variants if cells.get(f"d{d}_{v}", {}).get("status") != "done"]
        print(f"# {len(todo)} of {len(dims) * len(variants)} cells to run, {args.jobs} at a time ({results_path})",
              flush=True)
        run_cells(args, todo, store, results_path)

    store["analysis"] = analyze(cells, dims, variants)
    store = write_result(results_path, "beta_study", store)
    png = results_path.with_suffix(".png")
    title = (f"{settings['method']}, {settings['num_views']} views, {args.budget_s:g} s ({args.clock} clock) per cell, config "
             f"{settings['config']}" + ("  [DRY RUN: numbers mean nothing]" if args.dry_run else ""))
    plot(cells, dims, variants, png, title, store["analysis"])
    print(json.dumps(store["analysis"], indent=2))
    print(f"wrote {results_path} and {png}")


if __name__ == "__main__":
    main()
