"""The schedule of a training run: the learning rate at each step, where the run will stop, and its clock.

- :func:`lr_factor`: linear warm-up, then constant or cosine.
- :func:`expected_total_steps`: the step a run stops at, under a step count or a time budget.
- :class:`TrainingClock`: seconds of training (wall-clock or this process's CPU time), pausable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Cadence", "TrainingClock", "expected_total_steps", "lr_factor", "schedule_position"]


def lr_factor(step: int, total_steps: int, *, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then constant or cosine to 0 at ``total_steps``.

    Why not torch's ``LinearLR`` + ``CosineAnnealingLR`` in a ``SequentialLR``: those count scheduler steps only,
    while a fine-tune with ``--time_budget`` places itself on the schedule by the time it has spent (a fractional
    ``step``; ``tests/recipes/test_finetune.py::test_a_time_budget_ends_the_run_and_its_schedule_together``), and a
    campaign resumes one schedule across chunks from a step count alone. As a ``LambdaLR`` multiplier this one
    function serves both, and the same formula is easy to check by hand."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_position(step: int, total_steps: int, elapsed: float, time_budget: float | None) -> float:
    """Where the schedule stands, in steps of ``total_steps``: the step, or further along when a time budget is
    spent faster, so that warm-up and decay span whichever of the two ends the run first."""
    if time_budget is None:
        return step
    return max(step, min(1.0, elapsed / time_budget) * total_steps)


def expected_total_steps(step: int, total_steps: int, time_budget: float | None, elapsed: float, start_step: int,
                         start_elapsed: float) -> int:
    """The step a run will stop at: ``total_steps``, or sooner when ``time_budget`` (seconds of the run's clock)
    runs out first at the pace since ``(start_step, start_elapsed)``; what a progress bar's total and ETA use."""
    if time_budget is None or step <= start_step or elapsed <= start_elapsed:
        return total_steps
    pace = (step - start_step) / (elapsed - start_elapsed)  # steps per second of the clock
    return max(step, min(total_steps, step + round(pace * max(0.0, time_budget - elapsed))))


class TrainingClock:
    """Seconds of training, resumable from ``offset``, with evaluation and save time paused out.

    ``mode="wall"`` reads ``time.perf_counter``; ``mode="process"`` reads this process's CPU time
    (``time.process_time``), which on a shared machine with one thread per run measures the work a run
    did rather than how much of the machine it got.
    """

    def __init__(self, mode: str = "wall", offset: float = 0.0) -> None:
        if mode not in ("wall", "process"):
            raise ValueError(f"TrainingClock: mode must be 'wall' or 'process', got {mode!r}")
        self._now = time.perf_counter if mode == "wall" else time.process_time
        self._offset, self._start = offset, self._now()

    def elapsed(self) -> float:
        """Seconds of training so far (``offset`` included)."""
        return self._offset + self._now() - self._start

    def restart(self, offset: float = 0.0) -> None:
        """Count from ``offset`` seconds, now (a resumed run's training time so far)."""
        self._offset, self._start = offset, self._now()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside the ``with`` block is not counted."""
        self._offset = self.elapsed()
        try:
            yield
        finally:
            self._start = self._now()


class Cadence:
    """When a periodic action (log, evaluate, save) is due: every ``steps`` steps and/or every ``seconds`` of
    ``clock`` (0 turns either off). ``aligned``: the timed points fall on multiples of ``seconds`` (a kNN curve's
    x-axis); else ``seconds`` after the last time the action ran (:meth:`done`)."""

    def __init__(self, steps: int = 0, seconds: float = 0.0, clock: TrainingClock | None = None,
                 aligned: bool = False) -> None:
        if seconds and clock is None:
            raise ValueError("a timed cadence needs a clock")
        self.steps, self.seconds, self.clock, self.aligned = steps, seconds, clock, aligned
        self.done()

    def due(self, steps_done: int) -> bool:
        """Whether the action is due after ``steps_done`` steps."""
        return (bool(self.steps) and steps_done % self.steps == 0) or (
            self.clock is not None and self.clock.elapsed() >= self.next_seconds)

    def done(self) -> None:
        """The action ran (or the run starts): the next timed point."""
        if not self.seconds:
            self.next_seconds = math.inf
            return
        now = self.clock.elapsed()
        self.next_seconds = (now // self.seconds + 1) * self.seconds if self.aligned else now + self.seconds
