"""The README's zoo table, read from the entries the release path wrote (``mvssl_hub/zoo_weights.json``).

One row per published weights: the CIFAR-10 test probes (kNN and linear, top-1) beside the same network at
random initialisation, and what its training cost. ``benchmarks/readme_tables.py`` keeps the README in step.

    python benchmarks/zoo_table.py      # print the table
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT

ZOO_WEIGHTS = ROOT / "mvssl_hub" / "zoo_weights.json"


def _probe(meta: dict[str, Any], task: str) -> str:
    """'**44.9%** (31.2%, **+13.8**)': the task's top-1 on the test split of the dataset the entry was trained on
    (not the shipped 1,000-image cut that CI re-measures); '—' when it was not measured."""
    for m in meta["metrics"]:
        if (m["task"], m["metric"], m["dataset"], m["split"]) == (task, "top1", meta["dataset"]["id"], "test"):
            gain = m["value"] - m["random_init"]
            return f"**{m['value']:.1f}%** ({m['random_init']:.1f}%, **{gain:+.1f}**)"
    return "—"


def _training(meta: dict[str, Any]) -> str:
    """What the run cost: from the entry's ``training`` record (steps and wall-clock as run, the hardware) when it
    has one, else from its recipe's budget and step cap."""
    r, t = meta["recipe"], meta.get("training") or {}
    if t.get("steps") and t.get("wall_clock_s"):
        seconds = "CPU-seconds" if r.get("clock") == "process" else "wall-seconds"  # the recipe's training clock
        hardware = str(t.get("hardware") or "").split(", torch")[0]  # "1 process(es) on NVIDIA H200"
        hardware = re.sub(r" \(\d+ threads? per process\)", "", hardware).replace("1 process(es) on ", "")
        return (f"{t['wall_clock_s']:,.0f} {seconds}{f' on {hardware}' if hardware else ''}, {t['steps']:,} steps × "
                f"{r['batch_size']} images × {meta['num_views']} views ({t['epochs']:.3g} epochs)")
    clock = {"process": "CPU-minutes", "wall": "wall-minutes"}.get(r.get("clock"), "minutes")
    spent = f"{r['time_budget'] / 60:,.0f} {clock}, " if r.get("time_budget") else ""
    return f"{spent}{r['max_steps']:,} steps × {r['batch_size']} images × {meta['num_views']} views"


def markdown(weights: dict[str, Any]) -> str:
    lines = ["| entry | network | kNN top-1 (random init, gain) | linear probe top-1 (random init, gain) | training |",
             "|---|---|---|---|---|"]
    for builder, entry in weights.items():
        for name, w in entry["entries"].items():
            meta = w["meta"]
            b = meta["backbone"]
            net = f"{b['arch']} w{b['width']}, {'small-image' if b['small_images'] else 'standard'} stem"
            lines.append(f"| `{builder}`, `{name}` | {net} | {_probe(meta, 'knn')} | {_probe(meta, 'linear_probe')} | "
                         f"{_training(meta)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(ZOO_WEIGHTS.read_text())))
