"""The start of a training run: the two calls ``pretrain`` and ``finetune`` make before their first step.

:func:`start_run` comes first and returns the :class:`Run` (the log, threads, the accelerator and its trackers,
backend flags, the global batch split over the processes, the output folder seen by every machine);
:func:`open_run_state` comes once the model, optimiser and scheduler are prepared, since restoring a run state
loads into them: a run folder of the old layout adopted (``checkpoints/`` -> ``run_states/``), the run states'
manager, ``start_or_resume``, the metrics log trimmed to the resumed step, an interrupted export tidied, the
trackers initialised with the run's config, and the collectives' limit tightened from the start-up's to
``dist_timeout_minutes`` (:mod:`.collectives`).
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .backends import configure_backends, make_accelerator
from .collectives import tighten
from .run_state import RUN_STATES_DIR, RunStateManager, adopt_old_layout
from .trackers import JSONLTracker, drop_logged_after

__all__ = ["Run", "check_shared_folder", "open_run_state", "start_run"]


@dataclass
class Run:
    """What every process knows about its run: the accelerator, the precision it trains in, the recipe's log,
    and the resolved config kept with every run state."""

    accelerator: Any
    precision: str  # "bf16", "fp16" or "fp32"
    log: logging.Logger | Any  # accelerate's logger: ``main_process_only`` is one of its keywords
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def view_dtype(self) -> torch.dtype:
        """The dtype the views are made in: the autocast dtype (bf16, fp16), else float32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)

    def say(self, message: str) -> None:
        """One line of the recipe's log, written by the main process only."""
        self.log.info(message, main_process_only=True)


def start_run(*, name: str, output_dir: str | Path, log_file: str, log_level: str, threads: int, cpu: bool | None,
              precision: str, dist_timeout_minutes: float, batch_size: int, deterministic: bool = False,
              extra_trackers: tuple[Any, ...] = ()) -> Run:
    """The :class:`Run` in ``output_dir``: its accelerator, the precision used, the recipe's logger
    ``mvssl_hub.<name>``; its config is the recipe's to fill.

    Logs go to stdout at ``log_level`` (accelerate's own at warning or above); ``threads`` > 0 sets torch's
    threads; the metrics go to ``<output_dir>/logs/<log_file>.jsonl`` (and ``extra_trackers``). ConfigError when
    ``batch_size`` (the global batch) does not split evenly over the processes, or when a process does not see
    ``output_dir`` (:func:`check_shared_folder`)."""
    from accelerate.logging import get_logger

    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("accelerate").setLevel(max(logging.getLevelName(log_level.upper()), logging.WARNING))
    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(output_dir)
    accelerator, used = make_accelerator(cpu=cpu, precision=precision, run_dir=run_dir,
                                         log_with=[JSONLTracker(log_file, run_dir / "logs"), *extra_trackers],
                                         timeout_minutes=dist_timeout_minutes)
    configure_backends(accelerator.device, deterministic=deterministic)
    world = accelerator.num_processes
    if batch_size % world:
        raise ConfigError(f"config key 'batch_size' = {batch_size}: not divisible by the {world} processes")
    check_shared_folder(accelerator, run_dir)
    return Run(accelerator, used, get_logger(f"mvssl_hub.{name}", log_level=log_level.upper()))


def check_shared_folder(accelerator: Any, folder: Path) -> None:
    """ConfigError on every process unless each one sees the file the main process writes into ``folder``: the
    run states and the export of a run are one folder for all its machines (on a cluster, a shared filesystem).
    No-op with one process."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast

    token = torch.zeros(1, dtype=torch.int64, device=accelerator.device)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        token[0] = secrets.randbits(62)
        (folder / f".shared-{int(token)}").touch()
    probe = folder / f".shared-{int(broadcast(token))}"
    seen = accelerator.gather(torch.tensor([float(probe.is_file())], device=accelerator.device)).tolist()
    if accelerator.is_main_process:
        probe.unlink()
    blind = [rank for rank, s in enumerate(seen) if not s]
    if blind:
        raise ConfigError(f"config key 'output_dir' = {str(folder)!r}: process(es) of rank {blind} do not see the "
                          "file the main process wrote there; the run states of a run are one folder for all its "
                          "machines: put output_dir on a filesystem every machine mounts at the same path")


def open_run_state(accelerator: Any, *, name: str, output_dir: str | Path, log_file: str, config: Mapping[str, Any],
                   keep: int, resume: bool, overwrite: bool, resumable: set[str], defaults: Mapping[str, Any],
                   max_step: int, tidy: Callable[[Path], object] | None = None,
                   tracker_config: Mapping[str, Any] | None = None
                   ) -> tuple[RunStateManager, dict[str, Any], Path | None]:
    """(the run states' manager, the saved training state or {}, the run state resumed from or None).

    The run states live in ``<output_dir>/run_states`` (a run folder of the old layout has its ``checkpoints/``
    renamed first, by the main process: :func:`~.run_state.adopt_old_layout`). After ``start_or_resume`` (see :meth:`RunStateManager.start_or_resume`), the main process drops the metrics a
    killed run logged past its run state (they are logged again) and calls ``tidy(<output_dir>/export)`` (an
    export interrupted between its two renames); then the trackers start, with ``tracker_config`` (default
    ``config``)."""
    run_dir = Path(output_dir)
    if accelerator.is_main_process and (old := adopt_old_layout(run_dir)) is not None:
        logging.getLogger(f"mvssl_hub.{name}").info("# run states: %s renamed to %s (their folder's new name)",
                                                     old, run_dir / RUN_STATES_DIR)
    accelerator.wait_for_everyone()  # every process opens the run states where the main process left them
    run_states = RunStateManager(run_dir / RUN_STATES_DIR, keep=keep)
    saved, latest = run_states.start_or_resume(accelerator, config, resume=resume, overwrite=overwrite,
                                               resumable=resumable, log_dir=run_dir / "logs", defaults=defaults,
                                               max_step=max_step)
    if accelerator.is_main_process:
        drop_logged_after(run_dir / "logs" / f"{log_file}.jsonl", int(saved.get("global_step", 0)))
        if tidy is not None:
            tidy(run_dir / "export")
    accelerator.init_trackers(name, config=dict(tracker_config if tracker_config is not None else config))
    tighten()  # the start-up's long wait is over: from here a collective fails after dist_timeout_minutes
    return run_states, saved, latest
