"""A zoo entry trained on a remote GPU machine reachable only by copying files, and the three-arm recipe race on the
same machine, each in one call; what they make is brought back here.

The machine takes a copy of the checkout plus named folders (64 MiB in all), runs one command (at most 10
minutes), and returns the files its command leaves in ``$OUT`` (8 files, 16 MiB each). The steps:

    python tools/gpu_campaign.py pack           # here: data + wheels to carry; prints both device calls
    python3 tools/gpu_campaign.py train --out "$OUT"    # call 1, there: calibrate, train, time the step, pack
    python3 tools/gpu_campaign.py race --out "$OUT"     # call 2, there: the race's three arms in turn
    python tools/gpu_campaign.py unpack FILES_AT  # here, after call 1: check every part, extract, copy records
    python tools/gpu_campaign.py train --smoke --out /tmp/x    # CPU, seconds: the same code path, tiny
    python tools/gpu_campaign.py race --smoke --out /tmp/y     # CPU, seconds: the same code path, tiny

``train`` and ``race`` refuse a preset without a passing CPU learn check (``benchmarks/learn_check.py``). The whole
procedure, with the exact calls, is docs/gpu_calls.md; each job is a module of ``tools/remote_gpu/``.

What travels: ``.gpudata/cifar10/train.parquet`` (the full train split), ``.gpudata/cifar10/test.parquet`` (its first
2,000 rows only: the kNN monitor's queries during training; the full evaluation runs later here) and ``.whl/``
(``datasets``, the packages it needs that the machine's image lacks, and ``timm`` for LARS: installed there into
/tmp/site, without the network). What ``train`` brings back: one tar stream of the run's export and records
(campaign.jsonl, metrics.jsonl, the curves, train.log) split into ``gpu_campaign.tar.part-aa``, ``-ab``, ... of 15
MiB, ``gpu_campaign.json`` (the harness's envelope, the GPU, every part's sha256 and the whole stream's, the
campaign's exit code, steps and training seconds reached, the calibration, the step timing, wall seconds),
``pipeline_gpu.json`` and ``gpu_campaign.log``. ``unpack`` puts the run in ``$MVSSL_HUB_CACHE/campaign-gpu/ENTRY/``
(outside the work tree) and its records in ``benchmarks/records/campaign/ENTRY_gpu/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tools, recipes and mvssl_hub (the
# device has none of them installed, and `python3 tools/gpu_campaign.py` puts only tools/ on the path)

from tools.remote_gpu.pack import pack
from tools.remote_gpu.race import race
from tools.remote_gpu.settings import (
    BUDGET,
    CALIBRATE,
    COMPILE_PROBE,
    DEADLINE,
    DEVICE_SITE,
    ENTRY,
    GPU_DATA,
    GPU_RUNS,
    MONITOR_ROWS,
    PART_MIB,
    RACE_BUDGET,
    RACE_DEADLINE,
    SCHEDULE_SHARE,
    SHARED_DATA,
    WHEELS,
)
from tools.remote_gpu.train import train
from tools.remote_gpu.unpack import unpack

from harness import ROOT


def pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=str(SHARED_DATA), help="the full CIFAR-10 parquet folder")
    p.add_argument("--data_dir", default=str(GPU_DATA), help="what travels: train.parquet + the first test rows")
    p.add_argument("--test_rows", type=int, default=MONITOR_ROWS, help="test rows that travel (kNN monitor queries)")
    p.add_argument("--wheels", default=str(WHEELS), help="folder of the wheels that travel")
    p.add_argument("--no_wheels", action="store_true", help="skip the wheel download (offline tests)")
    p.add_argument("--budget", type=float, default=BUDGET, help="training seconds the printed command asks for")


def train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--entry", default=ENTRY, help="a preset of recipes/configs/zoo/")
    t.add_argument("--data", default=None, help=f"default: {GPU_DATA.relative_to(ROOT)} (smoke: the embedded cut "
                                                 "when that is absent)")
    t.add_argument("--root", default=None, help=f"campaign root (default {GPU_RUNS.relative_to(ROOT)}; smoke: a "
                                                "temporary folder)")
    t.add_argument("--budget", type=float, default=BUDGET, help="training seconds (wall clock) of this chunk")
    t.add_argument("--deadline", type=float, default=DEADLINE, help="wall seconds of this command after which the "
                                                                    "campaign is stopped and what exists is packed")
    t.add_argument("--calibrate", type=float, default=None, help=f"training seconds of a first run that times the "
                   f"step and sizes the schedule (--epochs) to {SCHEDULE_SHARE:.0%}% of --budget; 0: the preset's "
                   f"epochs (default {CALIBRATE:g}; smoke: 2)")
    t.add_argument("--compile_probe", type=float, default=None, help="further training seconds of a compiled "
                   f"calibration run: torch.compile is used when it pays (default {COMPILE_PROBE:g}; smoke: 0; 0: off)")
    t.add_argument("--knn_every", type=float, default=60.0, help="training seconds between kNN evaluations")
    t.add_argument("--run_state_every_seconds", type=float, default=120.0, help="training seconds between run states")
    t.add_argument("--extra", default="", help="further pretrain flags (after the GPU or smoke ones)")
    t.add_argument("--records_only", action="store_true", help="a comparison run: no export (--export false); only "
                   "its records and log come back")
    t.add_argument("--part_mib", type=float, default=PART_MIB, help="size of each returned part, MiB (<= 16)")
    t.add_argument("--wheels", default=str(WHEELS), help="wheels to install when `datasets` is missing")
    t.add_argument("--site", default=DEVICE_SITE, help="where they are installed (put on the children's PYTHONPATH)")
    t.add_argument("--smoke", action="store_true", help="CPU, seconds: tiny flags on the embedded cut (also the "
                                                        "behaviour without a CUDA GPU)")
    t.add_argument("--out", default=None, help="folder for the parts, JSON and log, or the JSON's path "
                                               "(default: $OUT, else a temporary folder)")


def race_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--data", default=None, help=f"default: {GPU_DATA.relative_to(ROOT)}")
    r.add_argument("--budget", type=float, default=RACE_BUDGET, help="training seconds of each arm (wall clock)")
    r.add_argument("--knn_every", type=float, default=8.0, help="training seconds between kNN evaluations")
    r.add_argument("--deadline", type=float, default=RACE_DEADLINE, help="wall seconds of this command after which "
                                                                         "a running arm is stopped")
    r.add_argument("--wheels", default=str(WHEELS), help="wheels to install when `datasets` or `timm` is missing")
    r.add_argument("--site", default=DEVICE_SITE, help="where they are installed (put on the children's PYTHONPATH)")
    r.add_argument("--smoke", action="store_true", help="CPU, seconds: tiny flags on the embedded cut")
    r.add_argument("--out", default=None, help="folder for the results and log (default: $OUT, else a temporary one)")


def unpack_arguments(u: argparse.ArgumentParser) -> None:
    u.add_argument("parts_dir", help="the folder holding the returned files (the run tool's files_at)")
    u.add_argument("--runs_root", default=None, help="default: $MVSSL_HUB_CACHE or ~/.cache/mvssl-hub; the run "
                                                     "goes to <runs_root>/campaign-gpu/ENTRY")
    u.add_argument("--results", default=None, help="the records go to <results>/ENTRY_gpu/ (default: "
                                                   "benchmarks/records/campaign)")
    u.add_argument("--replace", action="store_true", help="keep an earlier GPU run as ENTRY.previous-N and its "
                                                          "records in lost-N/, and put this one in its place")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    pack_arguments(sub.add_parser("pack", help="here, before the device call: data + wheels to carry; prints the call"))
    train_arguments(sub.add_parser("train", help="on the device: one campaign chunk, then the export packed into --out"))
    race_arguments(sub.add_parser("race", help="on the device: the three-arm recipe race "
                                               "(benchmarks/studies/fair_race.py)"))
    unpack_arguments(sub.add_parser("unpack", help="here, after the call: check the parts, extract, copy the records"))
    args = ap.parse_args(argv)
    if args.action == "train" and args.calibrate is None:
        args.calibrate = 2.0 if args.smoke else CALIBRATE
    if args.action == "train" and args.compile_probe is None:
        args.compile_probe = 0.0 if args.smoke else COMPILE_PROBE
    if args.action == "train" and not 0 < args.part_mib <= 16:
        ap.error(f"--part_mib {args.part_mib:g}: must be in (0, 16] (the device returns files of 16 MiB at most)")
    actions: dict[str, Callable[[], dict[str, Any]]] = {"pack": lambda: pack(args),
                                                        "train": lambda: train(args, argv),
                                                        "race": lambda: race(args, argv),
                                                        "unpack": lambda: unpack(args)}
    return actions[args.action]()


if __name__ == "__main__":
    main()
