"""The README's zoo table and headline, read from the entries the release path wrote (``mvssl_hub/zoo_weights.json``).

One row per published weights: the CIFAR-10 test probes (kNN and linear, top-1) beside the same network at
random initialisation, and what its training cost; the headline says the same of the flagship in one sentence.
``benchmarks/readme_tables.py`` keeps the README in step.

    python benchmarks/zoo_table.py      # print the table
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mvssl_hub.hub.card import METHOD_NAMES

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


FLAGSHIP = "barlowtwins_resnet18_cifar10"


def _top1(meta: dict[str, Any], task: str) -> dict[str, Any]:
    return next(m for m in meta["metrics"] if (m["task"], m["metric"], m["dataset"], m["split"])
                == (task, "top1", meta["dataset"]["id"], "test"))


def headline(weights: dict[str, Any]) -> str:
    """The flagship's default entry in one sentence: both probes beside random init, what trained it, the date."""
    slot = weights[FLAGSHIP]
    meta = slot["entries"][slot["default"]]["meta"]
    knn, linear = _top1(meta, "knn"), _top1(meta, "linear_probe")
    t, r, b = meta["training"], meta["recipe"], meta["backbone"]
    hardware = re.sub(r"^1 process\(es\) on ", "one ", str(t["hardware"]).split(", torch")[0])
    clock = "CPU-seconds of training" if r.get("clock") == "process" else "s of training (wall clock)"
    stem = "small-image" if b["small_images"] else "torchvision's standard"
    return (f"`{FLAGSHIP}`: kNN top-1 **{knn['value']:.1f}%** and linear probe **{linear['value']:.1f}%** on the "
            f"CIFAR-10 test images, against {knn['random_init']:.1f}% and {linear['random_init']:.1f}% for the same "
            f"network at random initialisation. A {b['arch']} (width {b['width']}, {stem} stem) pretrained with "
            f"{METHOD_NAMES[meta['method']]} ({meta['num_views']} views per image, projector "
            f"`{meta['projector']}`) for {t['epochs']:.3g} epochs ({t['steps']:,} steps of {r['batch_size']} images) "
            f"in {t['wall_clock_s']:,.0f} {clock} on {hardware}; evaluated {knn['date']} "
            f"(`mvssl_hub/zoo_weights.json`).")


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
