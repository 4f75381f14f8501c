"""There: one campaign chunk of the entry on the GPU (its schedule calibrated, stopped at the call's deadline), the
step timed, then the run's export and records packed into ``--out``."""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.campaign import last_knn, trained_so_far

from .calibrate import calibrate, campaign_extra, resumed_epochs
from .device import Log, device_env, follow, out_paths, preflight, stop_group
from .parts import pack_run
from .settings import (
    BUDGET,
    DATA_NAME,
    GPU_DATA,
    GPU_RUNS,
    MIB,
    MONITOR_NOTE,
    NAME,
    PIPELINE_SECONDS,
    RETURN_FILES,
    SCRIPT,
)
from harness import EMBEDDED_DATA, ROOT, write_result
from learn_check import preset_settings, require


@dataclass
class Call:
    """What a ``train`` call set up before its campaign starts."""

    gpu: str | None
    cuda: bool
    smoke: bool
    learned: dict[str, Any] | None  # the preset's CPU learn check (None in a smoke run)
    env: dict[str, str]  # the children's environment
    packages: dict[str, Any]  # the preflight's findings ("error" when it failed)
    data: str
    root: Path  # the campaign root (tools/campaign.py --root)
    run: Path  # the campaign's run folder: root/campaign/ENTRY
    results: Path  # where the campaign copies its records (a temporary folder: this packs the run's own)
    cleanup: list[Path]  # temporary folders removed at the end
    budget: float  # training seconds of this chunk
    extra: str  # the pretrain flags added to the preset's
    calibration: dict[str, Any] | None


def train(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Run one campaign chunk of the entry, then pack its export and records into ``--out``."""
    t0 = time.perf_counter()
    folder, json_path = out_paths(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    say = Log(folder / f"{NAME}.log")
    try:
        return _train(args, argv, t0, folder, json_path, say)
    finally:
        say.close()


def learn_gate(name: str, say: Log) -> dict[str, Any]:
    """The preset's passing CPU learn check (benchmarks/learn_check.py), or SystemExit before any GPU time."""
    record = require(name)
    say(f"# learn check: {name} learned on the embedded cut ({record['knn_random_init']:.1f}% at random init -> "
        f"{record['knn_final']:.1f}%, width {record['width']}, {record['cpu_isa']}, {record['date'][:10]})")
    return record


def records_of(run: Path) -> list[dict[str, Any]]:
    """The campaign's chunk records kept in its run folder."""
    path = run / "campaign.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def time_pipeline(args: argparse.Namespace, data: str, env: dict[str, str], folder: Path, left: float, smoke: bool,
                  say: Log) -> dict[str, Any] | None:
    """benchmarks/pipeline.py on the preset: the recipe's step against the backbone's own forward + backward, on
    this device, when ``left`` wall seconds allow it; its JSON goes back beside the campaign's."""
    if left < PIPELINE_SECONDS:
        say(f"# pipeline timing skipped: {left:.0f} s left of the deadline (it needs {PIPELINE_SECONDS:g})")
        return None
    out = folder / "pipeline_gpu.json"
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{args.entry}.yaml"
    views = str(preset_settings((preset,))["num_views"])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--views", views, "--out", str(out),
           *(["--smoke"] if smoke else ["--device", "cuda", "--steps", "10", "--repeats", "3", "--warmup", "3",
                                        "--", "--config", str(preset), "--data", data])]
    say(f"$ {shlex.join(cmd)}")
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=left - 15)
    except subprocess.TimeoutExpired:
        say("# pipeline timing: stopped at the deadline")
        return None
    for line in done.stdout.splitlines()[-12:]:
        say(line)
    if done.returncode != 0 or not out.is_file():
        return None
    row = json.loads(out.read_text())["results"][0]
    return {"views_per_s": row["views_per_s"], "ratio_recipe_over_backbone": row.get("ratio_recipe_over_backbone")}


