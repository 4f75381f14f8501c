"""There, on the device: the call's log, the carried wheels installed, the children's environment and processes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from .settings import NAME
from harness import ROOT


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


def out_paths(out: str | None) -> tuple[Path, Path]:
    """(folder, JSON): ``--out`` is a folder (the JSON is ``gpu_campaign.json`` in it) or the JSON's path."""
    out = out or os.environ.get("OUT") or tempfile.mkdtemp(prefix=f"{NAME}-")
    path = Path(out)
    return (path.parent, path) if path.suffix == ".json" else (path, path / f"{NAME}.json")


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
