"""The run state of a training run (``step-00000123/`` folders): atomic save, exact resume, the newest K kept.

Not a checkpoint (the published folder, :mod:`mvssl_hub.hub.format`, a run's ``export/``): a run state holds
optimizer, scheduler and RNG state as ``accelerate`` writes them, with the run's config (``run_config.json``), and
is only ever read back by the run that wrote it. A run folder keeps them in ``run_states/``
(:func:`run_states_dir`); one written before that name had them in ``checkpoints/``, which the next run of it
renames (:func:`adopt_old_layout`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..safe_io import fsync_dir, sha256_file

if TYPE_CHECKING:
    import torch

__all__ = ["MARKER_FILE", "RUN_CONFIG_FILE", "RUN_STATES_DIR", "STATE_FILE", "RunStateManager", "adopt_old_layout",
           "load_run_state_model", "read_run_config", "run_states_dir"]

RUN_STATES_DIR = "run_states"  # <run folder>/run_states/step-*: where a recipe keeps its run states
_OLD_RUN_STATES_DIR = "checkpoints"  # their folder's name in run folders written before mvssl-hub 0.2.0
MARKER_FILE = "COMPLETE.json"
STATE_FILE = "training_state.json"
RUN_CONFIG_FILE = "run_config.json"  # the recipe's config the run was started with
_OLD_RUN_CONFIG_FILE = "config.json"  # its name in run states written before it had one of its own (read only)
_STEP_PREFIX = "step-"
_TMP_PREFIX = ".tmp-step-"
_OLD_PREFIX = ".old-step-"
_PRUNED_PREFIX = ".pruned-step-"  # an old run state on its way out: renamed first, then deleted
_DAMAGED_DIR = "damaged"
logger = logging.getLogger(__name__)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())


def run_states_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The folder of a run folder's run states: ``<run>/run_states``, or ``<run>/checkpoints`` in a run folder
    written before that name that no run has opened since (:func:`adopt_old_layout`). For tools that read run
    folders; nothing is created or moved."""
    run_dir = Path(run_dir)
    new, old = run_dir / RUN_STATES_DIR, run_dir / _OLD_RUN_STATES_DIR
    return old if old.is_dir() and not new.exists() else new


def adopt_old_layout(run_dir: str | os.PathLike[str]) -> Path | None:
    """Rename a run folder's ``checkpoints/`` (its run states, as laid out before mvssl-hub 0.2.0) to
    ``run_states/``, one atomic rename, when there is no ``run_states/`` yet; returns the old folder when it did,
    else None. Main process only: a recipe calls it before it opens its run states."""
    run_dir = Path(run_dir)
    old, new = run_dir / _OLD_RUN_STATES_DIR, run_dir / RUN_STATES_DIR
    if not old.is_dir() or new.exists():
        return None
    os.rename(old, new)
    fsync_dir(run_dir)
    return old


def read_run_config(folder: Path) -> dict[str, Any]:
    """The config a run state was saved with: ``run_config.json``, or ``config.json`` in an older run state."""
    path = folder / RUN_CONFIG_FILE
    if not path.is_file() and (folder / _OLD_RUN_CONFIG_FILE).is_file():
        path = folder / _OLD_RUN_CONFIG_FILE
    return json.loads(path.read_text())


