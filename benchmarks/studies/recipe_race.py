"""The paper's claim on the flagship's network: does the recommended recipe reach the classic one's kNN in about
half the time?

Two campaigns of the same network, batch, optimiser, data, learning-rate schedule definition and kNN cadence
(``tools/campaign.py``, so both resume across sessions and run only while the machine is quiet):

- recommended: the flagship campaign itself (``barlowtwins_resnet18_cifar10``: 8 views, d = 256, recommended beta);
- classic: ``barlowtwins_resnet18_cifar10_classic``, the same preset with 2 views, d = 8192, beta = 0.0051
  (Zbontar et al., 2021), stopped at the same training time as the campaign's first 3 hours
  (``--until_seconds``).

The schedule definition both share is the preset's (cosine on the campaign's epochs after a linear warm-up of
``warmup_steps``): each run follows it by its own steps. For each classic kNN point after the warm-up, the
result gives the training time the recommended campaign needed to reach that kNN (linearly interpolated
between its evaluations) and the ratio to the classic run's time. The curves are read from the records the
campaign commits (``benchmarks/records/campaign/ENTRY/metrics.jsonl``), so the analysis survives a lost run state.

    make campaign ENTRY=barlowtwins_resnet18_cifar10_classic UNTIL=10800    # one chunk; repeat until done
    python benchmarks/studies/recipe_race.py analyze        # JSON + PNG -> benchmarks/results/recipe_race.*
    python benchmarks/studies/recipe_race.py analyze --smoke  # seconds: two tiny campaigns, temporary folder
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from time_to_accuracy import plot_curves, time_to_reach

from harness import EMBEDDED_DATA, RECORDS, default_out, write_result

RECOMMENDED = "barlowtwins_resnet18_cifar10"
CLASSIC = "barlowtwins_resnet18_cifar10_classic"
COMPARE_SECONDS = 3 * 3600  # the campaign's first 3 hours, in its preset's clock
CPU_CLOCK = "CPU seconds of the 2-thread process"  # the presets' clock


def curve(metrics: Path) -> list[tuple[float, float]]:
    """(training seconds, kNN top-1) of one run's metrics log, random init at 0 s, in time order."""
    points = []
    for rec in map(json.loads, metrics.read_text().splitlines()):
        if rec.get("knn_random_init") is not None:
            points.append((0.0, float(rec["knn_random_init"])))
        elif rec.get("knn_top1") is not None and "train_seconds" in rec:
            points.append((float(rec["train_seconds"]), float(rec["knn_top1"])))
    return sorted({(round(t, 1), a) for t, a in points})  # a final evaluation may repeat the last one


def warmup_seconds(metrics: Path, warmup_steps: int) -> float:
    """Training seconds at the end of the learning-rate warm-up (the first logged step at or past it)."""
    for rec in map(json.loads, metrics.read_text().splitlines()):
        if rec.get("step", 0) >= warmup_steps and "loss" in rec:
            return float(rec["train_seconds"])
    return float("inf")


def compare(recommended: list[tuple[float, float]], classic: list[tuple[float, float]], after: float,
            until: float) -> list[dict]:
    """One row per classic kNN point after the warm-up and up to ``until`` (2% slack: a run stops at the first
    step past its budget): the recommended run's time to reach it, and the ratio."""
    rows = []
    for t, acc in classic:
        if not after < t <= until * 1.02:
            continue
        reached = time_to_reach(recommended, acc)
        rows.append({"classic_seconds": round(t, 1), "classic_knn": acc,
                     "recommended_seconds_to_reach": None if reached is None else round(reached, 1),
                     "ratio": None if reached is None else round(reached / t, 3)})
    return rows