def _train(args: argparse.Namespace, argv: list[str] | None, t0: float, folder: Path, json_path: Path,
           say: Log) -> dict[str, Any]:
    call = set_up(args, say)
    cmd = campaign_command(args, call)
    say(f"# {'smoke run: tiny flags, numbers mean nothing' if call.smoke else MONITOR_NOTE}")
    say(f"$ {shlex.join(cmd)}")
    ran = run_campaign(args, call, cmd, t0, say)
    result = report(args, argv, call, ran, t0, folder, json_path, say)
    for path in call.cleanup:
        shutil.rmtree(path, ignore_errors=True)
    code = ran["code"]
    if (not result["export"] and not args.records_only) or code != 0:
        what = "did not start (the preflight failed)" if code is None else f"exited with {code}"
        raise SystemExit(f"{NAME}: the campaign {what}" + ("" if result["export"] or args.records_only else
                                                           "; no export was packed")
                         + f" (see {folder / (NAME + '.log')})")
    return result


def set_up(args: argparse.Namespace, say: Log) -> Call:
    """The GPU (or a smoke run on the CPU), the learn gate, the environment, the folders, the budget and the flags,
    the schedule's epochs included."""
    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    smoke = args.smoke or not cuda
    if not cuda and not args.smoke:
        say("# no CUDA GPU visible -> dry run of the same code path on the CPU (tiny flags)")
    say(f"# {NAME}: entry {args.entry}; torch {torch.__version__}; GPU: {gpu or 'none'}; {os.cpu_count()} CPUs")
    learned = None if smoke else learn_gate(args.entry, say)
    env = device_env(args, smoke, say)
    packages = preflight(env, say)
    data = args.data or str(EMBEDDED_DATA if smoke else GPU_DATA.relative_to(ROOT))  # relative: resumable anywhere
    cleanup: list[Path] = []
    if args.root:
        root = Path(args.root)
    elif smoke:
        root = Path(tempfile.mkdtemp(prefix=f"{NAME}-smoke-"))
        cleanup.append(root)
    else:
        root = GPU_RUNS
    results = Path(tempfile.mkdtemp(prefix=f"{NAME}-records-"))  # the campaign's copies: this packs the run's own
    cleanup.append(results)
    budget = 3.0 if smoke and args.budget == BUDGET else args.budget
    extra = campaign_extra(smoke, args.knn_every, args.run_state_every_seconds, os.cpu_count() or 1)
    if args.records_only:  # a comparison run (e.g. the classic recipe): its curve is the result, not its weights
        extra += " --export false"
    run = root / "campaign" / args.entry
    extra, calibration = schedule(args, run, data, env, packages, extra, budget, say)
    return Call(gpu, cuda, smoke, learned, env, packages, data, root, run, results, cleanup, budget, extra,
                calibration)


def schedule(args: argparse.Namespace, run: Path, data: str, env: dict[str, str], packages: dict[str, Any],
             extra: str, budget: float, say: Log) -> tuple[str, dict[str, Any] | None]:
    """(the flags with the schedule's ``--epochs``, the calibration): a resumed run keeps the epochs it started with,
    a new one is calibrated (unless ``--calibrate 0``, or the preflight failed: then the preset's epochs)."""
    earlier = resumed_epochs(run)
    if earlier is not None:  # a second call on a warm machine: the run's schedule stays as it was started
        say(f"# resuming {run}: its schedule of {earlier} epochs stays")
        return extra + f" --epochs {earlier}", None
    if args.calibrate > 0 and "error" not in packages:
        calibration = calibrate(args, data, env, f"{extra} {args.extra}", budget, say)
        return extra + f" --epochs {calibration['epochs']}" + " --compile true" * calibration["compile"], calibration
    return extra, None


def campaign_command(args: argparse.Namespace, call: Call) -> list[str]:
    """tools/campaign.py for one chunk of ``call.budget`` training seconds, never paused, no milestone evaluation."""
    return [sys.executable, str(ROOT / "tools" / "campaign.py"), args.entry, "--data", call.data, "--data_name",
            DATA_NAME, "--root", str(call.root), "--results", str(call.results), "--quiet", "false",
            "--milestone_seconds", "1e7", "--chunk_seconds", f"{call.budget:g}",
            f"--extra={call.extra} {args.extra}".rstrip()]


