"""Which network should the CIFAR-10 zoo entry use? A race at equal CPU time, one run at a time.

Every candidate trains with the recommended recipe (Barlow Twins, d = 256, beta = recommended_beta, 8 views,
batch 128, Adam 2e-3; ``recipes/configs/zoo/cifar10_race.yaml``) on the full CIFAR-10 train split, for the same
budget of CPU seconds of its 2-thread process (``--clock process``: the same work whatever else shares the
machine; 3,600 CPU-s is 30 minutes of both cores on a quiet machine). kNN (k = 200, T = 0.1; bank = the first
10,000 train images, queries = the 10,000 test images) runs every 600 CPU-s, its own time excluded. Each run is
paused while other processes load the machine (``tools/quiet_run.py``): beside a test suite, OpenMP's spinning
made the first w32 run's steps cost up to 2x their quiet CPU time (16.7 s instead of ~8), so its clock alone did not keep the race fair.

Candidates: ResNet-18 with the small-image stem at width 32 and 64, with torchvision's standard stem at width 64,
and ResNet-10 (one basic block per stage, small-image stem, width 64), the compact kind of network the
supervised CIFAR speedruns use. The winner has the best kNN at the end of its budget (ties, within 0.5
points: the steeper slope over its last two evaluations); it then runs again at 4 views.

Runs live under the user's cache folder (``$MVSSL_HUB_CACHE`` or ``~/.cache/mvssl-hub/race``) and resume
where they stopped, so a killed race loses at most one ``--run_state_every_seconds`` interval.

    python benchmarks/studies/network_race.py run [--budget 3600]   # the missing runs, one at a time (resumes)
    python benchmarks/studies/network_race.py analyze               # JSON + PNG -> benchmarks/results/network_race.*
    python benchmarks/studies/network_race.py run --smoke           # seconds: two candidates, tiny budget, the 5k cut,
                                                            # in a temporary folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from time_to_accuracy import curve, plot_curves

from mvssl_hub.train.run_state import run_states_dir
from tools.campaign import long_runs_home
from tools.quiet_run import run_quietly

from harness import EMBEDDED_DATA, RESULTS, ROOT, write_result

PRESET = "recipes/configs/zoo/cifar10_race.yaml"
CANDIDATES: dict[str, list[str]] = {
    "resnet18 small stem w32": ["--arch", "resnet18", "--small_images", "true", "--width", "32"],
    "resnet18 small stem w64": ["--arch", "resnet18", "--small_images", "true", "--width", "64"],
    "resnet18 standard stem w64": ["--arch", "resnet18", "--small_images", "false", "--width", "64"],
    "resnet10 small stem w64": ["--arch", "resnet10", "--small_images", "true", "--width", "64"],
}
TIE_POINTS = 0.5


def cache_root() -> Path:
    """Where the race's runs live: beside the campaigns', outside the work tree."""
    return long_runs_home() / "race"


def slug(name: str) -> str:
    return name.replace(" ", "_")


def command(args: list[str], run_dir: Path, budget: float, data: str, smoke: bool) -> list[str]:
    """The pretraining command of one run (resumes when the run has run states)."""
    resume = ["--resume"] if run_states_dir(run_dir).is_dir() else []
    small = ["--limit", "64", "--eval_limit", "64", "--batch_size", "16", "--knn_k", "10", "--width", "4",
             "--knn_every_seconds", "0"] if smoke else []
    return [sys.executable, "recipes/pretrain.py", "--config", PRESET, "--data", data, *args, *small,
            "--time_budget", str(budget), "--output_dir", str(run_dir), *resume]


def finished(run_dir: Path) -> bool:
    return (run_dir / "export" / "config.json").is_file()


def run_one(name: str, args: list[str], budget: float, data: str, root: Path, smoke: bool) -> None:
    run_dir = root / slug(name)
    if finished(run_dir):
        print(f"# done already: {name}", flush=True)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(args, run_dir, budget, data, smoke)
    print(f"# {name}: {' '.join(cmd)}", flush=True)
    with open(run_dir / "train.log", "a") as log:  # paused while other work loads the machine: quiet time only
        code, waited = run_quietly(cmd, enabled=not smoke, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   say=lambda m: print(m, file=log, flush=True))
    print(f"# {name}: exit code {code}, paused {waited:.0f} s while the machine was busy", flush=True)
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def choose(curves: dict[str, list[tuple[float, float]]]) -> str | None:
    """Best final kNN; within TIE_POINTS of the best, the steeper slope over the last two points wins."""
    done = {k: v for k, v in curves.items() if len(v) >= 2}
    if not done:
        return None
    best = max(v[-1][1] for v in done.values())

    def slope(pts: list[tuple[float, float]]) -> float:
        (t0, a0), (t1, a1) = pts[-2], pts[-1]
        return (a1 - a0) / max(t1 - t0, 1e-9)

    close = [k for k, v in done.items() if v[-1][1] >= best - TIE_POINTS]
    return max(close, key=lambda k: (slope(done[k]), done[k][-1][1]))


def run(budget: float, data: str, root: Path, smoke: bool, candidates: dict[str, list[str]] = CANDIDATES) -> None:
    """Every candidate at 8 views, one at a time; then the winner at 4 views."""
    for name, args in candidates.items():
        run_one(name, args, budget, data, root, smoke)
    winner = choose({name: curve(root / slug(name)) for name in candidates})
    if winner is not None:
        run_one(f"{winner} 4 views", [*candidates[winner], "--num_views", "4"], budget, data, root, smoke)


def analyze(root: Path, out: Path = RESULTS, candidates: dict[str, list[str]] = CANDIDATES) -> dict:
    """``network_race.json`` + ``.png`` in the folder ``out``, or at ``out`` when it names a ``.json`` file."""
    curves = {p.name.replace("_", " "): curve(p) for p in sorted(root.iterdir())
              if (p / "logs" / "metrics.jsonl").is_file()} if root.is_dir() else {}
    eight = {k: v for k, v in curves.items() if k in candidates}
    steps = {}
    for name in curves:
        lines = (root / slug(name) / "logs" / "metrics.jsonl").read_text().splitlines()
        steps[name] = max((json.loads(x).get("step", 0) for x in lines), default=0)
    values = {
        "what": "Barlow Twins d=256, recommended beta, 8 views (winner also at 4), batch 128, Adam 2e-3, full "
                "CIFAR-10 train; kNN k=200 T=0.1, bank = first 10k train, queries = 10k test; clock = CPU seconds "
                "of a 2-thread process, kNN time excluded",
        "curves_cpu_seconds_vs_knn": {k: [[round(t, 1), a] for t, a in v] for k, v in curves.items()},
        "steps": steps,
        "finished": {k: finished(root / slug(k)) for k in curves},
        "winner": choose(eight) if all(finished(root / slug(k)) for k in candidates) else None,
    }
    path = out if out.suffix == ".json" else out / "network_race.json"
    result = write_result(path, "network_race", values)
    _plot(curves, path.with_suffix(".png"))
    return result


def markdown(result: dict) -> str:
    """The race as a README table: each network's kNN at random init and at the end of its budget."""
    cpu = f"{result['cpu']} [{result.get('cpu_isa') or '?'}]"
    lines = [f"| network ({cpu}) | steps | kNN at random init | kNN at the end (CPU-s) | gain |",
             "|---|---|---|---|---|"]
    curves = result["curves_cpu_seconds_vs_knn"]
    for name in sorted((k for k in curves if len(curves[k]) > 1), key=lambda k: -curves[k][-1][1]):  # trained
        (_, first), (seconds, last) = curves[name][0], curves[name][-1]
        mark = "**" if name == result.get("winner") else ""
        end = f"{mark}{last:.1f}%{mark} ({seconds:,.0f}{'' if result['finished'][name] else ', unfinished'})"
        lines.append(f"| {mark}{name}{mark} | {result['steps'][name]:,} | {first:.1f}% | {end} | {last - first:+.1f} |")
    return "\n".join(lines)