def analyze(results: Path, out: Path, warmup_steps: int, until: float = COMPARE_SECONDS, suffix: str = "",
            clock: str = CPU_CLOCK) -> dict:
    """The comparison from the records in ``results/ENTRY{suffix}/metrics.jsonl`` (``_gpu``: the runs of
    tools/gpu_campaign.py), up to ``until`` seconds of ``clock``."""
    logs = {name: results / f"{name}{suffix}" / "metrics.jsonl" for name in (RECOMMENDED, CLASSIC)}
    missing = [str(p) for p in logs.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"no campaign records yet: {missing} (run `make campaign ENTRY=...` first)")
    curves = {name: curve(path) for name, path in logs.items()}
    after = warmup_seconds(logs[CLASSIC], warmup_steps)
    rows = compare(curves[RECOMMENDED], curves[CLASSIC], after, until)
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    median = statistics.median([r["ratio"] if r["ratio"] is not None else math.inf for r in rows]) if rows else None
    values = {
        "what": "recommended (8 views, d=256, recommended beta) vs classic (2 views, d=8192, beta=0.0051) Barlow Twins "
                "on the flagship's network, batch, optimiser, data and schedule definition; kNN on the campaign's "
                f"fixed held-out set; clock = {clock}, kNN time excluded",
        "schedule": f"cosine on the preset's epochs after {warmup_steps} linear warm-up steps, followed by each run's "
                    "own steps",
        "compare_seconds": until,
        "classic_warmup_ends_seconds": None if after == float("inf") else round(after, 1),
        "rows": rows,
        "ratios": ratios,
        "reached": len(ratios),
        "median_ratio": None if median is None or math.isinf(median) else round(median, 3),  # not reached counts as
        # infinitely slow: leaving those points out would flatter the recommended recipe
        "curves": {k: [[round(t, 1), a] for t, a in v] for k, v in curves.items()},
        # a classic kNN below its own random-init features: the classic run lost them (it did not learn), and a
        # ratio of 0 then says so rather than that the recommended recipe is infinitely faster
        "classic_points_below_random_init": sum(r["classic_knn"] < curves[CLASSIC][0][1] for r in rows)
        if curves[CLASSIC] and curves[CLASSIC][0][0] == 0 else None,
        "note": "ratio = training time the recommended recipe needs to reach the classic run's kNN / the classic "
                "run's time at that point (the paper's claim: about 0.5); None = not reached",
    }
    result = write_result(out, "recipe_race", values)
    plot_curves({"recommended: 8 views, d=256": curves[RECOMMENDED],
                 "classic: 2 views, d=8192, beta=0.0051": [p for p in curves[CLASSIC] if p[0] <= until * 1.02]},
                out.with_suffix(".png"), xlabel=f"training time (minutes; {clock})",
                title="Recommended vs classic Barlow Twins on the flagship's network, CIFAR-10",
                vline_minutes=until / 60)
    return result