def load_run_state_model(folder: str | os.PathLike[str], build: Callable[[dict[str, Any]], torch.nn.Module]
                         ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a training run state, and its training state: the one way to read a ``step-*`` folder's
    weights outside a resumed run (no accelerator, no optimiser).

    ``folder`` is a ``step-*`` folder, or a run folder / its ``run_states/`` (then the newest complete run
    state; :func:`run_states_dir`). ``build(run_config)`` makes the untrained model the run's config describes (the recipe's
    ``model_from_config``); the weights load strictly, wrapper prefixes (DDP, torch.compile) removed.
    """
    from safetensors.torch import load_file

    from ..safe_io import strip_prefixes

    folder = Path(folder)
    if RunStateManager._step_of(folder) is None:
        root = folder if folder.name in (RUN_STATES_DIR, _OLD_RUN_STATES_DIR) else run_states_dir(folder)
        latest = RunStateManager(root).latest()
        if latest is None:
            raise FileNotFoundError(f"{folder}: no complete run state (step-* folder) in {root}")
        folder = latest
    model = build(read_run_config(folder))
    model.load_state_dict(strip_prefixes(load_file(str(folder / "model.safetensors"))), strict=True)
    return model, json.loads((folder / STATE_FILE).read_text())


class RunStateManager:
    """The run states under ``root``: ``step-00000123/`` folders, the newest ``keep`` of them kept.

    A run state is ``Accelerator.save_state`` output (model as safetensors; optimizer, scheduler and RNG
    states as accelerate writes them) plus ``training_state.json`` and ``run_config.json`` of ours, and the
    marker ``COMPLETE.json`` = {step, files: {relative path: sha256}} written last. Everything is written
    into ``.tmp-step-*`` and renamed only when complete; re-saving a step moves the old folder to
    ``.old-step-*`` first, so a complete run state is on disk at every moment. A run state pruned (beyond the
    newest ``keep``) is renamed to ``.pruned-step-*`` before it is deleted, so a kill midway never leaves an
    incomplete ``step-*`` folder; the next :meth:`save` or :meth:`recover` removes what is left of it.

    Nothing complete is ever deleted on resume: :meth:`recover` promotes a complete temporary folder, moves a
    damaged one into ``damaged/`` with a warning naming the file and the reason, and removes only partial
    temporaries.

    Why not accelerate's own rotation (``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)``):
    ``Accelerator.save_state`` deletes the oldest folders *before* it writes the new one, and writes in place, so
    a kill during the save can leave no complete state at all (``tests/recipes/test_pretrain.py::
    test_crash_mid_save_keeps_the_previous_run_state`` kills a save midway and resumes from the previous state).
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"RunStateManager: keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    @staticmethod
    def _step_of(path: Path, prefix: str = _STEP_PREFIX) -> int | None:
        name = path.name
        if not name.startswith(prefix) or not name[len(prefix):].isdigit():
            return None
        return int(name[len(prefix):])

    def problem(self, folder: Path) -> str | None:
        """Why ``folder`` is not a usable run state (naming the file at fault), or None when it is: the marker
        lists every file with its sha256, and ``training_state.json`` holds a step that is a non-negative int,
        equal to the marker's. (Whether that step fits the run's schedule is :meth:`start_or_resume`'s question.)"""
        marker = folder / MARKER_FILE
        if not marker.is_file():
            return f"{marker.name} missing (the save never finished)"
        try:
            info = json.loads(marker.read_text())
            files, step = info["files"], info["step"]
            if not isinstance(files, dict) or not files:
                return f"{marker.name}: no file list"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{marker.name} unreadable ({type(e).__name__}: {e})"
        for rel, digest in files.items():
            path = folder / rel
            if not path.is_file():
                return f"{rel} missing"
            if sha256_file(path) != digest:
                return f"{rel}: sha256 differs from {marker.name} (the file changed after it was saved)"
        try:
            state = json.loads((folder / STATE_FILE).read_text())
            done = state["global_step"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{STATE_FILE} unreadable ({type(e).__name__}: {e})"
        if not isinstance(done, int) or isinstance(done, bool) or done < 0 or done != step:
            return f"{STATE_FILE}: global_step = {done!r} is not the step {step!r} of {marker.name}"
        return None

    def is_complete(self, folder: Path) -> bool:
        """True when :meth:`problem` finds nothing wrong."""
        return self.problem(folder) is None

    def complete_states(self) -> list[Path]:
        """Complete run state folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(self._step_of(p), p) for p in self.root.iterdir() if p.is_dir()]
        return [p for step, p in sorted((s, p) for s, p in found if s is not None) if self.is_complete(p)]

    def latest(self) -> Path | None:
        """The newest complete run state, or None."""
        done = self.complete_states()
        return done[-1] if done else None

    def _set_aside(self, folder: Path, reason: str) -> Path:
        """Move a damaged folder into ``root/damaged/`` (kept for inspection, never deleted); warn."""
        aside = self.root / _DAMAGED_DIR / f"{folder.name.lstrip('.')}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        aside.parent.mkdir(exist_ok=True)
        os.rename(folder, aside)
        logger.warning("run state %s is damaged (%s): moved aside to %s", folder, reason, aside)
        return aside

    def recover(self) -> list[str]:
        """Put the run state folders in order before a resume (main process only); returns what it did.

        - a complete ``.tmp-step-N`` (a crash after its marker) becomes ``step-N`` unless that is complete;
        - a complete ``.old-step-N`` (a crash while re-saving step N) goes back to ``step-N`` if that is gone;
        - partial temporaries and the rest of an interrupted prune (``.pruned-step-*``) are removed (nothing to
          lose); so is an incomplete ``step-N`` older than the newest ``keep`` complete ones (a prune interrupted
          before prunes renamed first: the prune would have removed it anyway);
        - other ``step-N`` folders that fail :meth:`problem` are moved aside into ``damaged/``, with a warning.
        """
        done: list[str] = []
        if not self.root.is_dir():
            return done
        for prefix in (_TMP_PREFIX, _OLD_PREFIX):
            for p in sorted(self.root.iterdir()):
                step = self._step_of(p, prefix)
                if step is None or not p.is_dir():
                    continue
                final = self.root / f"{_STEP_PREFIX}{step:08d}"
                if self.is_complete(p) and not (final.is_dir() and self.is_complete(final)):
                    if final.exists():
                        self._set_aside(final, self.problem(final) or "incomplete")
                    os.rename(p, final)
                    done.append(f"recovered {final.name} from {p.name}")
                    logger.warning("run state %s recovered from %s (a save was interrupted)", final, p.name)
                else:
                    shutil.rmtree(p, ignore_errors=True)
                    done.append(f"removed {p.name}")
        done += self._remove_pruned()
        steps = sorted((s, p) for p in self.root.iterdir() if p.is_dir() and (s := self._step_of(p)) is not None)
        problems = {p: self.problem(p) for _, p in steps}
        complete = [s for s, p in steps if problems[p] is None]
        kept_from = complete[-self.keep] if len(complete) >= self.keep else -1
        for step, p in steps:
            reason = problems[p]
            if reason is not None and step < kept_from:
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed {p.name}: {reason}, older than the {self.keep} newest (a prune was interrupted)")
                logger.info("run state %s removed: incomplete and older than the %d newest (an interrupted prune)",
                            p, self.keep)
            elif reason is not None:
                done.append(f"{p.name}: {reason} -> {self._set_aside(p, reason)}")
        fsync_dir(self.root)
        return done

    def _prune(self, folder: Path) -> None:
        """Delete the run state ``folder``: renamed out of the ``step-*`` names first (see :meth:`recover`)."""
        doomed = self.root / f"{_PRUNED_PREFIX}{folder.name[len(_STEP_PREFIX):]}"
        if doomed.exists():
            shutil.rmtree(doomed)
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _remove_pruned(self) -> list[str]:
        """Remove what interrupted prunes left (``.pruned-step-*``); returns what it did."""
        left = [p for p in sorted(self.root.iterdir()) if p.name.startswith(_PRUNED_PREFIX)]
        for p in left:
            shutil.rmtree(p, ignore_errors=True)
        return [f"removed {p.name} (a prune was interrupted)" for p in left]

    def damaged(self) -> list[Path]:
        """Folders moved aside by :meth:`recover`, oldest name first."""
        folder = self.root / _DAMAGED_DIR
        return sorted(folder.iterdir()) if folder.is_dir() else []

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
            _write_json(tmp / RUN_CONFIG_FILE, dict(config))
            files = {
                str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            _write_json(tmp / MARKER_FILE, {"step": step, "files": files})
            fsync_dir(tmp)
            old = self.root / f"{_OLD_PREFIX}{step:08d}"
            if final.exists():  # re-saving a step: the old folder stays complete until the new one is in place
                if old.exists():
                    shutil.rmtree(old)
                os.rename(final, old)
            os.rename(tmp, final)
            fsync_dir(self.root)
            shutil.rmtree(old, ignore_errors=True)
            # Prune by marker and step, without re-hashing every kept run state on every save: the one just
            # written was hashed above, and latest() verifies hashes when a run resumes.
            marked = sorted((s, p) for p in self.root.iterdir()
                            if (s := self._step_of(p)) is not None and (p / MARKER_FILE).is_file())
            for _, old in marked[: -self.keep]:
                self._prune(old)
            self._remove_pruned()
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator: Any, folder: Path) -> dict[str, Any]:
        """Restore model / optimizer / scheduler / RNG from ``folder``; return its training state dict.

        accelerate reads its pickled states through ``torch.load(weights_only=True)`` (its default since
        torch 2.4); only load run states this recipe wrote — never a run state from the Hub.
        """
        accelerator.load_state(str(folder))
        return json.loads((folder / STATE_FILE).read_text())

    def start_or_resume(self, accelerator: Any, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                        resumable: set[str], log_dir: Path, defaults: Mapping[str, Any] | None = None,
                        max_step: int | None = None) -> tuple[dict[str, Any], Path | None]:
        """Begin a run: resume from the newest complete run state, or start clean.

        resume: :meth:`recover` first (nothing complete is deleted; damaged folders are moved aside with a
        warning), then restore the newest complete run state; every config key outside ``resumable`` must
        equal the saved one, and its step must be at most ``max_step`` (else ConfigError, nothing moved). When
        run states existed but none is usable, ConfigError lists them: starting over must be asked for
        (``--overwrite`` without ``--resume``). Without resume, existing
        run states are refused unless ``overwrite``, which deletes them and ``log_dir``. ``defaults`` (key ->
        default value) lets a run saved before a key existed resume while that key keeps its default.
        Returns (saved training state or {}, folder or None).
        """
        defaults = defaults or {}
        if resume:
            if accelerator.is_main_process:
                self.recover()
            accelerator.wait_for_everyone()
            latest = self.latest()
            if latest is None:
                if self.damaged():
                    raise ConfigError(f"--resume: no usable run state in {self.root}; damaged, moved aside: "
                                      f"{[p.name for p in self.damaged()]}. Inspect them, or start over with "
                                      "--overwrite (without --resume)")
                return {}, None
            logger.info("resuming from %s, the newest complete run state", latest)
            saved = read_run_config(latest)
            # a key the run state predates (a newer recipe) counts as unchanged when it keeps its default
            changed = {k: (saved.get(k), v) for k, v in config.items() if k not in resumable
                       and (saved[k] != v if k in saved else k not in defaults or defaults[k] != v)}
            if changed:
                raise ConfigError(f"--resume from {latest}: these keys differ from the run state's config "
                                  f"(saved, now): {changed}")
            step = json.loads((latest / STATE_FILE).read_text())["global_step"]
            if max_step is not None and step > max_step:  # nothing is moved: resume with the settings it had
                raise ConfigError(f"--resume from {latest}: it is at step {step}, past this run's {max_step} "
                                  "steps; resume with the settings it was saved with")
            return self.load(accelerator, latest), latest
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise ConfigError(f"{self.root} already holds run states; pass --resume to continue, --overwrite "
                                  "to start again, or choose another --output_dir")
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                shutil.rmtree(self.root)
                shutil.rmtree(log_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
        return {}, None
