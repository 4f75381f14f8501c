"""The paper's claim, measured fairly: three Barlow Twins recipes on one network, one machine and one clock.

- (a) recommended: d = 256, beta by the rule, 4 views, the mean-embedding loss, Adam 1e-3 (Agrawal et al., 2024);
- (b) the paper's own baseline, which its "2x" is measured against: a 2-layer 8192 head, beta 8e-4, 2 views, Adam 1e-3;
- (c) Barlow Twins as published (Zbontar et al., 2021): an 8192x3 head, lambda 0.0051, 2 views, LARS, warm-up + cosine.

Each arm's recipe is a YAML file in ``benchmarks/studies/race/``; what they share (ResNet-18 with the CIFAR stem at
full width, the zoo's cifar10 views, 128 unique images a step, bf16 where native, kNN k = 200, T = 0.1 on one fixed
held-out set) is ``race/shared.yaml``. The arms run one after the other, each for the same time budget of training
(the wall clock, evaluation excluded), each schedule spanning its own budget (``--schedule_time``); kNN is evaluated
on one time grid (every ``--knn_every`` seconds of training). For each kNN point of (b) and (c) after their warm-up,
the result gives the time (a) needed to reach it (linearly interpolated between its evaluations) and the ratio to
that arm's time: the paper's claim is about 0.5. Nothing is tuned against another arm; a run reports what came out.

    python benchmarks/studies/fair_race.py run --data DIR --budget 40 --knn_every 10 --out FOLDER/fair_race.json
    python benchmarks/studies/fair_race.py analyze FOLDER --gpu "NVIDIA H200" --out benchmarks/results/fair_race_h200.json
    python benchmarks/studies/fair_race.py run --smoke --out /tmp/fr.json    # CPU, seconds: tiny flags, then analyze

``run`` refuses an arm without a passing CPU learn check of its current presets (``benchmarks/learn_check.py``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe_race import curve
from time_to_accuracy import plot_curves, time_to_reach

from harness import EMBEDDED_DATA, PRETRAIN_SMOKE, ROOT, default_out, write_result
from learn_check import PRESETS, fingerprint, preset_args, preset_settings, require

ARMS = {  # name -> its label in the results and the figure
    "recommended": "(a) recommended: d=256, beta by the rule, 4 views, Adam 1e-3",
    "paper_baseline": "(b) paper's baseline: 2-layer 8192 head, beta 8e-4, 2 views, Adam 1e-3",
    "published": "(c) Barlow Twins as published: 8192x3 head, lambda 0.0051, 2 views, LARS",
}
BASELINES = ("paper_baseline", "published")
# wall seconds an arm costs beyond its training on the H200: a 25 s calibration run took 46.7 s
# (benchmarks/records/campaign/barlowtwins_resnet18_cifar10_gpu/gpu_campaign_call1.json), plus ~8 kNN evaluations
ARM_OVERHEAD = 32.0
SMOKE = (*PRETRAIN_SMOKE, "--threads", "1")


def arm_files(arm: str) -> tuple[Path, ...]:
    return PRESETS[f"race_{arm}"]


def arm_command(arm: str, data: str, budget: float, knn_every: float, folder: Path, workers: int,
                smoke: bool) -> list[str]:
    """recipes/pretrain.py for one arm: its presets, the data, the equal budget and the shared kNN grid."""
    return [sys.executable, str(ROOT / "recipes" / "pretrain.py"), *preset_args(arm_files(arm)), "--data", data,
            "--time_budget", f"{budget:g}", "--knn_every_seconds", f"{knn_every:g}", "--output_dir", str(folder / arm),
            "--overwrite", "--decode_workers", str(workers), *(SMOKE if smoke else ("--threads", str(workers)))]


def equal_budget(budget: float, deadline: float, arms: int = len(ARMS)) -> float:
    """Each arm's training seconds: ``budget``, or less where the deadline holds less once every arm's overhead
    (start-up, decoding, kNN evaluations: ARM_OVERHEAD) is paid; the same for every arm."""
    return max(1.0, min(budget, deadline / arms - ARM_OVERHEAD))


def run(data: str, budget: float, knn_every: float, folder: Path, deadline: float, workers: int,
        smoke: bool, logs_to: Path | None = None) -> dict[str, Any]:
    """The three arms in turn, each in its own process, each for the same budget (lowered to fit the deadline);
    an arm still running at ``deadline`` wall seconds (from the start of this call) is stopped. Each arm's metrics
    log is copied to ``logs_to`` as ``fair_race_ARM.jsonl`` as soon as the arm ends, so a call cut short keeps it."""
    t0 = time.perf_counter()
    gates = {arm: "smoke run" if smoke else require(f"race_{arm}")["fingerprint"] for arm in ARMS}
    budget = budget if smoke else equal_budget(budget, deadline)
    runs = {}
    for arm in ARMS:
        cmd = arm_command(arm, data, budget, knn_every, folder, workers, smoke)
        print(f"# fair_race: arm {arm}, {budget:.0f} s of training\n$ {shlex.join(cmd)}", flush=True)
        started = time.perf_counter()
        try:
            code = subprocess.run(cmd, cwd=ROOT, timeout=max(1.0, deadline - (started - t0))).returncode
        except subprocess.TimeoutExpired:
            code = "stopped at the deadline"
        runs[arm] = {"exit": code, "wall_seconds": round(time.perf_counter() - started, 1)}
        if logs_to is not None and (folder / arm / "logs" / "metrics.jsonl").is_file():
            shutil.copy2(folder / arm / "logs" / "metrics.jsonl", logs_to / f"fair_race_{arm}.jsonl")
    return {"runs": runs, "budget_seconds": budget, "learn_check_fingerprints": gates}


def warmup_end(metrics: Path) -> float:
    """Training seconds at which an arm's warm-up ended: with ``schedule_time`` the warm-up is its share of the time
    budget (or fewer seconds, if its steps reached ``warmup_steps`` sooner)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    cfg = next(r["config"] for r in rows if "config" in r)
    if not cfg.get("warmup_steps"):
        return 0.0
    by_steps = next((r["train_seconds"] for r in rows if r.get("loss") is not None and r["step"] >= cfg["warmup_steps"]),
                    float("inf"))
    if not cfg.get("schedule_time"):
        return by_steps
    per_epoch = next(r["step"] / r["epoch"] for r in rows if r.get("loss") is not None and r.get("epoch"))
    return min(by_steps, cfg["time_budget"] * cfg["warmup_steps"] / (cfg["epochs"] * per_epoch))