def _plot(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    plot_curves(curves, path, title="Network race: Barlow Twins, d = 256, 8 views, CIFAR-10",
                xlabel="training time (CPU minutes of a 2-thread process; 2 CPU-min = 1 wall-min on a quiet machine)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["run", "analyze"])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"),
                   help="CIFAR-10 in the uoft-cs/cifar10 layout")
    p.add_argument("--budget", type=float, default=3600.0, help="CPU seconds of training per run")
    p.add_argument("--root", default=None, help="folder of the runs (default: the cache folder)")
    p.add_argument("--smoke", action="store_true", help="a few seconds per run on the embedded 5k cut (tests)")
    p.add_argument("--only", nargs="+", choices=[slug(k) for k in CANDIDATES], default=None,
                   help="race only these candidates (e.g. the last one left against the leader so far, on a new "
                        "machine whose CPU kind makes earlier runs incomparable)")
    p.add_argument("--out", default=str(RESULTS),
                   help="where analyze writes network_race.json / .png (a folder, or the .json file's path)")
    a = p.parse_args()
    if a.smoke:  # never near the real race's runs or results
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="network-race-smoke-"))
        a.root, a.out = a.root or str(scratch / "runs"), a.out if a.out != str(RESULTS) else str(scratch / "out")
    root = Path(a.root) if a.root else cache_root()
    candidates = dict(list(CANDIDATES.items())[:2]) if a.smoke else CANDIDATES  # smoke: two, then the rerun
    if a.only:
        candidates = {k: v for k, v in candidates.items() if slug(k) in a.only}
    if a.action == "run":
        data = str(EMBEDDED_DATA) if a.smoke else a.data
        run(2.0 if a.smoke else a.budget, data, root, a.smoke, candidates)
    result = analyze(root, Path(a.out), candidates)
    print(json.dumps({k: v for k, v in result.items() if k != "curves_cpu_seconds_vs_knn"}, indent=2))
