"""The Pareto view over the studies: training time against kNN error, every run, with the frontier drawn.

Reads ``benchmarks/results/beta_study.json`` (projector x beta cells: one point each, at its training
budget) and ``benchmarks/results/views_fraction.json`` (views x data fraction runs: one point per evaluated
checkpoint, so each run is a curve). Both studies use the same evaluation (``beta_study.evaluate_model``)
and the same clock (each run's CPU seconds at one thread), so their points share axes. A point is on the
frontier when no other point is both as fast and at least as accurate. Writes ``pareto.json`` and
``pareto.png`` beside the inputs; ``--markdown`` prints the frontier as a README table.

    python benchmarks/studies/pareto.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import RESULTS, ROOT, default_out, write_result


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both time and error (ties: the earlier), fastest first."""
    front: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (p["seconds"], p["error"])):
        if not front or p["error"] < front[-1]["error"]:
            front.append(p)
    return front


def collect(beta: dict[str, Any] | None, views: dict[str, Any] | None) -> list[dict[str, Any]]:
    points = []
    for key, c in (beta or {}).get("cells", {}).items():
        if c.get("status") == "done":
            points.append({"study": "projector x beta", "run": f"d={c['d']}, beta {c['variant']} ({c['beta']:.3g})",
                           "key": key, "seconds": c["train_seconds"], "error": 100.0 - c["knn_top1"],
                           "final": True})
    for key, r in (views or {}).get("runs", {}).items():
        if r.get("status") != "done":
            continue
        for i, p in enumerate(r["points"]):
            points.append({"study": "views x fraction", "run": f"{r['num_views']} views, {r['fraction']:.0%} data",
                           "key": key, "step": p["step"], "seconds": p["train_seconds"],
                           "error": 100.0 - p["knn_top1"], "final": i == len(r["points"]) - 1})
    return points


def plot(points: list[dict[str, Any]], front: list[dict[str, Any]], random_error: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    beta = [p for p in points if p["study"] == "projector x beta"]
    if beta:
        dims = sorted({int(p["run"].split(",")[0][2:]) for p in beta})
        for d in dims:
            row = [p for p in beta if p["run"].startswith(f"d={d},")]
            ax.scatter([p["seconds"] for p in row], [p["error"] for p in row], s=40, marker="s",
                       label=f"projector x beta, d={d}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p["study"] == "views x fraction":
            runs.setdefault(p["run"], []).append(p)
    for name, row in runs.items():
        ax.plot([p["seconds"] for p in row], [p["error"] for p in row], marker="o", label=name)
    ax.step([p["seconds"] for p in front], [p["error"] for p in front], where="post", color="black",
            linewidth=2, alpha=0.6, label="Pareto frontier")
    if random_error is not None:
        ax.axhline(random_error, color="gray", linestyle="--", label="random init")
    ax.set_xlabel("training time (CPU seconds, 1 thread)")
    ax.set_ylabel("kNN top-1 error (%)")
    ax.set_title("All study runs: training time against kNN error (lower left is better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = ["| on the frontier | study | CPU-s | kNN error |", "|---|---|---|---|"]
    for p in result["frontier"]:
        step = f", step {p['step']}" if "step" in p else ""
        lines.append(f"| {p['run']}{step} | {p['study']} | {p['seconds']:.0f} | {p['error']:.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta_study", type=Path, default=RESULTS / "beta_study.json")
    ap.add_argument("--views_fraction", type=Path, default=RESULTS / "views_fraction.json")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/pareto.json")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the stored studies' points, written to a temporary folder")
    args = ap.parse_args(argv)
    args.out = default_out("pareto", args.smoke, args.out)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return {}
    inputs = {p: json.loads(p.read_text()) for p in (args.beta_study, args.views_fraction) if p.exists()}
    if not inputs:
        sys.exit(f"error: neither {args.beta_study} nor {args.views_fraction} exists; run the studies first")
    beta, views = inputs.get(args.beta_study), inputs.get(args.views_fraction)
    points = collect(beta, views)
    front = pareto_front(points)
    randoms = [r["knn_random_init"] for r in (views or {}).get("runs", {}).values() if r.get("status") == "done"]
    random_error = 100.0 - sum(randoms) / len(randoms) if randoms else None
    result = {"inputs": [str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in inputs],
              "clock": "each run's CPU seconds at one thread", "random_init_error": random_error,
              "points": points, "frontier": front}
    result = write_result(args.out, "pareto", result)
    plot(points, front, random_error, args.out.with_suffix(".png"))
    print(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
