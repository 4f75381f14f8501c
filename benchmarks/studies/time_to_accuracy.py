"""Time-to-accuracy of the recommended recipe against the classic one, at this project's scale.

Four Barlow Twins runs of the same narrow ResNet-18 (width 16, small-image stem), batch 256, data
(CIFAR-10 train) and evaluation (kNN, k = 200, on a fixed held-out set: bank = the first 10,000 train
images, queries = the 10,000 test images), each for the same training time:

- recommended: 4 views, d = 256, beta = recommended_beta (this run is also the zoo's
  ``barlowtwins_resnet18_w16`` entry, trained longer);
- 2 views, d = 256, beta = recommended_beta at 2 views;
- classic: 2 views, d = 2048 and d = 8192, beta = 0.0051 (Zbontar et al., 2021).

The clock is each run's own CPU time with one thread per run (``--clock process --threads 1``): the
runs share two cores, and CPU seconds measure the work each did rather than its share of the machine.
kNN runs every 300 s of training time, its own time excluded. The headline is the training time the
recommended recipe needs to reach each other recipe's final kNN, as a ratio of that recipe's time.

    python benchmarks/studies/time_to_accuracy.py run        # starts the missing runs (resumes unfinished ones)
    python benchmarks/studies/time_to_accuracy.py analyze    # JSON + PNG from the runs' metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.train.run_state import run_states_dir

from harness import EMBEDDED_DATA, RESULTS, ROOT, default_out, write_result

PRESET = "recipes/configs/zoo/cifar10_bt_resnet18_w16.yaml"
# The preset sets the clock (CPU seconds, 1 thread), kNN every 300 s on the fixed held-out set, batch and width.
COMMON = ["--data_name", "uoft-cs/cifar10", "--progress", "false"]
COMPARE_SECONDS = 1800
RUNS: dict[str, dict] = {
    "recommended: 4 views, d=256, recommended beta": {
        "dir": "runs/zoo/barlowtwins_resnet18_w16", "budget": 3600, "nice": 0, "args": []},
    "2 views, d=256, recommended beta": {
        "dir": "runs/tta/bt_m2_d256", "budget": COMPARE_SECONDS, "nice": 5, "args": ["--num_views", "2"]},
    "classic: 2 views, d=2048, beta=0.0051": {
        "dir": "runs/tta/bt_m2_d2048", "budget": COMPARE_SECONDS, "nice": 5,
        "args": ["--num_views", "2", "--proj_dim", "2048", "--beta", "0.0051"]},
    "classic: 2 views, d=8192, beta=0.0051": {
        "dir": "runs/tta/bt_m2_d8192", "budget": COMPARE_SECONDS, "nice": 5,
        "args": ["--num_views", "2", "--proj_dim", "8192", "--beta", "0.0051"]},
}


# --smoke: the recipe's own step on the embedded 5k cut, width 4, a 2 s budget (checks the code path)
SMOKE_ARGS = ["--limit", "64", "--eval_limit", "64", "--batch_size", "16", "--knn_k", "10", "--width", "4",
              "--knn_every_seconds", "0"]


def command(spec: dict, data: str, root: Path = ROOT, smoke: bool = False) -> list[str]:
    """The pretraining command of one run (relative paths: run from the repository root)."""
    run_dir = spec["dir"] if root == ROOT else str(root / spec["dir"])
    done = run_states_dir(root / spec["dir"]).is_dir()
    budget = 2.0 if smoke else spec["budget"]
    return [sys.executable, "recipes/pretrain.py", "--config", PRESET, "--data", data, *COMMON, *spec["args"],
            *(SMOKE_ARGS if smoke else []), "--time_budget", str(budget), "--output_dir", run_dir,
            *(["--resume"] if done else [])]


def run(data: str, root: Path = ROOT, smoke: bool = False, runs: dict[str, dict] = RUNS) -> None:
    """Start every run without an export (resuming the unfinished ones) in parallel; wait for all."""
    procs = []
    for name, spec in runs.items():
        if (root / spec["dir"] / "export" / "config.json").is_file():
            print(f"# done already: {name}")
            continue
        log = root / spec["dir"] / "train.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = command(spec, data, root, smoke)
        print(f"# {name}: {' '.join(cmd)}", flush=True)
        procs.append(subprocess.Popen(["nice", "-n", str(spec["nice"]), *cmd], cwd=ROOT, stdout=open(log, "a"),
                                      stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for p in procs:
        p.wait()


def curve(run_dir: Path) -> list[tuple[float, float]]:
    """(training seconds, kNN top-1) points of a run, in order; the random-init point is at 0 s."""
    points, random_init = [], None
    for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "knn_top1" in rec and "train_seconds" in rec:
            points.append((float(rec["train_seconds"]), float(rec["knn_top1"])))
    state = sorted(run_states_dir(run_dir).glob("step-*/training_state.json"))
    if state:
        random_init = json.loads(state[-1].read_text()).get("knn_random_init")
    log = run_dir / "train.log"
    if random_init is None and log.is_file():  # no checkpoint yet: the run printed it when it started
        found = re.findall(r"kNN top-1 at random init \(same seed\): ([0-9.]+)%", log.read_text())
        random_init = float(found[0]) if found else None
    if random_init is not None:
        points.insert(0, (0.0, float(random_init)))
    return sorted({(round(t, 1), a) for t, a in points})  # a re-export logs the final evaluation again


def time_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """First training time at which kNN >= target, linearly interpolated between evaluations; None if never."""
    for (t0, a0), (t1, a1) in zip(points, points[1:]):
        if a1 >= target:
            return t1 if a1 == a0 else t0 + (t1 - t0) * max(0.0, (target - a0) / (a1 - a0))
    return None


def analyze(root: Path = ROOT, out: Path = RESULTS / "time_to_accuracy.json", runs: dict[str, dict] = RUNS) -> dict:
    curves = {name: curve(root / spec["dir"]) for name, spec in runs.items()
              if (root / spec["dir"] / "logs" / "metrics.jsonl").is_file()}
    rec_name = next(iter(runs))
    rec = curves.get(rec_name, [])
    rows = []
    for name, pts in curves.items():
        within = [p for p in pts if p[0] <= COMPARE_SECONDS * 1.02]
        if name == rec_name or not within:
            continue
        final_t, final_acc = within[-1]
        t_rec = time_to_reach([p for p in rec if p[0] <= COMPARE_SECONDS * 1.02], final_acc)
        rec_same = [a for t, a in rec if t <= final_t * 1.02]
        rows.append({"recipe": name, "final_knn": final_acc, "at_seconds": round(final_t, 1),
                     "recommended_knn_at_same_seconds": rec_same[-1] if rec_same else None,
                     "recommended_seconds_to_reach": None if t_rec is None else round(t_rec, 1),
                     "ratio": None if t_rec is None else round(t_rec / final_t, 3)})
    rec_at = [p for p in rec if p[0] <= COMPARE_SECONDS * 1.02]
    values = {
        "what": "Barlow Twins, ResNet-18 width 16, CIFAR-10, batch 256; kNN k=200 bank 10k train / 10k test; "
                "clock = CPU seconds of a 1-thread process (kNN time excluded)",
        "compare_seconds": COMPARE_SECONDS,
        "recommended_knn_at_compare_seconds": rec_at[-1][1] if rec_at else None,
        "note": "ratio = CPU seconds the recommended recipe needs to reach the other recipe's kNN at the comparison "
                "point / the other recipe's seconds; 0 means the other recipe ended below random init",
        "curves": {k: [[round(t, 1), a] for t, a in v] for k, v in curves.items()},
        "headline": rows,
    }
    result = write_result(out, "time_to_accuracy", values)
    _plot(curves, out.with_suffix(".png"))
    return result


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: Path, *, xlabel: str, title: str,
                vline_minutes: float | None = None) -> None:
    """kNN top-1 against training minutes, one line per run (this study's and the network race's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in curves.items():
        if pts:
            ax.plot([t / 60 for t, _ in pts], [a for _, a in pts], marker="o", label=name)
    if vline_minutes is not None:
        ax.axvline(vline_minutes, color="grey", linestyle=":", label="comparison point")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("kNN top-1 (%) on CIFAR-10 test")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    plot_curves(curves, path, xlabel="training time (CPU minutes, 1 thread)",
                title="Barlow Twins, ResNet-18 width 16, CIFAR-10: time to accuracy", vline_minutes=COMPARE_SECONDS / 60)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["run", "analyze"])
    p.add_argument("--data", default="../shared/data/cifar10", help="CIFAR-10 in the uoft-cs/cifar10 layout")
    p.add_argument("--root", default=str(ROOT), help="folder the runs/ of the four runs are in")
    p.add_argument("--smoke", action="store_true", help="seconds: two runs, width 4, 2 s each, temporary folder")
    p.add_argument("--out", default=None, help="result JSON, PNG beside it (default benchmarks/results/...)")
    a = p.parse_args()
    out = default_out("time_to_accuracy", a.smoke, a.out)
    runs = dict(list(RUNS.items())[:2]) if a.smoke else RUNS
    root = out.parent if a.smoke and a.root == str(ROOT) else Path(a.root)  # smoke: never near the real runs
    if a.action == "run":
        run(str(EMBEDDED_DATA) if a.smoke else a.data, root, a.smoke, runs)
    print(json.dumps(analyze(root, out, runs)["headline"], indent=2))
