"""Every preset a GPU run will train first learns here: on the embedded 5k CIFAR-10 cut, within a few CPU-minutes,
its network ends above the same network's random-init kNN. A GPU procedure refuses a preset without a passing
record of its current settings (:func:`require`), so that a recipe that collapses is caught on a CPU, not on a GPU.

    python benchmarks/learn_check.py                              # every preset -> results/learn_check.json
    python benchmarks/learn_check.py --only race_published        # one preset (the others' records stay)
    python benchmarks/learn_check.py --smoke --out /tmp/lc.json   # seconds: width 4, 64 images, one preset

What changes from the preset, and why:
- data: the embedded cut (5,000 train images; kNN bank = those, queries = its 1,000 test images);
- the network's width: 16, not 64. At full width a CPU runs too few steps for a kNN to move: the CIFAR stem's
  ResNet-18 made 51 steps of the recommended arm in 600 CPU-s here (AVX512-BF16 EPYC) and ended at its random
  init (30.5 -> 30.6%); the recipe (projector, beta, loss, views, batch, optimiser, schedule) stays as it is;
- the clock: a time budget of the process's CPU seconds, the schedule spanning it (``--schedule_time``) as a GPU
  run's calibrated schedule spans its budget; ``--epochs`` times the full split / the cut (10), so that the
  warm-up keeps the share of the schedule it has on the full split.
The record keeps the sha256 of what the preset files set (:func:`fingerprint`): changing a setting that shapes the
training voids its record; comments and bookkeeping keys do not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import EMBEDDED_DATA, PRETRAIN_SMOKE, RESULTS, ROOT, default_out, envelope, write_result

ZOO = ROOT / "recipes" / "configs" / "zoo"
RACE = ROOT / "benchmarks" / "studies" / "race"
# name -> its YAML files: the first is the --config preset, each later one adds its keys as --key value flags
PRESETS: dict[str, tuple[Path, ...]] = {
    "barlowtwins_resnet18_cifar10_v2": (ZOO / "barlowtwins_resnet18_cifar10_v2.yaml",),
    "vicreg_resnet18_cifar10": (ZOO / "vicreg_resnet18_cifar10.yaml",),
    "race_recommended": (RACE / "shared.yaml", RACE / "recommended.yaml"),
    "race_paper_baseline": (RACE / "shared.yaml", RACE / "paper_baseline.yaml"),
    "race_published": (RACE / "shared.yaml", RACE / "published.yaml"),
}
FULL_SPLIT_IMAGES = 50_000  # CIFAR-10's train split, which the presets' epochs count
CUT_IMAGES = 5_000
WIDTH = 16
BUDGET = 600.0  # CPU seconds of the 2-thread process (about 5 wall-minutes)


def fingerprint(files: tuple[Path, ...]) -> str:
    """sha256 over what each preset file sets, by file name: a record is valid for exactly these recipes. Comments
    and the keys that change no training trajectory (recipes/pretrain.py's RESUMABLE_CHANGES: run-state cadence,
    logging, the kNN monitor's cadence, ...; old key names read as their new ones) are left out, so that prose
    and bookkeeping may change without voiding a record."""
    from recipes import load_recipe

    pretrain = load_recipe("pretrain")
    renamed, ignored = pretrain.PretrainConfig.OLD_NAMES, pretrain.RESUMABLE_CHANGES
    h = hashlib.sha256()
    for path in files:
        settings = {renamed.get(k, k): v for k, v in preset_settings((path,)).items()}
        kept = {k: v for k, v in settings.items() if k not in ignored}
        h.update(json.dumps({"file": path.name, "settings": kept}, sort_keys=True).encode())
    return h.hexdigest()


def preset_settings(files: tuple[Path, ...]) -> dict[str, Any]:
    """The keys the files set, later files winning (what recipes/pretrain.py will read)."""
    from mvssl_hub.train.config import read_yaml

    merged: dict[str, Any] = {}
    for path in files:
        merged.update(read_yaml(path))
    return merged


def preset_args(files: tuple[Path, ...]) -> list[str]:
    """recipes/pretrain.py arguments of a preset: ``--config FIRST`` and the later files' keys as flags."""
    from mvssl_hub.train.config import read_yaml

    args = ["--config", str(files[0])]
    for path in files[1:]:
        for key, value in read_yaml(path).items():
            args += [f"--{key}", "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def check_command(files: tuple[Path, ...], out_dir: Path, budget: float, smoke: bool) -> list[str]:
    epochs = int(preset_settings(files).get("epochs", 100)) * FULL_SPLIT_IMAGES // CUT_IMAGES
    return [sys.executable, str(ROOT / "recipes" / "pretrain.py"), *preset_args(files),
            "--data", str(EMBEDDED_DATA), "--data_name", "cifar10-5k", "--eval_limit", "none", "--width", str(WIDTH),
            "--epochs", str(epochs), "--time_budget", f"{budget:g}", "--schedule_time", "true", "--clock", "process",
            "--threads", "2", "--knn_every", "0", "--knn_every_seconds", "0", "--knn_random_init", "true",
            "--monitors", "false", "--run_state_every", "0", "--run_state_every_seconds", "0", "--export", "false",
            "--progress", "false", "--output_dir", str(out_dir), "--overwrite", *(PRETRAIN_SMOKE if smoke else ())]


def read_run(metrics: Path) -> dict[str, Any]:
    """Random-init and final kNN, steps, the first and last logged loss, from a run's metrics log."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    losses = [r for r in rows if r.get("loss") is not None]
    knn = [r["knn_top1"] for r in rows if r.get("knn_top1") is not None]
    start = next((r["knn_random_init"] for r in rows if r.get("knn_random_init") is not None), None)
    if start is None or not knn:
        raise ValueError(f"{metrics}: no random-init or final kNN was logged")
    return {"steps": losses[-1]["step"] if losses else 0, "train_seconds": losses[-1].get("train_seconds") if losses
            else None, "knn_random_init": start, "knn_final": knn[-1], "gain": round(knn[-1] - start, 2),
            "loss_first": losses[0]["loss"] if losses else None, "loss_last": losses[-1]["loss"] if losses else None,
            "learned": knn[-1] > start}


def run_check(name: str, budget: float, smoke: bool) -> dict[str, Any]:
    files = PRESETS[name]
    with tempfile.TemporaryDirectory(prefix=f"learn-check-{name}-") as tmp:
        cmd = check_command(files, Path(tmp), budget, smoke)
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise SystemExit(f"learn_check: {name} exited with {done.returncode}:\n{done.stdout[-3000:]}")
        found = read_run(Path(tmp) / "logs" / "metrics.jsonl")
    shown = [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else "TMP" if a == tmp else a
             for a in cmd[1:]]
    print(f"# {name}: {found['steps']} steps, kNN {found['knn_random_init']:.2f}% -> {found['knn_final']:.2f}% "
          f"({found['gain']:+.2f})", flush=True)
    mark = envelope("learn_check")  # each record keeps its own CPU kind and date (--only updates some records)
    return {"fingerprint": fingerprint(files), "files": [str(p.relative_to(ROOT)) for p in files], "width": WIDTH,
            "budget_cpu_seconds": budget, "cpu_isa": mark["cpu_isa"], "date": mark["date"],
            "command": "python " + " ".join(shown), **found}


def require(name: str, results: Path = RESULTS / "learn_check.json") -> dict[str, Any]:
    """The passing record of preset ``name`` at its current settings; SystemExit naming what is missing otherwise."""
    if name not in PRESETS:
        raise SystemExit(f"learn_check: no preset named {name!r}; known: {sorted(PRESETS)}")
    record = (json.loads(results.read_text()).get("checks", {}) if results.is_file() else {}).get(name)
    rerun = f"run `python benchmarks/learn_check.py --only {name}` first"
    if record is None:
        raise SystemExit(f"learn_check: {results} has no record of {name}; {rerun}")
    if record["fingerprint"] != fingerprint(PRESETS[name]):
        raise SystemExit(f"learn_check: {name}'s presets ({', '.join(record['files'])}) changed since their record "
                         f"in {results}; {rerun}")
    if not record["learned"]:
        raise SystemExit(f"learn_check: {name} did not learn on the embedded cut (kNN {record['knn_random_init']}% "
                         f"at random init -> {record['knn_final']}%): fix the recipe before any GPU time")
    return record


def markdown(result: dict[str, Any]) -> str:
    """docs/benchmarks.md's table: each preset's kNN beside its random init, steps, budget, CPU kind and date."""
    lines = ["| preset | kNN at random init | kNN after | gain | steps | CPU-seconds | CPU kind, date |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["checks"].items():
        lines.append(f"| `{name}` | {r['knn_random_init']:.1f}% | {r['knn_final']:.1f}% | **{r['gain']:+.1f}** | "
                     f"{r['steps']} | {r['budget_cpu_seconds']:,.0f} | {r['cpu_isa']}, {r['date'][:10]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(PRESETS), default=None, help="these presets (default: all)")
    p.add_argument("--budget", type=float, default=BUDGET, help="CPU seconds of training per preset")
    p.add_argument("--smoke", action="store_true", help="seconds: tiny flags, one preset, a temporary folder")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/learn_check.json)")
    a = p.parse_args(argv)
    out = default_out("learn_check", a.smoke, a.out)
    names = a.only or (["race_published"] if a.smoke else sorted(PRESETS))
    old = json.loads(out.read_text()) if out.is_file() else {}
    checks = {**old.get("checks", {}), **{n: run_check(n, 2.0 if a.smoke else a.budget, a.smoke) for n in names}}
    return write_result(out, "learn_check", {
        "what": "each preset's recipe at width 16 on the embedded 5k CIFAR-10 cut for a CPU budget; kNN k=200, "
                "T=0.1 on its 5,000 train / 1,000 test images, beside the same network at random init",
        "checks": dict(sorted(checks.items()))}, argv=None if argv is None else ["benchmarks/learn_check.py", *argv])


if __name__ == "__main__":
    main()