def markdown(result: dict) -> str:
    """The README's table: each classic kNN point after the warm-up, the recommended run's kNN where it was
    evaluated at that time, and the time it needed to reach the classic's kNN (0 s: its random init was already
    above it)."""
    def knn_at(curve: list[list[float]], t: float) -> str:
        return next((f"{a:.1f}%" for s, a in curve if abs(s - t) <= 0.02 * max(t, 1.0)), "—")

    rec, cls = result["curves"][RECOMMENDED], result["curves"][CLASSIC]
    lines = ["| training time | classic kNN | recommended kNN | recommended time to reach the classic's kNN | ratio |",
             "|---|---|---|---|---|"]
    if cls and cls[0][0] == 0:
        lines.append(f"| 0 s (random init) | {cls[0][1]:.1f}% | {knn_at(rec, 0.0)} | — | — |")
    for row in result["rows"]:
        t, reached, ratio = row["classic_seconds"], row["recommended_seconds_to_reach"], row["ratio"]
        to_reach = "not reached" if reached is None else f"{reached:,.0f} s"
        lines.append(f"| {t:,.0f} s | {row['classic_knn']:.1f}% | {knn_at(rec, t)} | {to_reach} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines)


def claim(result: dict) -> str:
    """The comparison's verdict in words, from the same JSON as the table: where the classic run stood against its
    own random-init features, the recommended run's kNN at the same times, and what the ratios can say."""
    rec, cls, rows = result["curves"][RECOMMENDED], result["curves"][CLASSIC], result["rows"]
    if not rows:
        return "No classic kNN point after the warm-up yet: nothing to compare."
    knn = [r["classic_knn"] for r in rows]
    text = (f"At its {len(rows)} kNN points after the warm-up ({rows[0]['classic_seconds']:,.0f}–"
            f"{rows[-1]['classic_seconds']:,.0f} s of training) the classic run stood at "
            + (f"{min(knn):.1f}%" if min(knn) == max(knn) else f"{min(knn):.1f}–{max(knn):.1f}%"))
    below = result.get("classic_points_below_random_init")
    if below is not None and cls:
        count = {len(rows): "all of them", 0: "none of them"}.get(below, f"{below} of them")
        text += f", {count} below its own random-init features ({cls[0][1]:.1f}%)"
    seen = [(t, a) for t, a in rec if any(abs(t - r["classic_seconds"]) <= 0.02 * max(t, 1.0) for r in rows)]
    if seen:
        text += "; the recommended run stood at " + ", ".join(f"{a:.1f}% at {t:,.0f} s" for t, a in seen)
    ratios = result.get("ratios") or []
    if ratios and all(r == 0 for r in ratios) and below == len(rows):
        return (text + ". Every ratio is 0 because the classic run never rose above where both started: it says "
                "that the classic head did not learn in this setting, not that the recommended recipe is infinitely "
                "faster.")
    median = result.get("median_ratio")
    return text + (f". Median ratio {median:.2f} over {len(ratios)} points (the paper's claim: about 0.5)."
                   if median is not None else ". The recommended run did not reach the classic's kNN at most points.")


def smoke(folder: Path) -> tuple[Path, int]:
    """Two tiny campaigns (the real presets, width 4, 64 images, a few seconds) whose records analyze reads."""
    from tools import campaign
    tiny = ("--limit 64 --eval_limit 64 --batch_size 16 --width 4 --knn_k 10 --knn_every_seconds 0 --knn_every 1 "
            "--run_state_every 0 --run_state_every_seconds 0 --log_every 1 --warmup_steps 1 --threads 1 --monitors false")
    for entry, more in ((RECOMMENDED, ""), (CLASSIC, " --proj_dim 512")):  # d=8192 takes seconds a step, even here
        campaign.main([entry, "--data", str(EMBEDDED_DATA), "--root", str(folder / "cache"), "--results",
                       str(folder / "results"), "--chunk_seconds", "3", f"--extra={tiny}{more}", "--quiet", "false"])
    return folder / "results", 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["analyze"])
    p.add_argument("--results", default=str(RECORDS / "campaign"), help="the campaigns' committed records")
    p.add_argument("--warmup_steps", type=int, default=None, help="default: the classic preset's warmup_steps")
    p.add_argument("--suffix", default="", help="records of ENTRY{suffix}: '_gpu' for the runs of tools/gpu_campaign.py")
    p.add_argument("--until", type=float, default=COMPARE_SECONDS, help="compare up to these training seconds")
    p.add_argument("--clock", default=CPU_CLOCK, help="what the runs' training seconds count (for the JSON and plot)")
    p.add_argument("--smoke", action="store_true", help="seconds: two tiny campaigns in a temporary folder")
    p.add_argument("--out", default=None, help="result JSON, PNG beside it (default benchmarks/results/recipe_race.json)")
    a = p.parse_args()
    out = default_out("recipe_race", a.smoke, a.out)
    results, warmup = Path(a.results), a.warmup_steps
    if a.smoke:
        results, warmup = smoke(Path(tempfile.mkdtemp(prefix="recipe-race-smoke-")))
    if warmup is None:
        from mvssl_hub.train.config import read_yaml

        warmup = int(read_yaml(Path(__file__).resolve().parents[2] / "recipes" / "configs" / "zoo" /
                               f"{CLASSIC}.yaml").get("warmup_steps", 0))
    result = analyze(results, out, warmup, until=8.0 if a.smoke else a.until, suffix="" if a.smoke else a.suffix,
                     clock=a.clock)
    print(json.dumps({k: result[k] for k in ("rows", "reached", "median_ratio")}, indent=2))
    if a.smoke:
        shutil.rmtree(results.parent, ignore_errors=True)
