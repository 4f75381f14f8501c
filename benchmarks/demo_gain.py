"""`make demo` on this CPU as it is and held to AVX2: the kNN gain over random init each path reaches.

Runs ``recipes/pretrain.py --config recipes/configs/demo.yaml`` (the command ``make demo`` runs, through
``accelerate launch --num_processes 1 --cpu``) once natively and once with ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` (no native bf16: the recipe then trains in fp32, as on an AVX2-only CPU), one
after the other so that each has the machine to itself. Each run's final log line gives kNN top-1 and the
same network's random-init kNN on the 1,000 held-out images; steps, training seconds and throughput come
from its ``training_state.json`` and config. Results: ``benchmarks/results/demo_gain.json``.

    python benchmarks/demo_gain.py                           # both paths, ~12 min on 2 cores
    python benchmarks/demo_gain.py --paths avx2              # one path
    python benchmarks/demo_gain.py --collect native=runs/a avx2=runs/b   # record finished runs instead
    python benchmarks/demo_gain.py --smoke                   # seconds: the native path, width 4, 2 steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import ROOT, add_common_args, default_out, write_result

RECIPE = ["recipes/pretrain.py", "--config", "recipes/configs/demo.yaml"]
LAUNCH = ["accelerate", "launch", "--num_processes", "1", "--cpu"]
# a few steps of a tiny network, kNN on 64 + 64 images: the code path, in seconds
SMOKE = ["--width", "4", "--proj_dim", "16", "--limit", "64", "--eval_limit", "64", "--batch_size", "16", "--knn_k", "10",
         "--max_steps", "2", "--knn_every_seconds", "0", "--monitors", "false", "--export", "false"]
PATHS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
GAIN_LINE = re.compile(r"kNN top-1 \(k=\d+, T=[\d.]+\): ([\d.]+)% \| random init .*?: ([\d.]+)% \| gain: ([+-][\d.]+)")


def record(path: str, run_dir: Path, log_text: str) -> dict[str, Any]:
    """One finished demo run: its gain line, and what it did to get there."""
    match = GAIN_LINE.search(log_text)
    if match is None:
        raise RuntimeError(f"{run_dir}: no final kNN line in the log")
    from mvssl_hub.train.run_state import read_run_config, run_states_dir

    run_state = max(run_states_dir(run_dir).glob("step-*"))
    state = json.loads((run_state / "training_state.json").read_text())
    cfg = read_run_config(run_state)
    seconds = state["train_seconds"]
    return {"path": path, "env": PATHS[path], "knn_top1": float(match[1]), "knn_random_init": float(match[2]),
            "gain": float(match[3]), "steps": state["global_step"], "train_seconds": round(seconds, 1),
            "images_per_s": round(state["images_seen"] / seconds, 1), "precision": cfg.get("precision_used"),
            "threads_per_process": int(t[1]) if (t := re.search(r"threads/process: (\d+)", log_text)) else None,
            "config": {k: cfg[k] for k in ("arch", "width", "small_images", "batch_size", "num_views", "proj_dim",
                                           "lr", "time_budget") if k in cfg}}


def run_demo(path: str, out_dir: Path, extra: list[str]) -> dict[str, Any]:
    run_dir = out_dir / path
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH[2:], *RECIPE, "--output_dir", str(run_dir),
           "--progress", "false", *extra]
    env = {**os.environ, **PATHS[path], "PYTHONPATH": str(ROOT)}
    print(f"# {path}: {' '.join(f'{k}={v}' for k, v in PATHS[path].items())} {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (out_dir / f"{path}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"demo ({path}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return record(path, run_dir, proc.stdout)


def markdown(result: dict[str, Any]) -> str:
    """The README table: one row per path."""
    lines = ["| path (CPU as measured) | precision | steps in 5 min | images/s | kNN top-1 | random init | gain |",
             "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "as it is"
        lines.append(f"| {r['path']}: {result['cpu']} [{result['cpu_isa']}], {env} | {r['precision']} | {r['steps']} | "
                     f"{r['images_per_s']:.0f} | {r['knn_top1']:.1f}% | {r['knn_random_init']:.1f}% | "
                     f"**{r['gain']:+.1f}** |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default=None, help="comma-separated (default: native,avx2; --smoke: native)")
    ap.add_argument("--out_dir", type=Path, default=None,
                    help="the runs (default: runs/demo_gain; --smoke: a temporary folder, removed after)")
    ap.add_argument("--collect", nargs="*", default=None, metavar="PATH=RUN_DIR",
                    help="record finished runs (their logs: RUN_DIR.log beside the folder, or RUN_DIR/demo.log)")
    add_common_args(ap, "demo_gain")
    args = ap.parse_args()
    out = default_out("demo_gain", args.smoke, args.out)
    paths = (args.paths or ("native" if args.smoke else "native,avx2")).split(",")

    runs = []
    if args.collect is not None:
        for item in args.collect:
            path, run_dir = item.split("=", 1)
            run_dir = Path(run_dir)
            log = run_dir.with_suffix(".log") if run_dir.with_suffix(".log").exists() else run_dir / "demo.log"
            runs.append(record(path, run_dir, log.read_text()))
    else:
        with tempfile.TemporaryDirectory(prefix="demo_gain-") as tmp:
            out_dir = args.out_dir or (Path(tmp) if args.smoke else ROOT / "runs" / "demo_gain")
            out_dir.mkdir(parents=True, exist_ok=True)
            runs = [run_demo(p, out_dir, SMOKE if args.smoke else []) for p in paths]
    write_result(out, "demo_gain", {
        "platform": platform.platform(), "recipe_command": " ".join([*LAUNCH, *RECIPE, *(SMOKE if args.smoke else [])]),
        **({"smoke": True} if args.smoke else {}), "runs": runs})
    for r in runs:
        print(f"{r['path']}: kNN {r['knn_top1']:.2f}% vs {r['knn_random_init']:.2f}% random init ({r['gain']:+.2f}), "
              f"{r['steps']} steps, {r['images_per_s']:.0f} images/s, {r['precision']}")

if __name__ == "__main__":
    main()