def run_campaign(args: argparse.Namespace, call: Call, cmd: list[str], t0: float, say: Log) -> dict[str, Any]:
    """Run the chunk until it ends or the call's deadline stops its process group; then its pretraining log, whole
    in the call's log and its end on the screen. (exit code or None when it did not start, whether it was stopped,
    when it started, how many chunk records there were before it, the command.)"""
    log = call.run / "train.log"
    log_start = log.stat().st_size if log.is_file() else 0
    chunks_before = len(records_of(call.run))
    started = time.time()
    stopped = False
    code: int | None = None
    if "error" not in call.packages:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=call.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        reader = follow(proc, say)
        try:
            proc.wait(max(1.0, args.deadline - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            stopped = True
            stop_group(proc, say)
        reader.join(5)
        code = proc.returncode
    if log.is_file():  # the pretraining log of this call: whole in the log file, its end on the screen
        with open(log, errors="replace") as f:
            f.seek(log_start)
            lines = f.read().splitlines()
        say(f"# --- {log} ({len(lines)} lines) ---", echo=False)
        for line in lines:
            say(line, echo=False)
        print("\n".join(["# ... recipes/pretrain.py, last lines:", *lines[-40:]]), flush=True)
    return {"code": code, "stopped": stopped, "started": started, "chunks_before": chunks_before, "command": cmd}


def report(args: argparse.Namespace, argv: list[str] | None, call: Call, ran: dict[str, Any], t0: float,
           folder: Path, json_path: Path, say: Log) -> dict[str, Any]:
    """Time the step (when the deadline leaves room), pack the run into parts and write ``gpu_campaign.json``: the
    steps and training seconds reached, the export, the chunk's record, the calibration, every part's sha256."""
    run = call.run
    steps, seconds = trained_so_far(run) if run.is_dir() else (0, 0.0)
    chunks = records_of(run)
    export = (run / "export" / "model.safetensors").is_file() and (run / "export" / "config.json").is_file()
    trained = json.loads((run / "export" / "config.json").read_text()).get("training") or {} if export else {}
    pipeline = time_pipeline(args, call.data, call.env, folder, args.deadline - (time.perf_counter() - t0),
                             call.smoke, say)
    packed = pack_run(run, folder, int(args.part_mib * MIB)) if run.is_dir() else {"parts": []}
    if len(packed["parts"]) + 2 + (pipeline is not None) > RETURN_FILES:
        say(f"# WARNING: {len(packed['parts'])} parts + JSON + log exceed the {RETURN_FILES} files that come back")
    code, stopped = ran["code"], ran["stopped"]
    values = {"gpu": call.gpu, "cuda": call.cuda, "smoke": call.smoke, "entry": args.entry,
              "campaign_exit_code": code, "stopped_at_deadline": stopped, "steps": steps,
              "train_seconds": round(seconds, 1), "knn_top1_monitor": last_knn(run) if run.is_dir() else None,
              "knn_monitor": "smoke run: tiny flags" if call.smoke else MONITOR_NOTE,
              "budget_s": call.budget, "deadline_s": args.deadline,
              "campaign_seconds": round(time.time() - ran["started"], 1),
              "export": export, "records_only": args.records_only, "export_steps": trained.get("steps"),
              "export_train_seconds": trained.get("wall_clock_s"),
              "campaign_record": chunks[-1] if len(chunks) > ran["chunks_before"] else None,
              "packages": call.packages, "calibration": call.calibration, "learn_check": call.learned,
              "pipeline": pipeline, "campaign_command": shlex.join(ran["command"]), **packed,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    result = write_result(json_path, NAME, values, None if argv is None else [SCRIPT, *argv], quiet=True)
    say(f"# {NAME}: {steps} steps, {seconds:.0f} s of training, kNN (monitor) {values['knn_top1_monitor']}, "
        f"export {'packed' if export else 'MISSING'}, campaign exit {code}{' (stopped at the deadline)' * stopped}; "
        f"{len(packed['parts'])} part(s) of {packed.get('tar_bytes', 0) / MIB:.1f} MiB, sha256 "
        f"{packed.get('sha256')}; {values['wall_seconds']:.0f} s in all -> {folder}")
    return result
