"""Training checkpoints of a run (``step-00000123/`` folders): atomic save, exact resume, the newest K kept.

Not to be confused with the published checkpoint format (:mod:`mvssl_hub.checkpoint`): these hold optimizer,
scheduler and RNG state as ``accelerate`` writes them, and are only ever read back by the run that wrote them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .safe_io import fsync_dir, sha256_file

__all__ = ["CheckpointManager", "MARKER_FILE", "STATE_FILE"]

MARKER_FILE = "COMPLETE.json"
STATE_FILE = "training_state.json"
CONFIG_FILE = "config.json"
_STEP_PREFIX = "step-"
_TMP_PREFIX = ".tmp-step-"


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())




class CheckpointManager:
    """Training checkpoints under ``root``: ``step-00000123/`` folders, the newest ``keep`` of them kept.

    A checkpoint is ``Accelerator.save_state`` output (model as safetensors; optimizer, scheduler and RNG
    states as accelerate writes them) plus ``training_state.json`` and ``config.json`` of ours, and the
    marker ``COMPLETE.json`` = {step, files: {relative path: sha256}} written last. Everything is written
    into ``.tmp-step-*`` and renamed only when complete, so a crash mid-save leaves the previous
    checkpoint in use; :meth:`latest` ignores (and the main process deletes) incomplete folders.
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"CheckpointManager: keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    @staticmethod
    def _step_of(path: Path) -> int | None:
        name = path.name
        if not name.startswith(_STEP_PREFIX):
            return None
        try:
            return int(name[len(_STEP_PREFIX):])
        except ValueError:
            return None

    def is_complete(self, folder: Path) -> bool:
        """True when the marker exists and every listed file has its recorded sha256."""
        marker = folder / MARKER_FILE
        if not marker.is_file():
            return False
        try:
            info = json.loads(marker.read_text())
            files = info["files"]
            return bool(files) and all(
                (folder / rel).is_file() and sha256_file(folder / rel) == digest for rel, digest in files.items()
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(self._step_of(p), p) for p in self.root.iterdir() if p.is_dir()]
        return [p for step, p in sorted((s, p) for s, p in found if s is not None) if self.is_complete(p)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = self.complete_checkpoints()
        return done[-1] if done else None

    def clean_incomplete(self) -> list[Path]:
        """Delete temporary and marker-less/corrupt step folders (main process only). Returns what was removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith(_TMP_PREFIX) or (self._step_of(p) is not None and not self.is_complete(p))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed

    def save(self, accelerator: Any, step: int, state: Mapping[str, Any], config: Mapping[str, Any]) -> Path:
        """Save the accelerator's registered objects + ``state`` + ``config`` as ``step-{step}``; all processes call."""
        final = self.root / f"{_STEP_PREFIX}{step:08d}"
        tmp = self.root / f"{_TMP_PREFIX}{step:08d}"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / STATE_FILE, dict(state))
            _write_json(tmp / CONFIG_FILE, dict(config))
            files = {
                str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            _write_json(tmp / MARKER_FILE, {"step": step, "files": files})
            fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(self.root)
            # Prune by marker and step, without re-hashing every kept checkpoint on every save: the one just
            # written was hashed above, and latest() verifies hashes when a run resumes.
            marked = sorted((s, p) for p in self.root.iterdir()
                            if (s := self._step_of(p)) is not None and (p / MARKER_FILE).is_file())
            for _, old in marked[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator: Any, folder: Path) -> dict[str, Any]:
        """Restore model / optimizer / scheduler / RNG from ``folder``; return its training state dict.

        accelerate reads its pickled states through ``torch.load(weights_only=True)`` (its default since
        torch 2.4); only load checkpoints this recipe wrote — never a training checkpoint from the Hub.
        """
        accelerator.load_state(str(folder))
        return json.loads((folder / STATE_FILE).read_text())

    def start_or_resume(self, accelerator: Any, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                        resumable: set[str], log_dir: Path, defaults: Mapping[str, Any] | None = None,
                        ) -> tuple[dict[str, Any], Path | None]:
        """Begin a run: resume from the newest complete checkpoint, or start clean.

        resume: restore the newest complete checkpoint (incomplete ones are deleted first); every config key
        outside ``resumable`` must equal the saved one. Without resume, existing checkpoints are refused
        unless ``overwrite``, which deletes them and ``log_dir``. ``defaults`` (key -> default value) lets a run
        saved before a key existed resume while that key keeps its default. Returns (saved training state or {},
        folder or None).
        """
        defaults = defaults or {}
        if resume:
            if accelerator.is_main_process:
                self.clean_incomplete()
            accelerator.wait_for_everyone()
            latest = self.latest()
            if latest is None:
                return {}, None
            saved = json.loads((latest / "config.json").read_text())
            # a key the checkpoint predates (a newer recipe) counts as unchanged when it keeps its default
            changed = {k: (saved.get(k), v) for k, v in config.items() if k not in resumable
                       and (saved[k] != v if k in saved else k not in defaults or defaults[k] != v)}
            if changed:
                raise ConfigError(f"--resume from {latest}: these keys differ from the checkpoint's config "
                                  f"(saved, now): {changed}")
            return self.load(accelerator, latest), latest
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise ConfigError(f"{self.root} already holds checkpoints; pass --resume to continue, --overwrite "
                                  "to start again, or choose another --output_dir")
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                shutil.rmtree(self.root)
                shutil.rmtree(log_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
        return {}, None
