"""Here, before a call: the data and wheels that travel, the size of what travels, and the device commands."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from .settings import (
    BUDGET,
    DEVICE_HAS,
    MIB,
    RACE_BUDGET,
    RACE_TIMEOUT_S,
    SCRIPT,
    TIMEOUT_S,
    TRAVEL_LIMIT,
    WHEEL_PINS,
)
from harness import ROOT


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
    return f'python3 {SCRIPT} {action} --out "$OUT"{budget_flag}'


def carry_list(carry_paths: list[Path]) -> list[str]:
    """The carried paths relative to the checkout (what a call names); a path outside it is named and left out."""
    carry = []
    for path in carry_paths:
        try:
            carry.append(path.resolve().relative_to(ROOT).as_posix())
        except ValueError:
            print(f"# WARNING: {path} is outside the checkout {ROOT}: it cannot be carried")
    return carry


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
    carry = carry_list(carry_paths)
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
