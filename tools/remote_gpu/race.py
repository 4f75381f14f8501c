"""There: the three-arm recipe race (benchmarks/studies/fair_race.py) on the GPU, in one call."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .device import Log, device_env, follow, out_paths, preflight
from .settings import GPU_DATA, NAME
from harness import ROOT


def race(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The three-arm recipe race (benchmarks/studies/fair_race.py) on this device; its JSON, PNG, each arm's
    metrics log and this call's log come back in ``--out``."""
    import torch

    t0 = time.perf_counter()
    folder, _ = out_paths(args.out)  # the race's own JSON is fair_race.json beside the log
    folder.mkdir(parents=True, exist_ok=True)
    say = Log(folder / "fair_race.log")
    try:
        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else None
        smoke = args.smoke or not cuda
        say(f"# fair_race on {gpu or 'the CPU (smoke: tiny flags, numbers mean nothing)'}; torch {torch.__version__}")
        env = device_env(args, smoke, say)
        preflight(env, say)
        runs = Path(tempfile.mkdtemp(prefix="fair-race-runs-"))
        data = args.data or str(GPU_DATA.relative_to(ROOT))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "studies" / "fair_race.py"), "run", str(runs),
               "--out", str(folder / "fair_race.json"), "--budget", f"{args.budget:g}", "--knn_every",
               f"{args.knn_every:g}", "--workers", str(min(16, os.cpu_count() or 1)),
               "--deadline", f"{args.deadline - (time.perf_counter() - t0) - 20:g}",
               *(["--smoke"] if smoke else ["--data", data, "--gpu", gpu])]
        say(f"$ {shlex.join(cmd)}")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = follow(proc, say)
        code = proc.wait()
        reader.join(5)
        shutil.rmtree(runs, ignore_errors=True)  # each arm's curve is in the folder already (fair_race_ARM.jsonl)
        say(f"# fair_race: exit {code} after {time.perf_counter() - t0:.0f} s -> {folder}")
        if code != 0:
            raise SystemExit(f"{NAME} race: fair_race.py exited with {code} (see {folder / 'fair_race.log'})")
        return json.loads((folder / "fair_race.json").read_text())
    finally:
        say.close()
