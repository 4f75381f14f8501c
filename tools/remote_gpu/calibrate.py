"""There, before the campaign: time the preset's step on this GPU and size its cosine schedule to the budget.

The cosine schedule is defined by the epochs: sized too long, the budget cuts it before the learning rate has come
down; too short, the GPU idles for the rest of the call.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mvssl_hub.train.run_state import run_states_dir

from .device import Log
from .settings import DATA_NAME, MAX_EPOCHS, NAME, SCHEDULE_SHARE, SMOKE_EXTRA
from harness import ROOT


def campaign_extra(smoke: bool, knn_every: float, run_state_seconds: float, threads: int) -> str:
    """The pretrain flags added to the preset's: the wall clock, then the GPU's cadence and threads (or the smoke
    run's tiny settings)."""
    if smoke:
        return f"--clock wall {SMOKE_EXTRA}"
    return (f"--clock wall --knn_every_seconds {knn_every:g} --run_state_every_seconds {run_state_seconds:g} "
            f"--decode_workers {threads} --threads {threads}")


def calibration_command(preset: Path, data: str, folder: Path, seconds: float, extra: str) -> list[str]:
    """A short pretraining run of the preset, logged at its own cadence: the step alone (no periodic kNN, monitors,
    export or saves)."""
    return [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--config", str(preset), "--data", data,
            "--data_name", DATA_NAME, "--output_dir", str(folder), "--progress", "false", *extra.split(),
            "--time_budget", f"{seconds:g}", "--knn_every", "0", "--knn_every_seconds", "0", "--knn_random_init",
            "false", "--monitors", "false", "--export", "false", "--run_state_every", "0", "--run_state_every_seconds", "0"]


def step_rate(metrics: Path) -> tuple[float, float]:
    """(steps per training second, steps per epoch) from a run's ``metrics.jsonl``: the rate over the second half of
    its logged steps (the first half holds the warm-up: cuDNN's autotuning, the allocator's first growth)."""
    rows = [r for r in map(json.loads, metrics.read_text().splitlines())
            if r.get("loss") is not None and r.get("train_seconds") is not None and r.get("epoch")]
    if len(rows) < 3:
        raise ValueError(f"{metrics}: {len(rows)} logged training steps; at least 3 are needed to time the step")
    first, last = rows[len(rows) // 2 - 1], rows[-1]
    seconds = last["train_seconds"] - first["train_seconds"]
    if seconds <= 0:
        raise ValueError(f"{metrics}: no training time between steps {first['step']} and {last['step']}")
    return (last["step"] - first["step"]) / seconds, last["step"] / last["epoch"]


def epochs_for(rate: float, steps_per_epoch: float, budget: float, share: float = SCHEDULE_SHARE,
               most: int = MAX_EPOCHS) -> int:
    """Whole epochs whose steps fit ``share`` of ``budget`` training seconds at ``rate`` steps/s (1 to ``most``)."""
    return max(1, min(most, int(rate * budget * share // steps_per_epoch)))


def resumed_epochs(run: Path) -> int | None:
    """The epochs an earlier call's run was started with (its metrics log's config record), or None."""
    log = run / "logs" / "metrics.jsonl"
    if not run_states_dir(run).is_dir() or not log.is_file():  # either layout (run_states/, or checkpoints/ of old)
        return None
    for row in map(json.loads, log.read_text().splitlines()):
        if "config" in row:
            return int(row["config"]["epochs"])
    return None


def time_preset(args: argparse.Namespace, data: str, env: dict[str, str], extra: str, seconds: float,
                say: Log) -> dict[str, Any]:
    """One calibration run of the preset: its step rate (second half of its logged steps), steps per epoch and the
    training seconds at its first logged step (what a compiled run spends compiling shows there)."""
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{args.entry}.yaml"
    folder = Path(tempfile.mkdtemp(prefix=f"{NAME}-calibrate-"))
    cmd = calibration_command(preset, data, folder, seconds, extra)
    say(f"$ {shlex.join(cmd)}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines()[-25:]:
        say(line)
    try:
        if done.returncode != 0:
            raise ValueError(f"the calibration run exited with {done.returncode}")
        metrics = folder / "logs" / "metrics.jsonl"
        rate, per_epoch = step_rate(metrics)
        first = next(r["train_seconds"] for r in map(json.loads, metrics.read_text().splitlines())
                     if r.get("loss") is not None and r.get("train_seconds") is not None)
    except (ValueError, OSError) as e:
        raise SystemExit(f"{NAME}: calibration failed: {e}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"seconds": seconds, "wall_seconds": round(time.perf_counter() - t0, 1), "steps_per_second": round(rate, 2),
            "steps_per_epoch": round(per_epoch, 2), "first_logged_step_seconds": round(first, 1),
            "command": shlex.join(cmd)}


def compile_pays(eager: dict[str, Any], compiled: dict[str, Any], budget: float) -> tuple[bool, float]:
    """Whether the compiled step trains more steps in ``budget`` than the eager one, its compile time (measured:
    how much later its first logged step came) paid again in the campaign's own process; and that compile time."""
    overhead = max(0.0, compiled["first_logged_step_seconds"] - eager["first_logged_step_seconds"])
    return compiled["steps_per_second"] * (budget - overhead) > eager["steps_per_second"] * budget, overhead


def calibrate(args: argparse.Namespace, data: str, env: dict[str, str], extra: str, budget: float,
              say: Log) -> dict[str, Any]:
    """Time the preset's step here, eager and (``--compile_probe``) compiled, then size the campaign's schedule
    (epochs) to fill the training budget at the faster one's rate.

    A failure here ends the call early (the same code path as the campaign: what breaks here would break there),
    leaving device time for a second call."""
    say(f"# calibration: {args.calibrate:g} s of the preset's step, to size the schedule")
    eager = time_preset(args, data, env, extra, args.calibrate, say)
    found: dict[str, Any] = {"eager": eager, "compile": False, "compile_seconds": None}
    rate, budget_left = eager["steps_per_second"], budget
    if args.compile_probe > 0:
        say(f"# calibration, compiled: {args.calibrate + args.compile_probe:g} s (torch.compile's own time inside)")
        compiled = time_preset(args, data, env, f"{extra} --compile true", args.calibrate + args.compile_probe, say)
        pays, overhead = compile_pays(eager, compiled, budget)
        found.update(compiled=compiled, compile=pays, compile_seconds=round(overhead, 1))
        if pays:
            rate, budget_left = compiled["steps_per_second"], budget - overhead
        say(f"# torch.compile: {compiled['steps_per_second']:.1f} vs {eager['steps_per_second']:.1f} steps/s eager, "
            f"{overhead:.0f} s to compile -> {'on' if pays else 'off'}")
    per_epoch = eager["steps_per_epoch"]
    epochs = epochs_for(rate, per_epoch, budget_left)
    found.update(steps_per_second=rate, steps_per_epoch=per_epoch, epochs=epochs, schedule_share=SCHEDULE_SHARE)
    say(f"# calibration: {rate:.1f} steps/s, {per_epoch:.0f} steps/epoch -> --epochs {epochs} "
        f"({epochs * per_epoch / rate:.0f} s of the {budget:g} s budget)")
    return found
