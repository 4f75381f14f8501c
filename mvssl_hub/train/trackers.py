"""Metric trackers for ``accelerate``: :class:`JSONLTracker` writes one JSON object per ``log`` call.

``accelerate`` is imported when the first tracker is made, not at import.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["JSONLTracker", "drop_logged_after"]


def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _tracker_base() -> type:
    from accelerate.tracking import GeneralTracker

    return GeneralTracker


class JSONLTracker:
    """Factory for an ``accelerate`` tracker writing ``<logging_dir>/<run_name>.jsonl``: one object per ``log``.

    ``JSONLTracker(run_name, logging_dir)`` returns an instance of a ``GeneralTracker`` subclass (built on
    first use so that importing this module does not import accelerate). Lines: {"step", "time", **values};
    the first line is {"config": ...} when ``store_init_configuration`` is called.
    """

    _cls: type | None = None

    def __new__(cls, run_name: str, logging_dir: str | os.PathLike[str]) -> Any:
        if cls._cls is None:
            base = _tracker_base()

            class _JSONL(base):  # type: ignore[misc, valid-type]
                name = "jsonl"
                requires_logging_directory = True

                def __init__(self, run_name: str, logging_dir: str | os.PathLike[str]) -> None:
                    super().__init__()
                    self.run_name = run_name
                    self.path = Path(logging_dir) / f"{run_name}.jsonl"

                def start(self) -> None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)

                @property
                def tracker(self) -> Path:
                    return self.path

                def _append(self, obj: dict[str, Any]) -> None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.path, "a") as f:
                        f.write(json.dumps(obj) + "\n")

                def store_init_configuration(self, values: dict) -> None:
                    self._append({"config": {k: _json_value(v) for k, v in values.items()}})

                def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
                    self._append({"step": step, "time": time.time(), **{k: _json_value(v) for k, v in values.items()}})

            cls._cls = _JSONL
        return cls._cls(run_name, logging_dir)


def drop_logged_after(path: Path, step: int) -> int:
    """Remove the records of steps after ``step`` from a JSONL log (a resumed run logs them again); returns how
    many were removed. The config line and unparsable lines are kept."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped
