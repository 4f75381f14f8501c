"""Continue a zoo entry's training wherever it stopped: one chunk of a long, interrupted pretraining campaign.

    make campaign ENTRY=cifar10_bt_resnet18_w16                      # one chunk, then the records
    python tools/campaign.py cifar10_bt_resnet18_w16 --chunk_seconds 3600 --data /path/to/cifar10

ENTRY names a preset in ``recipes/configs/zoo/``. Its ``epochs`` fix the whole campaign's length, so the
learning-rate schedule spans the campaign, never one chunk. The run lives outside the work tree
(``$MVSSL_HUB_CACHE/campaign/ENTRY``, default ``~/.cache/mvssl-hub/campaign/ENTRY``), so the next chunk on the
same machine finds it. Each chunk resumes from the newest complete ``step-*`` run state and trains for
``--chunk_seconds`` more of the preset's clock (``--time_budget`` = the seconds already trained + the chunk);
the preset's ``run_state_every_seconds`` bounds what a kill loses.

``--until_seconds`` ends the campaign at a total training time (a fixed-length run, e.g. the classic recipe's
side of a race). If the run state is gone (a new machine) while the repository's records say there was a
run, the campaign starts over and the lost attempt's records move to ``benchmarks/records/campaign/ENTRY/lost-N/``
(and the run folder's own, to its ``lost-N/``), except for a fixed-length campaign whose records say it ended.

After each chunk ``campaign.jsonl`` gets one record (date, CPU kind, the GPU if any, steps and training seconds
before and after, the last kNN), and each time the training crosses a ``--milestone_seconds`` mark the export is
evaluated on the full protocol (kNN with the 50k bank and the linear probe, beside random init, ``recipes/evaluate.py
--record``). The records, the metrics log and the training-curves PNG are copied to
``benchmarks/records/campaign/ENTRY/`` for the repository (never the run state).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

if __package__ in (None, ""):  # `python tools/campaign.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvssl_hub.device import cpu_isa, cpu_name
from mvssl_hub.errors import ConfigError
from mvssl_hub.train.config import Check, at_least, check_ranges, parse_config, run_cli
from mvssl_hub.train.run_state import STATE_FILE, RunStateManager, run_states_dir
from tools.quiet_run import run_quietly

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CampaignConfig:
    """Every setting of a campaign chunk."""

    POSITIONAL = ("entry",)

    entry: str = ""  # a preset in recipes/configs/zoo/ (without .yaml)
    data: str = "uoft-cs/cifar10"  # the preset's dataset: its Hub id, or a local copy (`make campaign` passes one)
    data_name: str = "uoft-cs/cifar10"  # the dataset's Hub id, for the card and config.json
    chunk_seconds: Annotated[float, Check(lambda v: 0 < v < 1e7, "must be in (0, 1e7)")] = 3600.0  # training seconds (the preset's clock) this chunk adds
    until_seconds: Annotated[float | None, Check(lambda v: 0 < v < 1e8, "must be in (0, 1e8)")] = None  # stop the campaign at this many training seconds in all (a fixed-length race)
    milestone_seconds: Annotated[float, Check(lambda v: 0 < v < 1e8, "must be in (0, 1e8)")] = 4 * 3600.0  # full kNN + linear probe each time training crosses a multiple of this
    root: str | None = None  # where campaign runs live (default: $MVSSL_HUB_CACHE or ~/.cache/mvssl-hub, /campaign)
    results: str = str(ROOT / "benchmarks" / "records" / "campaign")  # where the records are copied
    extra: str = ""  # further pretrain flags, e.g. --extra="--limit 64" (smoke runs)
    eval_limit: Annotated[int | None, at_least(1)] = None  # milestone evaluation on the first rows of each split only (smoke runs)
    quiet: bool = True  # pause the chunk while other work loads the machine (tools/quiet_run.py); off for smoke runs

    def __post_init__(self) -> None:
        check_ranges(self)  # every range declared beside its field
        if not self.entry:
            raise ConfigError("config key 'entry': name a preset of recipes/configs/zoo/, e.g. cifar10_bt_resnet18_w16")
        presets = sorted(p.stem for p in (ROOT / "recipes" / "configs" / "zoo").glob("*.yaml"))
        if self.entry not in presets:
            raise ConfigError(f"config key 'entry' = {self.entry!r}: no such preset; known: {presets}")


def long_runs_home() -> Path:
    """Where long, resumable runs keep their state: ``$MVSSL_HUB_CACHE``, else ``~/.cache/mvssl-hub`` (outside the
    work tree, so that the next session on this machine finds them). The network race lives there too."""
    return Path(os.environ.get("MVSSL_HUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mvssl-hub"))


def run_dir(cfg: CampaignConfig) -> Path:
    return (Path(cfg.root) if cfg.root else long_runs_home()) / "campaign" / cfg.entry


def trained_so_far(run: Path) -> tuple[int, float]:
    """(step, training seconds) of the newest complete run state; (0, 0.0) before the first one."""
    latest = RunStateManager(run_states_dir(run)).latest()
    if latest is None:
        return 0, 0.0
    state = json.loads((latest / STATE_FILE).read_text())
    return int(state["global_step"]), float(state["train_seconds"])


def last_knn(run: Path) -> float | None:
    log = run / "logs" / "metrics.jsonl"
    if not log.is_file():
        return None
    values = [r["knn_top1"] for r in map(json.loads, log.read_text().splitlines()) if r.get("knn_top1") is not None]
    return values[-1] if values else None


def keep_lost_attempt(*folders: Path) -> list[Path]:
    """Move an attempt's records (``campaign.jsonl``, the metrics log, the curves, the run's log folder) out of
    each of ``folders`` into ``lost-N/`` beside them, so that a restart neither overwrites them nor mixes its
    curve into theirs; returns the folders that received something."""
    kept = []
    for folder in folders:
        names = [n for n in ("campaign.jsonl", "metrics.jsonl", "training_curves.png", "logs", "train.log")
                 if (folder / n).exists()]
        if not names:
            continue
        n = 1 + max((int(p.name[5:]) for p in folder.glob("lost-*") if p.name[5:].isdigit()), default=0)
        lost = folder / f"lost-{n}"
        lost.mkdir()
        for name in names:
            (folder / name).rename(lost / name)
        kept.append(lost)
    return kept


RECORDS = ("campaign.jsonl", "logs/metrics.jsonl", "logs/training_curves.png")  # what the repository keeps of a run


def copy_records(run: Path, out: Path) -> list[Path]:
    """The run's records (``RECORDS``, those that exist) into the folder ``out``, each replaced whole (copied
    beside, then renamed), so a kill never leaves a half-copied record; returns the copies."""
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in RECORDS:
        src = run / name
        if src.is_file():
            dest = out / src.name
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dest)
            copied.append(dest)
    return copied


def last_record(path: Path) -> dict | None:
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(CampaignConfig, argv, prog="tools/campaign.py", summary=__doc__.split("\n\n")[0])
    run = run_dir(cfg)
    run.mkdir(parents=True, exist_ok=True)
    step0, seconds0 = trained_so_far(run)
    resume = ["--resume"] if run_states_dir(run).is_dir() else []
    out = Path(cfg.results) / cfg.entry
    done = last_record(out / "campaign.jsonl") if not resume and cfg.until_seconds is not None else None
    if done and done.get("exit_code") == 0 and done.get("train_seconds_after", 0) >= cfg.until_seconds:
        step0, seconds0 = done["step_after"], done["train_seconds_after"]  # a fixed-length campaign that ended
    elif not resume:
        lost = keep_lost_attempt(out, run)  # the records say there was a run (or a chunk that never saved)
        if lost:
            print(f"# {run}: no run state found; the campaign starts over (a new machine, or the state was lost); "
                  f"the lost attempt's records are kept in {', '.join(map(str, lost))}")
    budget = seconds0 + cfg.chunk_seconds if cfg.until_seconds is None else min(seconds0 + cfg.chunk_seconds,
                                                                                    cfg.until_seconds)
    if budget <= seconds0:
        print(f"# {cfg.entry}: {seconds0:.0f} s trained, until_seconds {cfg.until_seconds:g} reached: nothing to do")
        return {"step_before": step0, "step_after": step0, "train_seconds_before": seconds0,
                "train_seconds_after": seconds0, "exit_code": 0, "restarted": False, "finished": True}
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--config",
           str(ROOT / "recipes" / "configs" / "zoo" / f"{cfg.entry}.yaml"), "--data", cfg.data,
           "--data_name", cfg.data_name, "--output_dir", str(run), "--time_budget", f"{budget:.1f}", "--progress",
           "false", *cfg.extra.split(), *resume]
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"# chunk: steps {step0}, {seconds0:.0f} s trained -> budget {budget:.0f} s\n# {' '.join(cmd)}", flush=True)
    with open(run / "train.log", "a") as log:  # paused while other work loads the machine (see quiet_run)
        code, waited = run_quietly(cmd, enabled=cfg.quiet, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   say=lambda m: print(m, file=log, flush=True))
    step1, seconds1 = trained_so_far(run)
    import torch  # here, not at the top: the module's import stays light

    record = {"chunk_started": started, "chunk_ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "cpu": f"{cpu_name()} ({cpu_isa()})",
              "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,  # the GPU, if any
              "exit_code": code, "paused_seconds": round(waited), "restarted": not resume,
              "step_before": step0, "step_after": step1, "train_seconds_before": round(seconds0, 1),
              "train_seconds_after": round(seconds1, 1), "knn_top1": last_knn(run)}
    if code == 0 and int(seconds1 // cfg.milestone_seconds) > int(seconds0 // cfg.milestone_seconds):
        evaluation = subprocess.run([sys.executable, str(ROOT / "recipes" / "evaluate.py"), str(run), "--data",
                                     cfg.data, "--data_name", cfg.data_name, "--protocol", "both", "--record",
                                     "--output", str(run / "milestone.json"),
                                     *(["--limit", str(cfg.eval_limit)] if cfg.eval_limit else [])],
                                    cwd=ROOT, capture_output=True, text=True)
        if evaluation.returncode == 0:  # the results, without this machine's paths
            result = json.loads((run / "milestone.json").read_text())
            record["milestone"] = {k: v for k, v in result.items() if k not in ("model", "checkpoint")}
        else:
            record["milestone"] = {"error": evaluation.stderr[-500:]}
    with open(run / "campaign.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    copy_records(run, out)
    print(json.dumps(record, indent=2))
    if code != 0:
        raise SystemExit(f"pretrain exited with {code}; see {run / 'train.log'}")
    return record


if __name__ == "__main__":
    run_cli(main)
