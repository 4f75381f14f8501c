"""Here, after a ``train`` call: every returned part checked, the run extracted into the long-runs home (outside the
work tree) and its records copied into ``benchmarks/records/campaign/ENTRY_gpu/``."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tools.campaign import copy_records, keep_lost_attempt, long_runs_home

from .parts import extract, verify
from .settings import CAMPAIGN_RECORDS, DATA_NAME, NAME, SHARED_DATA


def returned_info(folder: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """(``gpu_campaign.json``'s path, its content) of the returned files; SystemExit when they hold no export (and
    are no records-only run's) or are a smoke run's without both target folders given."""
    meta = folder / f"{NAME}.json"
    if not meta.is_file():
        raise SystemExit(f"unpack: {meta} not found (the folder `run` returned: its files_at)")
    info = json.loads(meta.read_text())
    if not info.get("export") and not info.get("records_only"):
        raise SystemExit(f"unpack: {meta}: the run packed no export (campaign exit code "
                         f"{info.get('campaign_exit_code')}); see {folder / (NAME + '.log')}")
    if info.get("smoke") and not (args.runs_root and args.results):  # a smoke export is no zoo entry
        raise SystemExit(f"unpack: {meta} is a smoke run's: pass --runs_root and --results (never the real ones)")
    return meta, info


def check_export(run: Path) -> None:
    """The extracted export's weights header and config.json read soundly (CheckpointError otherwise)."""
    from mvssl_hub.safe_io import read_json_file, read_safetensors_header

    for name in ("model.safetensors", "config.json"):
        if not (run / "export" / name).is_file():
            raise SystemExit(f"unpack: the stream has no export/{name}; nothing was unpacked")
    read_safetensors_header(run / "export" / "model.safetensors")  # CheckpointError unless sound
    read_json_file(run / "export" / "config.json")


def put_in_place(parts: list[Path], meta: Path, home: Path, entry: str, records_only: bool) -> Path:
    """Extract beside the run's place, check it, move an earlier run aside (``ENTRY.previous-N``) and put this one
    there; a failure leaves nothing behind."""
    dest = home / entry
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry}.unpack-", dir=home))
    try:
        extract(parts, tmp)
        if not records_only:
            check_export(tmp)
        shutil.copy2(meta, tmp / meta.name)
        if dest.exists():
            n = 1 + max((int(p.name.rsplit("-", 1)[1]) for p in home.glob(f"{entry}.previous-*")
                         if p.name.rsplit("-", 1)[1].isdigit()), default=0)
            dest.rename(home / f"{entry}.previous-{n}")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def unpack(args: argparse.Namespace) -> dict[str, Any]:
    """Check the parts, extract the run into the long-runs home and copy its records into benchmarks/records."""
    folder = Path(args.parts_dir)
    meta, info = returned_info(folder, args)
    parts = verify(folder, info)
    entry = info["entry"]
    home = (Path(args.runs_root) if args.runs_root else long_runs_home()) / "campaign-gpu"
    dest = home / entry
    records = Path(args.results or CAMPAIGN_RECORDS) / f"{entry}_gpu"
    earlier = [p for p in (dest, records / "campaign.jsonl") if p.exists()]
    if earlier and not args.replace:
        raise SystemExit(f"unpack: {' and '.join(map(str, earlier))} exist (an earlier GPU run); pass --replace to "
                         f"keep its run as {dest.name}.previous-N and its records in lost-N/ and put this one in "
                         "their place")
    dest = put_in_place(parts, meta, home, entry, bool(info.get("records_only")))
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