def ratios(recommended: list[tuple[float, float]], baseline: list[tuple[float, float]], after: float,
           until: float) -> list[dict[str, Any]]:
    """For each kNN point of a baseline after its warm-up (up to ``until`` seconds, 2% slack for the step past the
    budget): the time the recommended arm needed to reach it, and the ratio to the baseline's time."""
    rows = []
    for t, acc in baseline:
        if after < t <= until * 1.02:
            reached = time_to_reach(recommended, acc)
            rows.append({"seconds": t, "knn": acc,
                         "recommended_seconds_to_reach": None if reached is None else round(reached, 1),
                         "ratio": None if reached is None else round(reached / t, 3)})
    return rows


def metrics_log(folder: Path, arm: str) -> Path:
    """An arm's metrics log: ``ARM/logs/metrics.jsonl`` of a run folder, or ``fair_race_ARM.jsonl`` as a GPU call
    brings it back."""
    flat = folder / f"fair_race_{arm}.jsonl"
    return flat if flat.is_file() else folder / arm / "logs" / "metrics.jsonl"


def analyze(folder: Path, out: Path, gpu: str | None = None, ran: dict[str, Any] | None = None) -> dict[str, Any]:
    """Curves, each arm's gain over its random init, and (a)'s time ratios against (b) and (c): JSON + PNG."""
    logs = {arm: metrics_log(folder, arm) for arm in ARMS}
    missing = [str(p) for p in logs.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"fair_race: no metrics log for {missing}")
    curves = {arm: curve(path) for arm, path in logs.items()}
    config = {arm: next(json.loads(line)["config"] for line in path.read_text().splitlines() if '"config"' in line)
              for arm, path in logs.items()}
    budget = config["recommended"]["time_budget"]
    arms = {}
    for arm, points in curves.items():
        start, last = (points[0][1], points[-1][1]) if points and points[0][0] == 0 else (None, None)
        arms[arm] = {"label": ARMS[arm], "settings": preset_settings(arm_files(arm)[1:]),
                     "resolved_beta": config[arm]["resolved_beta"], "knn_random_init": start, "knn_last": last,
                     "learned": None if start is None or len(points) < 2 else last > start,
                     "warmup_ends_seconds": round(warmup_end(logs[arm]), 1),
                     "steps": max((json.loads(x).get("step", 0) for x in logs[arm].read_text().splitlines()), default=0)}
    against = {}
    for arm in BASELINES:
        rows = ratios(curves["recommended"], curves[arm], arms[arm]["warmup_ends_seconds"], budget)
        found = [r["ratio"] for r in rows if r["ratio"] is not None]
        against[arm] = {"rows": rows, "reached": len(found), "points": len(rows),
                        # a point not reached counts as infinitely slow: leaving it out would flatter (a)
                        "median_ratio": statistics.median([r["ratio"] if r["ratio"] is not None else float("inf")
                                                           for r in rows]) if rows else None}
        if against[arm]["median_ratio"] == float("inf"):
            against[arm]["median_ratio"] = None
    values = {"what": "three Barlow Twins recipes, one network (ResNet-18, CIFAR stem, width 64), 128 unique images "
                      "a step, equal training time each (wall clock, kNN excluded), each schedule spanning its budget",
              "gpu": gpu, "budget_seconds": budget, "knn_every_seconds": config["recommended"]["knn_every_seconds"],
              "knn": {"k": config["recommended"]["knn_k"], "temperature": config["recommended"]["knn_temperature"],
                      "bank": f"first {config['recommended']['eval_limit']} images of {config['recommended']['eval_train_split']}",
                      "queries": f"first rows of {config['recommended']['eval_split']} (up to the same limit)"},
              "precision": {arm: config[arm]["precision_used"] for arm in ARMS},
              "presets": {arm: {"files": [str(p.relative_to(ROOT)) for p in arm_files(arm)],
                                "fingerprint": fingerprint(arm_files(arm))} for arm in ARMS},
              "arms": arms, "recommended_vs": against, "ran": ran,
              "curves": {arm: [[round(t, 1), a] for t, a in pts] for arm, pts in curves.items()},
              "note": "ratio = training time (a) needed to reach a baseline's kNN at one of its points after warm-up / "
                      "the baseline's time at that point (the paper's claim: about 0.5); None = not reached. One run "
                      "per arm: no repeats. (c)'s LARS (timm's) has no fused kernel, so its step reads the device "
                      "once for the finiteness decision where the Adam arms skip a bad step on the device: a cost "
                      "of this library's LARS path, counted in (c)'s time."}
    result = write_result(out, "fair_race", values)
    plot_curves({ARMS[arm]: curves[arm] for arm in ARMS}, out.with_suffix(".png"),
                xlabel="training time (minutes; wall clock, kNN excluded)",
                title=f"Three Barlow Twins recipes, ResNet-18 (CIFAR stem), CIFAR-10{f', {gpu}' if gpu else ''}")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The README's claim paragraph, from a result of :func:`analyze`."""
    vs, arms = result["recommended_vs"], result["arms"]

    def against(arm: str) -> str:
        found = vs[arm]
        if not found["rows"]:
            return f"— ({ARMS[arm][:3]} has no kNN point after its warm-up)"
        listed = ", ".join("not reached" if r["ratio"] is None else f"{r['ratio']:.2f}" for r in found["rows"])
        median = "a median beyond the run (not reached)" if found["median_ratio"] is None else \
            f"{found['median_ratio']:.2f}x"
        return f"{median} the time of {ARMS[arm][:3]} (its {found['points']} points after warm-up: {listed})"

    finals = "; ".join(f"{ARMS[arm][:3]} {a['knn_last']:.1f}% (random init {a['knn_random_init']:.1f}%)"
                       if a["knn_last"] is not None else f"{ARMS[arm][:3]} no kNN point" for arm, a in arms.items())
    return (f"On one {result['gpu'] or result['cpu']} ({result['date'][:10]}; `{Path(result['command'].split()[1]).name}`), "
            f"with {result['budget_seconds']:g} s of training each, the recommended recipe (a) reached the kNN "
            f"points of the paper's baseline (b) in {against('paper_baseline')} and of Barlow Twins as published "
            f"(c) in {against('published')}. kNN at the end: {finals}. One run per arm, no repeats: the spread "
            f"between runs is not measured.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["run", "analyze"])
    p.add_argument("folder", nargs="?", default=None, help="the run folder (ARM/logs/metrics.jsonl) or the files a GPU "
                                                           "call brought back (fair_race_ARM.jsonl)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"),
                   help="CIFAR-10 in the uoft-cs/cifar10 layout")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds of each arm (wall clock)")
    p.add_argument("--knn_every", type=float, default=10.0, help="training seconds between kNN evaluations")
    p.add_argument("--deadline", type=float, default=1e9, help="wall seconds after which a running arm is stopped")
    p.add_argument("--workers", type=int, default=8, help="decode workers and threads of each arm")
    p.add_argument("--gpu", default=None, help="the GPU's name, for the JSON and the figure")
    p.add_argument("--smoke", action="store_true", help="CPU, seconds: tiny flags on the embedded cut, no gate")
    p.add_argument("--out", default=None, help="result JSON, PNG beside it")
    a = p.parse_args(argv)
    out = default_out("fair_race", a.smoke, a.out)
    folder = Path(a.folder) if a.folder else out.parent / "fair_race_runs"
    ran = None
    if a.action == "run":
        ran = run(str(EMBEDDED_DATA) if a.smoke else a.data, 2.0 if a.smoke else a.budget,
                  0.5 if a.smoke else a.knn_every, folder, a.deadline, a.workers, a.smoke, logs_to=out.parent)
    result = analyze(folder, out, a.gpu, ran)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
