"""A zoo entry trained on a remote GPU machine reachable only by copying files, and the three-arm recipe race on the
same machine, each in one call; what they make is brought back here.

The machine takes a copy of the checkout plus named folders (64 MiB in all), runs one command (at most 10
minutes), and returns the files its command leaves in ``$OUT`` (8 files, 16 MiB each). The steps:

    python benchmarks/gpu_campaign.py pack           # here: data + wheels to carry; prints both device calls
    python3 benchmarks/gpu_campaign.py train --out "$OUT"    # call 1, there: calibrate, train, time the step, pack
    python3 benchmarks/gpu_campaign.py race --out "$OUT"     # call 2, there: the race's three arms in turn
    python benchmarks/gpu_campaign.py unpack FILES_AT  # here, after call 1: check every part, extract, copy records
    python benchmarks/gpu_campaign.py train --smoke --out /tmp/x    # CPU, seconds: the same code path, tiny
    python benchmarks/gpu_campaign.py race --smoke --out /tmp/y     # CPU, seconds: the same code path, tiny

``train`` and ``race`` refuse a preset without a passing CPU learn check (``benchmarks/learn_check.py``). The whole
procedure, with the exact calls, is docs/gpu_calls.md.

What travels: ``.gpudata/cifar10/train.parquet`` (the full train split), ``.gpudata/cifar10/test.parquet`` (its first
2,000 rows only: the kNN monitor's queries during training; the full evaluation runs later here) and ``.whl/``
(``datasets``, the packages it needs that the machine's image lacks, and ``timm`` for LARS: installed there into
/tmp/site, without the network). What ``train`` brings back: one tar stream of the run's export and records
(campaign.jsonl, metrics.jsonl, the curves, train.log) split into ``gpu_campaign.tar.part-aa``, ``-ab``, ... of 15
MiB, ``gpu_campaign.json`` (the harness's envelope, the GPU, every part's sha256 and the whole stream's, the
campaign's exit code, steps and training seconds reached, the calibration, the step timing, wall seconds),
``pipeline_gpu.json`` and ``gpu_campaign.log``. ``unpack`` puts the run in ``$MVSSL_HUB_CACHE/campaign-gpu/ENTRY/``
(outside the work tree) and its records in ``benchmarks/results/campaign/ENTRY_gpu/``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's recipes and mvssl_hub (the device
# has neither installed, and `python3 benchmarks/gpu_campaign.py` puts only benchmarks/ on the path)

from recipes.campaign import RECORDS, copy_records, keep_lost_attempt, last_knn, long_runs_home, trained_so_far

from harness import EMBEDDED_DATA, RESULTS, ROOT, write_result
from learn_check import require

NAME = "gpu_campaign"
ENTRY = "barlowtwins_resnet18_cifar10_v2"
DATA_NAME = "uoft-cs/cifar10"
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10"  # this machine's full CIFAR-10 (uoft-cs/cifar10 layout)
GPU_DATA = ROOT / ".gpudata" / "cifar10"  # what travels: the full train split, the first test rows
WHEELS = ROOT / ".whl"
GPU_RUNS = ROOT / ".gpurun"  # the run folder on the device (ignored; a second call on a warm machine resumes it)
DEVICE_SITE = "/tmp/site"  # where the wheels are installed on the device
WHEEL_PINS = ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "fsspec==2026.9.0", "timm==1.0.31")
# fsspec: datasets pins it <= 2026.9.0 and the device image's may be newer; the carried one comes first on the path.
# timm: its Lars is the published Barlow Twins arm's optimiser (benchmarks/studies/fair_race.py)
# what the device image has already (datasets' other requirements must be among these)
DEVICE_HAS = {"torch", "torchvision", "accelerate", "huggingface-hub", "safetensors", "pyarrow", "pandas", "numpy", "pillow",
              "fsspec", "xxhash", "pyyaml", "tqdm", "requests", "filelock", "matplotlib", "packaging"}
# The device time of a session is 900 s in all, its start included: the flagship's call (DEADLINE, TIMEOUT_S) and the
# race's (RACE_*) fit it after a start of up to ~100 s. Per-process overhead on the H200 (2026-12-04 records): ~22 s
# (imports, 10 s to decode the train split, cuDNN's autotuning) on top of each run's training seconds.
RACE_BUDGET = 50.0  # training seconds of each race arm (benchmarks/studies/fair_race.py)
RACE_DEADLINE = 240.0  # wall seconds of `race` after which a running arm is stopped
RACE_TIMEOUT_S = 255  # the race call's timeout_s
PIPELINE_SECONDS = 45.0  # wall seconds the step timing (benchmarks/pipeline.py) needs after the campaign
MONITOR_ROWS = 2000  # test rows that travel: the kNN monitor's queries during training
MIB = 1 << 20
TRAVEL_LIMIT = 64 * MIB  # the checkout plus the carried paths
RETURN_FILES = 8  # files that come back from $OUT, each at most 16 MiB
PART_MIB = 15.0
BUDGET = 350.0  # training seconds (wall clock); decoding, kNN, the export and the step timing come on top
DEADLINE = 520.0  # wall seconds of `train` after which the campaign is stopped and what exists is packed
TIMEOUT_S = 545  # the device call's timeout_s
CALIBRATE = 20.0  # training seconds of the calibration run that times the preset's step on this GPU
# A compiled calibration run costs its compile (~60 s for a ResNet-18's forward + backward is typical of inductor)
# plus ~40 s more: at a 350 s budget, compile would have to run > 1.4x faster than eager just to repay the probe and
# its own compile in the campaign. Off by default; `--compile_probe 40` measures it where a call has time to spare.
COMPILE_PROBE = 0.0  # further training seconds of a second, compiled calibration run (inductor compiles inside it)
# H200, 2026-12-04: calibration timed 59.8 steps/s, the campaign averaged 44.4 (kNN, saves, monitors, noise): 0.74
SCHEDULE_SHARE = 0.7  # the share of the budget the schedule is sized to fill (the rest: headroom)
MAX_EPOCHS = 400
SMOKE_EXTRA = ("--limit 64 --eval_limit 64 --batch_size 16 --width 8 --proj_dim 16 --knn_k 10 --knn_every_seconds 1 "
               "--monitors false --save_every_seconds 0 --save_every 8 --log_every 1 --precision fp32 "
               "--decode_workers 1 --threads 1")
MONITOR_NOTE = (f"kNN monitor during training: bank = the first 10,000 train images (the preset's eval_limit), "
                f"queries = only the first {MONITOR_ROWS:,} rows of test.parquet (the copy that travels); "
                f"the full protocol (recipes/evaluate.py) runs later, off the device")
PACKED = ("export", *RECORDS, "train.log")  # the run's export, the records the campaign keeps, and its log


# ------------------------------------------------------------------------------------------------------ pack

def copy_train(source: Path, dest: Path) -> str:
    """``dest`` as a byte copy of ``source`` (not a link: links do not travel); kept when already the same size."""
    if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == source.stat().st_size:
        return "kept"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return "copied"


def head_rows(source: Path, dest: Path, rows: int) -> int:
    """The first ``rows`` rows of a parquet file, same schema (and its Hugging Face metadata); returns the count."""
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    head = table.slice(0, min(rows, table.num_rows))
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(head, tmp)
    os.replace(tmp, dest)
    return head.num_rows


def wheel_file(folder: Path, pin: str) -> Path | None:
    name, version = pin.split("==")
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    return found[0] if found else None


def download_wheels(folder: Path) -> list[Path]:
    """The pinned wheels for the device's CPython 3.12 on x86-64 Linux (pip download, no dependencies); skipped
    when they are all there already."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [pin for pin in WHEEL_PINS if wheel_file(folder, pin) is None]
    if missing:
        platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                     for a in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(folder), *missing]
        print("$ " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return [wheel_file(folder, pin) for pin in WHEEL_PINS]  # type: ignore[misc]


def unmet_requirements(wheels: list[Path]) -> list[str]:
    """The unconditional requirements of the carried wheels that neither they nor the device image provide."""
    from packaging.requirements import Requirement

    def canon(name: str) -> str:
        return name.lower().replace("_", "-").replace(".", "-")

    carried = {canon(w.name.split("-")[0]) for w in wheels}
    unmet = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        for line in lines:
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if req.marker is None and canon(req.name) not in carried | DEVICE_HAS:
                    unmet.append(f"{wheel.name}: {req}")
    return unmet


def travel_bytes(paths: list[Path]) -> tuple[int, dict[str, int]]:
    """Bytes of the checkout that the device tool copies (tracked and untracked-not-ignored files) and of each
    carried path."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    tree = sum((ROOT / f).lstat().st_size for f in listed if f and (ROOT / f).is_file())
    carried = {}
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        carried[path.name] = sum(p.lstat().st_size for p in files)
    return tree, carried


def device_command(budget: float, action: str = "train") -> str:
    """A device call's command line (the device's python3 has torch; ``$OUT`` is the folder that comes back)."""
    budget_flag = f" --budget {budget:g}" if budget != {"train": BUDGET, "race": RACE_BUDGET}[action] else ""
    return f'python3 benchmarks/gpu_campaign.py {action} --out "$OUT"{budget_flag}'


def pack(args: argparse.Namespace) -> dict[str, Any]:
    """Write the data and wheels to carry; print the device call, its carry list and the size that travels."""
    source, data = Path(args.source), Path(args.data_dir)
    for split in ("train", "test"):
        if not (source / f"{split}.parquet").is_file():
            raise SystemExit(f"pack: {source / f'{split}.parquet'} not found (--source: a CIFAR-10 parquet folder)")
    data.mkdir(parents=True, exist_ok=True)
    how = copy_train(source / "train.parquet", data / "train.parquet")
    rows = head_rows(source / "test.parquet", data / "test.parquet", args.test_rows)
    print(f"# {data / 'train.parquet'}: {how} from {source}; {data / 'test.parquet'}: first {rows} test rows "
          "(the kNN monitor's queries on the device)")
    carry_paths = [data.parent if data.parent.name == ".gpudata" else data]
    unmet: list[str] = []
    if not args.no_wheels:
        wheels = download_wheels(Path(args.wheels))
        unmet = unmet_requirements(wheels)
        print("# wheels: " + ", ".join(w.name for w in wheels))
        if unmet:
            print("# WARNING: requirements the device may lack: " + "; ".join(unmet))
        carry_paths.append(Path(args.wheels))
    tree, carried = travel_bytes(carry_paths)
    total = tree + sum(carried.values())
    carry = []
    for path in carry_paths:
        try:
            carry.append(path.resolve().relative_to(ROOT).as_posix())
        except ValueError:
            print(f"# WARNING: {path} is outside the checkout {ROOT}: it cannot be carried")
    calls = [{"command": device_command(args.budget), "carry": carry, "timeout_s": TIMEOUT_S},
             {"command": device_command(RACE_BUDGET, "race"), "carry": carry, "timeout_s": RACE_TIMEOUT_S}]
    print(f"# travels: {total / MIB:.1f} MiB of {TRAVEL_LIMIT / MIB:.0f} (checkout {tree / MIB:.1f} MiB, "
          + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in carried.items()) + ")")
    if total > TRAVEL_LIMIT:
        print(f"# WARNING: over the {TRAVEL_LIMIT / MIB:.0f} MiB the device tool carries: leave the tracked bundle "
              "of the zoo behind for the call (docs/gpu_calls.md)")
    print("# the device calls, in this order (the flagship, then the race on the still-warm machine; after the first,"
          " `unpack FILES_AT` here; after the second, copy its files: docs/gpu_calls.md):")
    for call in calls:
        print(json.dumps(call))
    return {**calls[0], "calls": calls, "travel_bytes": total, "tree_bytes": tree, "carried_bytes": carried,
            "test_rows": rows, "unmet_requirements": unmet}


# ----------------------------------------------------------------------------------------------------- train

class Log:
    """Lines to stdout and to a file at once (thread-safe: the campaign's output arrives from a reader thread)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w")
        self.lock = threading.Lock()

    def __call__(self, text: str, echo: bool = True) -> None:
        with self.lock:
            if echo:
                print(text, flush=True)
            self.file.write(text + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def install_wheels(wheels: Path, site: Path, say: Log) -> None:
    """Install the carried wheels into ``site`` (pip, no index, no dependencies); if pip fails, unzip them there
    (they are pure-Python)."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"no wheels in {wheels} and `datasets` is not importable: run `pack` before the call")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", str(site), *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    say(f"$ {shlex.join(cmd)}\n{done.stdout}{done.stderr}".rstrip())
    if done.returncode != 0:
        say(f"# pip exited with {done.returncode}: unzipping the wheels into {site} instead")
        for wheel in files:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)


PREFLIGHT = """
import importlib.metadata as md, json
from packaging.requirements import Requirement
import datasets, dill, multiprocess, pyarrow, huggingface_hub, fsspec
have = {n: md.version(n) for n in ("datasets", "dill", "multiprocess", "pyarrow", "huggingface-hub", "fsspec",
                                   "pandas", "numpy", "torch", "accelerate")}
unmet = []
for line in md.requires("datasets") or []:
    r = Requirement(line)
    if r.marker is None:
        try:
            v = md.version(r.name)
        except md.PackageNotFoundError:
            v = None
        if v is None or (r.specifier and not r.specifier.contains(v, prereleases=True)):
            unmet.append(f"{r} (have {v})")
print(json.dumps({"versions": have, "unmet": unmet}))
"""


def preflight(env: dict[str, str], say: Log) -> dict[str, Any]:
    """``datasets`` and its requirements as the campaign's processes will see them (versions, unmet pins)."""
    done = subprocess.run([sys.executable, "-c", PREFLIGHT], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        say(f"# preflight failed: {done.stderr[-3000:]}")
        return {"error": done.stderr[-1000:]}
    found = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"# packages: {found['versions']}")
    if found["unmet"]:
        say(f"# WARNING: datasets' requirements not met (trying anyway): {found['unmet']}")
    return found


class Parts:
    """A binary sink that splits what is written into ``<prefix>aa``, ``ab``, ... of at most ``part_bytes`` each,
    hashing every part and the whole stream."""

    def __init__(self, prefix: Path, part_bytes: int) -> None:
        self.prefix, self.part_bytes = prefix, part_bytes
        self.whole = hashlib.sha256()
        self.parts: list[dict[str, Any]] = []
        self.file: BinaryIO | None = None
        self.size = 0

    def _next(self) -> None:
        self._finish()
        n = len(self.parts)
        name = self.prefix.name + chr(97 + n // 26) + chr(97 + n % 26)
        self.file = open(self.prefix.with_name(name), "wb")
        self.hash = hashlib.sha256()
        self.parts.append({"name": name, "bytes": 0})

    def _finish(self) -> None:
        if self.file is not None:
            self.file.close()
            self.parts[-1]["sha256"] = self.hash.hexdigest()
            self.file = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self.file is None or self.parts[-1]["bytes"] == self.part_bytes:
                self._next()
            take = view[: self.part_bytes - self.parts[-1]["bytes"]]
            self.file.write(take)  # type: ignore[union-attr]
            self.hash.update(take)
            self.whole.update(take)
            self.parts[-1]["bytes"] += len(take)
            self.size += len(take)
            view = view[len(take):]
        return len(data)

    def close(self) -> None:
        self._finish()


def pack_run(run: Path, folder: Path, part_bytes: int) -> dict[str, Any]:
    """The run's export and records as one tar stream in parts under ``folder``; their names and hashes."""
    for old in folder.glob(f"{NAME}.tar.part-*"):
        old.unlink()
    members = []
    for name in PACKED:
        path = run / name
        members += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.is_file()
    sink = Parts(folder / f"{NAME}.tar.part-", part_bytes)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in members:
            tar.add(path, arcname=path.relative_to(run).as_posix(), recursive=False)
    sink.close()
    return {"sha256": sink.whole.hexdigest(), "tar_bytes": sink.size, "part_bytes": part_bytes,
            "parts": sink.parts, "members": [p.relative_to(run).as_posix() for p in members]}


def follow(proc: subprocess.Popen, say: Log) -> threading.Thread:
    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            say(line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def stop_group(proc: subprocess.Popen, say: Log) -> None:
    """SIGTERM, then SIGKILL, to the campaign's process group (the campaign and its pretraining process)."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        say(f"# deadline: sending {sig.name} to the campaign's process group {proc.pid}")
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def campaign_extra(smoke: bool, knn_every: float, save_every: float, threads: int) -> str:
    """The pretrain flags added to the preset's: the wall clock, then the GPU's cadence and threads (or the smoke
    run's tiny settings)."""
    if smoke:
        return f"--clock wall {SMOKE_EXTRA}"
    return (f"--clock wall --knn_every_seconds {knn_every:g} --save_every_seconds {save_every:g} "
            f"--decode_workers {threads} --threads {threads}")


def calibration_command(preset: Path, data: str, folder: Path, seconds: float, extra: str) -> list[str]:
    """A short pretraining run of the preset, logged at its own cadence: the step alone (no periodic kNN, monitors,
    export or saves)."""
    return [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--config", str(preset), "--data", data,
            "--data_name", DATA_NAME, "--output_dir", str(folder), "--progress", "false", *extra.split(),
            "--time_budget", f"{seconds:g}", "--knn_every", "0", "--knn_every_seconds", "0", "--knn_random_init",
            "false", "--monitors", "false", "--export", "false", "--save_every", "0", "--save_every_seconds", "0"]


def step_rate(metrics: Path) -> tuple[float, float]:
    """(steps per training second, steps per epoch) from a run's ``metrics.jsonl``: the rate over the second half of
    its logged steps (the first half holds the warm-up: cuDNN's autotuning, the allocator's first growth)."""
    rows = [r for r in map(json.loads, metrics.read_text().splitlines())
            if r.get("loss") is not None and r.get("train_seconds") is not None and r.get("epoch")]
    if len(rows) < 3:
        raise ValueError(f"{metrics}: {len(rows)} logged training steps; at least 3 are needed to time the step")
    first, last = rows[len(rows) // 2 - 1], rows[-1]
    seconds = last["train_seconds"] - first["train_seconds"]
    if seconds <= 0:
        raise ValueError(f"{metrics}: no training time between steps {first['step']} and {last['step']}")
    return (last["step"] - first["step"]) / seconds, last["step"] / last["epoch"]


def epochs_for(rate: float, steps_per_epoch: float, budget: float, share: float = SCHEDULE_SHARE,
               most: int = MAX_EPOCHS) -> int:
    """Whole epochs whose steps fit ``share`` of ``budget`` training seconds at ``rate`` steps/s (1 to ``most``)."""
    return max(1, min(most, int(rate * budget * share // steps_per_epoch)))


def resumed_epochs(run: Path) -> int | None:
    """The epochs an earlier call's run was started with (its metrics log's config record), or None."""
    log = run / "logs" / "metrics.jsonl"
    if not any((run / d).is_dir() for d in ("run_states", "checkpoints")) or not log.is_file():  # new or old layout
        return None
    for row in map(json.loads, log.read_text().splitlines()):
        if "config" in row:
            return int(row["config"]["epochs"])
    return None


def time_preset(args: argparse.Namespace, data: str, env: dict[str, str], extra: str, seconds: float,
                say: Log) -> dict[str, Any]:
    """One calibration run of the preset: its step rate (second half of its logged steps), steps per epoch and the
    training seconds at its first logged step (what a compiled run spends compiling shows there)."""
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{args.entry}.yaml"
    folder = Path(tempfile.mkdtemp(prefix=f"{NAME}-calibrate-"))
    cmd = calibration_command(preset, data, folder, seconds, extra)
    say(f"$ {shlex.join(cmd)}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines()[-25:]:
        say(line)
    try:
        if done.returncode != 0:
            raise ValueError(f"the calibration run exited with {done.returncode}")
        metrics = folder / "logs" / "metrics.jsonl"
        rate, per_epoch = step_rate(metrics)
        first = next(r["train_seconds"] for r in map(json.loads, metrics.read_text().splitlines())
                     if r.get("loss") is not None and r.get("train_seconds") is not None)
    except (ValueError, OSError) as e:
        raise SystemExit(f"{NAME}: calibration failed: {e}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"seconds": seconds, "wall_seconds": round(time.perf_counter() - t0, 1), "steps_per_second": round(rate, 2),
            "steps_per_epoch": round(per_epoch, 2), "first_logged_step_seconds": round(first, 1),
            "command": shlex.join(cmd)}


def compile_pays(eager: dict[str, Any], compiled: dict[str, Any], budget: float) -> tuple[bool, float]:
    """Whether the compiled step trains more steps in ``budget`` than the eager one, its compile time (measured:
    how much later its first logged step came) paid again in the campaign's own process; and that compile time."""
    overhead = max(0.0, compiled["first_logged_step_seconds"] - eager["first_logged_step_seconds"])
    return compiled["steps_per_second"] * (budget - overhead) > eager["steps_per_second"] * budget, overhead


def calibrate(args: argparse.Namespace, data: str, env: dict[str, str], extra: str, budget: float,
              say: Log) -> dict[str, Any]:
    """Time the preset's step here, eager and (``--compile_probe``) compiled, then size the campaign's schedule
    (epochs) to fill the training budget at the faster one's rate.

    The cosine schedule is defined by the epochs: sized too long, the budget cuts it before the learning rate has
    come down; too short, the GPU idles for the rest of the call. A failure here ends the call early (the same code
    path as the campaign: what breaks here would break there), leaving device time for a second call."""
    say(f"# calibration: {args.calibrate:g} s of the preset's step, to size the schedule")
    eager = time_preset(args, data, env, extra, args.calibrate, say)
    found: dict[str, Any] = {"eager": eager, "compile": False, "compile_seconds": None}
    rate, budget_left = eager["steps_per_second"], budget
    if args.compile_probe > 0:
        say(f"# calibration, compiled: {args.calibrate + args.compile_probe:g} s (torch.compile's own time inside)")
        compiled = time_preset(args, data, env, f"{extra} --compile true", args.calibrate + args.compile_probe, say)
        pays, overhead = compile_pays(eager, compiled, budget)
        found.update(compiled=compiled, compile=pays, compile_seconds=round(overhead, 1))
        if pays:
            rate, budget_left = compiled["steps_per_second"], budget - overhead
        say(f"# torch.compile: {compiled['steps_per_second']:.1f} vs {eager['steps_per_second']:.1f} steps/s eager, "
            f"{overhead:.0f} s to compile -> {'on' if pays else 'off'}")
    per_epoch = eager["steps_per_epoch"]
    epochs = epochs_for(rate, per_epoch, budget_left)
    found.update(steps_per_second=rate, steps_per_epoch=per_epoch, epochs=epochs, schedule_share=SCHEDULE_SHARE)
    say(f"# calibration: {rate:.1f} steps/s, {per_epoch:.0f} steps/epoch -> --epochs {epochs} "
        f"({epochs * per_epoch / rate:.0f} s of the {budget:g} s budget)")
    return found


def records_of(run: Path) -> list[dict[str, Any]]:
    """The campaign's chunk records kept in its run folder."""
    path = run / "campaign.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def out_paths(out: str | None) -> tuple[Path, Path]:
    """(folder, JSON): ``--out`` is a folder (the JSON is ``gpu_campaign.json`` in it) or the JSON's path."""
    out = out or os.environ.get("OUT") or tempfile.mkdtemp(prefix=f"{NAME}-")
    path = Path(out)
    return (path.parent, path) if path.suffix == ".json" else (path, path / f"{NAME}.json")


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


def device_env(args: argparse.Namespace, smoke: bool, say: Log) -> dict[str, str]:
    """The children's environment: offline, unbuffered, and the carried wheels installed and on the path when the
    image lacks what they provide."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if not smoke:  # datasets' parquet -> arrow cache on the device's scratch disk, whatever HOME is there
        env.setdefault("HF_DATASETS_CACHE", str(Path(tempfile.gettempdir()) / f"{NAME}-hf-datasets"))
    if any(importlib.util.find_spec(m) is None for m in ("datasets", "timm")):
        site = Path(args.site)
        install_wheels(Path(args.wheels), site, say)
        sys.path.insert(0, str(site))
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def time_pipeline(args: argparse.Namespace, data: str, env: dict[str, str], folder: Path, left: float, smoke: bool,
                  say: Log) -> dict[str, Any] | None:
    """benchmarks/pipeline.py on the preset: the recipe's step against the backbone's own forward + backward, on
    this device, when ``left`` wall seconds allow it; its JSON goes back beside the campaign's."""
    if left < PIPELINE_SECONDS:
        say(f"# pipeline timing skipped: {left:.0f} s left of the deadline (it needs {PIPELINE_SECONDS:g})")
        return None
    out = folder / "pipeline_gpu.json"
    preset = ROOT / "recipes" / "configs" / "zoo" / f"{args.entry}.yaml"
    views = str(read_yaml_key(preset, "num_views"))
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


def read_yaml_key(path: Path, key: str) -> Any:
    from mvssl_hub.train.config import read_yaml

    return read_yaml(path)[key]


def _train(args: argparse.Namespace, argv: list[str] | None, t0: float, folder: Path, json_path: Path,
           say: Log) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    smoke = args.smoke or not cuda
    if not cuda and not args.smoke:
        say("# no CUDA GPU visible -> dry run of the same code path on the CPU (tiny flags)")
    say(f"# {NAME}: entry {args.entry}; torch {torch.__version__}; GPU: {gpu or 'none'}; {os.cpu_count()} CPUs")
    learned = None if smoke else learn_gate(args.entry, say)
    env = device_env(args, smoke, say)
    found = preflight(env, say)
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
    extra = campaign_extra(smoke, args.knn_every, args.save_every, os.cpu_count() or 1)
    if args.records_only:  # a comparison run (e.g. the classic recipe): its curve is the result, not its weights
        extra += " --export false"
    calibration = None
    run = root / "campaign" / args.entry
    earlier = resumed_epochs(run)
    if earlier is not None:  # a second call on a warm machine: the run's schedule stays as it was started
        say(f"# resuming {run}: its schedule of {earlier} epochs stays")
        extra += f" --epochs {earlier}"
    elif args.calibrate > 0 and "error" not in found:
        calibration = calibrate(args, data, env, f"{extra} {args.extra}", budget, say)
        extra += f" --epochs {calibration['epochs']}" + " --compile true" * calibration["compile"]
    cmd = [sys.executable, str(ROOT / "recipes" / "campaign.py"), args.entry, "--data", data, "--data_name", DATA_NAME,
           "--root", str(root), "--results", str(results), "--quiet", "false", "--milestone_seconds", "1e7",
           "--chunk_seconds", f"{budget:g}", f"--extra={extra} {args.extra}".rstrip()]
    say(f"# {'smoke run: tiny flags, numbers mean nothing' if smoke else MONITOR_NOTE}")
    say(f"$ {shlex.join(cmd)}")
    log = run / "train.log"
    log_start = log.stat().st_size if log.is_file() else 0
    chunks_before = len(records_of(run))
    started = time.time()
    stopped = False
    code: int | None = None
    if "error" not in found:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
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
    steps, seconds = trained_so_far(run) if run.is_dir() else (0, 0.0)
    chunks = records_of(run)
    export = (run / "export" / "model.safetensors").is_file() and (run / "export" / "config.json").is_file()
    trained = json.loads((run / "export" / "config.json").read_text()).get("training") or {} if export else {}
    pipeline = time_pipeline(args, data, env, folder, args.deadline - (time.perf_counter() - t0), smoke, say)
    packed = pack_run(run, folder, int(args.part_mib * MIB)) if run.is_dir() else {"parts": []}
    if len(packed["parts"]) + 2 + (pipeline is not None) > RETURN_FILES:
        say(f"# WARNING: {len(packed['parts'])} parts + JSON + log exceed the {RETURN_FILES} files that come back")
    values = {"gpu": gpu, "cuda": cuda, "smoke": smoke, "entry": args.entry, "campaign_exit_code": code,
              "stopped_at_deadline": stopped, "steps": steps, "train_seconds": round(seconds, 1),
              "knn_top1_monitor": last_knn(run) if run.is_dir() else None,
              "knn_monitor": "smoke run: tiny flags" if smoke else MONITOR_NOTE,
              "budget_s": budget, "deadline_s": args.deadline, "campaign_seconds": round(time.time() - started, 1),
              "export": export, "records_only": args.records_only, "export_steps": trained.get("steps"),
              "export_train_seconds": trained.get("wall_clock_s"),
              "campaign_record": chunks[-1] if len(chunks) > chunks_before else None,
              "packages": found, "calibration": calibration, "learn_check": learned, "pipeline": pipeline, "campaign_command": shlex.join(cmd), **packed,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    result = write_result(json_path, NAME, values, None if argv is None else ["benchmarks/gpu_campaign.py", *argv],
                          quiet=True)
    say(f"# {NAME}: {steps} steps, {seconds:.0f} s of training, kNN (monitor) {values['knn_top1_monitor']}, "
        f"export {'packed' if export else 'MISSING'}, campaign exit {code}{' (stopped at the deadline)' * stopped}; "
        f"{len(packed['parts'])} part(s) of {packed.get('tar_bytes', 0) / MIB:.1f} MiB, sha256 "
        f"{packed.get('sha256')}; {values['wall_seconds']:.0f} s in all -> {folder}")
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)
    if (not export and not args.records_only) or code != 0:
        what = "did not start (the preflight failed)" if code is None else f"exited with {code}"
        raise SystemExit(f"{NAME}: the campaign {what}" + ("" if export or args.records_only else
                                                           "; no export was packed")
                         + f" (see {folder / (NAME + '.log')})")
    return result


# ------------------------------------------------------------------------------------------------------ race

def race(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The three-arm recipe race (benchmarks/studies/fair_race.py) on this device; its JSON, PNG, each arm's
    metrics log and this call's log come back in ``--out``."""
    import torch

    t0 = time.perf_counter()
    folder = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="fair-race-"))
    folder.mkdir(parents=True, exist_ok=True)
    say = Log(folder / "fair_race.log")
    try:
        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else None
        smoke = args.smoke or not cuda
        say(f"# fair_race on {gpu or 'the CPU (smoke: tiny flags, numbers mean nothing)'}; torch {torch.__version__}")
        env = device_env(args, smoke, say)
        preflight(env, say)
        runs = Path(tempfile.mkdtemp(prefix="fair-race-runs-"))
        data = args.data or str(GPU_DATA.relative_to(ROOT))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "studies" / "fair_race.py"), "run", str(runs),
               "--out", str(folder / "fair_race.json"), "--budget", f"{args.budget:g}", "--knn_every",
               f"{args.knn_every:g}", "--workers", str(min(16, os.cpu_count() or 1)),
               "--deadline", f"{args.deadline - (time.perf_counter() - t0) - 20:g}",
               *(["--smoke"] if smoke else ["--data", data, "--gpu", gpu])]
        say(f"$ {shlex.join(cmd)}")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = follow(proc, say)
        code = proc.wait()
        reader.join(5)
        for arm in runs.iterdir():  # each arm's curve, whatever the analysis made of it
            if (arm / "logs" / "metrics.jsonl").is_file():
                shutil.copy2(arm / "logs" / "metrics.jsonl", folder / f"fair_race_{arm.name}.jsonl")
        say(f"# fair_race: exit {code} after {time.perf_counter() - t0:.0f} s -> {folder}")
        if code != 0:
            raise SystemExit(f"{NAME} race: fair_race.py exited with {code} (see {folder / 'fair_race.log'})")
        return json.loads((folder / "fair_race.json").read_text())
    finally:
        say.close()


# ---------------------------------------------------------------------------------------------------- unpack

def verify(folder: Path, info: dict[str, Any]) -> list[Path]:
    """Every listed part present, of its size and sha256, and their concatenation the stream's sha256."""
    whole = hashlib.sha256()
    paths = []
    for part in info["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            raise SystemExit(f"unpack: part {path} is missing (listed in {NAME}.json); nothing was unpacked")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(MIB):
                h.update(chunk)
                whole.update(chunk)
        if path.stat().st_size != part["bytes"] or h.hexdigest() != part["sha256"]:
            raise SystemExit(f"unpack: part {path} is corrupted or truncated ({path.stat().st_size} bytes, sha256 "
                             f"{h.hexdigest()}; expected {part['bytes']} bytes, {part['sha256']}); nothing was "
                             "unpacked")
        paths.append(path)
    if not paths or whole.hexdigest() != info["sha256"]:
        raise SystemExit(f"unpack: the parts in {folder} do not make the stream {NAME}.json names (sha256 "
                         f"{whole.hexdigest()} != {info['sha256']}); nothing was unpacked")
    return paths


def extract(parts: list[Path], target: Path) -> None:
    """Extract the stream into ``target``: regular files and folders under the packed names only."""
    stream = target / f"{NAME}.tar"
    with open(stream, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, MIB)
    with tarfile.open(stream) as tar:
        for member in tar.getmembers():
            name = member.name
            if (not (member.isfile() or member.isdir()) or name.startswith("/") or ".." in name.split("/")
                    or not any(name == p or name.startswith(p + "/") for p in PACKED)):
                raise SystemExit(f"unpack: unexpected member {name!r} in the stream; nothing was unpacked")
        kw: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target, **kw)
    stream.unlink()


def unpack(args: argparse.Namespace) -> dict[str, Any]:
    """Check the parts, extract the run into the long-runs home and copy its records into benchmarks/results."""
    from mvssl_hub.safe_io import read_json_file, read_safetensors_header

    folder = Path(args.parts_dir)
    meta = folder / f"{NAME}.json"
    if not meta.is_file():
        raise SystemExit(f"unpack: {meta} not found (the folder `run` returned: its files_at)")
    info = json.loads(meta.read_text())
    records_only = bool(info.get("records_only"))
    if not info.get("export") and not records_only:
        raise SystemExit(f"unpack: {meta}: the run packed no export (campaign exit code "
                         f"{info.get('campaign_exit_code')}); see {folder / (NAME + '.log')}")
    if info.get("smoke") and not (args.runs_root and args.results):  # a smoke export is no zoo entry
        raise SystemExit(f"unpack: {meta} is a smoke run's: pass --runs_root and --results (never the real ones)")
    parts = verify(folder, info)
    entry = info["entry"]
    home = (Path(args.runs_root) if args.runs_root else long_runs_home()) / "campaign-gpu"
    dest = home / entry
    records = Path(args.results or RESULTS / "campaign") / f"{entry}_gpu"
    earlier = [p for p in (dest, records / "campaign.jsonl") if p.exists()]
    if earlier and not args.replace:
        raise SystemExit(f"unpack: {' and '.join(map(str, earlier))} exist (an earlier GPU run); pass --replace to "
                         f"keep its run as {dest.name}.previous-N and its records in lost-N/ and put this one in "
                         "their place")
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry}.unpack-", dir=home))
    try:
        extract(parts, tmp)
        if not records_only:
            for name in ("model.safetensors", "config.json"):
                if not (tmp / "export" / name).is_file():
                    raise SystemExit(f"unpack: the stream has no export/{name}; nothing was unpacked")
            read_safetensors_header(tmp / "export" / "model.safetensors")  # CheckpointError unless sound
            read_json_file(tmp / "export" / "config.json")
        shutil.copy2(meta, tmp / meta.name)
        if dest.exists():
            n = 1 + max((int(p.name.rsplit("-", 1)[1]) for p in home.glob(f"{entry}.previous-*")
                         if p.name.rsplit("-", 1)[1].isdigit()), default=0)
            dest.rename(home / f"{entry}.previous-{n}")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    records.mkdir(parents=True, exist_ok=True)
    if args.replace:
        keep_lost_attempt(records)
    copy_records(dest, records)
    shutil.copy2(dest / meta.name, records / meta.name)
    evaluate = (f"python recipes/evaluate.py {dest} --data {SHARED_DATA} --data_name {DATA_NAME} --protocol both "
                "--record")
    print(f"# {entry}: {info.get('steps')} steps, {info.get('train_seconds')} s of training on {info.get('gpu')}; "
          f"run -> {dest}; records -> {records}\n# next, the full evaluation: {evaluate}")
    return {"run": dest, "records": records, "evaluate": evaluate, "info": info}


# ------------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("pack", help="here, before the device call: data + wheels to carry; prints the call")
    p.add_argument("--source", default=str(SHARED_DATA), help="the full CIFAR-10 parquet folder")
    p.add_argument("--data_dir", default=str(GPU_DATA), help="what travels: train.parquet + the first test rows")
    p.add_argument("--test_rows", type=int, default=MONITOR_ROWS, help="test rows that travel (kNN monitor queries)")
    p.add_argument("--wheels", default=str(WHEELS), help="folder of the wheels that travel")
    p.add_argument("--no_wheels", action="store_true", help="skip the wheel download (offline tests)")
    p.add_argument("--budget", type=float, default=BUDGET, help="training seconds the printed command asks for")
    t = sub.add_parser("train", help="on the device: one campaign chunk, then the export packed into --out")
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
    t.add_argument("--save_every", type=float, default=120.0, help="training seconds between run states")
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
    r = sub.add_parser("race", help="on the device: the three-arm recipe race (benchmarks/studies/fair_race.py)")
    r.add_argument("--data", default=None, help=f"default: {GPU_DATA.relative_to(ROOT)}")
    r.add_argument("--budget", type=float, default=RACE_BUDGET, help="training seconds of each arm (wall clock)")
    r.add_argument("--knn_every", type=float, default=10.0, help="training seconds between kNN evaluations")
    r.add_argument("--deadline", type=float, default=RACE_DEADLINE, help="wall seconds of this command after which "
                                                                         "a running arm is stopped")
    r.add_argument("--wheels", default=str(WHEELS), help="wheels to install when `datasets` or `timm` is missing")
    r.add_argument("--site", default=DEVICE_SITE, help="where they are installed (put on the children's PYTHONPATH)")
    r.add_argument("--smoke", action="store_true", help="CPU, seconds: tiny flags on the embedded cut")
    r.add_argument("--out", default=None, help="folder for the results and log (default: $OUT, else a temporary one)")
    u = sub.add_parser("unpack", help="here, after the call: check the parts, extract, copy the records")
    u.add_argument("parts_dir", help="the folder holding the returned files (the run tool's files_at)")
    u.add_argument("--runs_root", default=None, help="default: $MVSSL_HUB_CACHE or ~/.cache/mvssl-hub; the run "
                                                     "goes to <runs_root>/campaign-gpu/ENTRY")
    u.add_argument("--results", default=None, help="the records go to <results>/ENTRY_gpu/ (default: "
                                                   "benchmarks/results/campaign)")
    u.add_argument("--replace", action="store_true", help="keep an earlier GPU run as ENTRY.previous-N and its "
                                                          "records in lost-N/, and put this one in its place")
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
