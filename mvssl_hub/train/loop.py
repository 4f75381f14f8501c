"""The frame of a recipe's training loop: what ``pretrain`` and ``finetune`` do around their own steps.

:class:`LoopFrame` holds the progress bar, the training clock (evaluation and saves paused out), the time budget
that every process stops at, run states saved on their cadence with the clock paused, and the count of non-finite
steps skipped by the :class:`~.step_guard.StepGuard`. The loop body (batch, views, forward, loss, backward,
``guard.step(optimizer, loss)``, logging, evaluation) stays in the recipe, which reads::

    with LoopFrame(run, state, run_states, total_steps=..., clock=..., time_budget=...) as frame:
        while frame.running():
            step = state["global_step"]
            ...                                 # the recipe's step
            frame.advance()                     # global_step + 1, the bar moved
            with frame.paused():                # evaluation: not training time
                ...
            if frame.out_of_time():             # the same answer on every process
                break
            if frame.save_due():
                frame.save()                    # a run state, the clock paused

``state`` is the run's training state (saved with every run state): the frame keeps its ``global_step``,
``train_seconds``, ``nan_skipped`` and ``nan_streak``.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..distributed import any_process
from .run_state import RunStateManager
from .schedule import Cadence, TrainingClock, expected_total_steps
from .startup import Run
from .step_guard import StepGuard

__all__ = ["LoopFrame", "NonFiniteLossError", "save_run_state"]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses."""


def save_run_state(run: Run, run_states: RunStateManager, state: MutableMapping[str, Any]) -> Path:
    """Save the run state of step ``state["global_step"]`` (every process calls) and say where it went."""
    path = run_states.save(run.accelerator, state["global_step"], state, run.config)
    run.say(f"# run state: {path}")
    return path


class LoopFrame:
    """The frame of one training loop, from its first step (or the resumed one) to ``total_steps``.

    ``clock`` restarts at ``state["train_seconds"]`` (a resumed run's training time); ``time_budget`` (seconds of
    that clock, or None) ends the run early, on every process at the same step; run states are due every
    ``run_state_every`` steps and/or ``run_state_every_seconds`` of the clock (0: off). The progress bar shows on the main
    process when ``progress``; with a time budget its total and ETA follow the pace since the start.
    """

    def __init__(self, run: Run, state: MutableMapping[str, Any], run_states: RunStateManager, *, total_steps: int,
                 clock: TrainingClock, time_budget: float | None = None, run_state_every: int = 0,
                 run_state_every_seconds: float = 0.0, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        self.run, self.state, self.run_states = run, state, run_states
        self.total_steps, self.clock, self.time_budget = total_steps, clock, time_budget
        clock.restart(state["train_seconds"])
        self.start_step, self.start_seconds = state["global_step"], state["train_seconds"]
        self.bar = tqdm(total=total_steps, initial=state["global_step"], unit="step", dynamic_ncols=True,
                        disable=not (run.accelerator.is_main_process and progress))
        self.save_cadence = Cadence(steps=run_state_every, seconds=run_state_every_seconds, clock=clock)
        self.closed = False

    def __enter__(self) -> LoopFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> bool:
        """Whether steps are left."""
        return self.state["global_step"] < self.total_steps

    def advance(self) -> int:
        """Count the step just taken: ``global_step`` + 1 (returned), the bar one step on; with a time budget the
        bar's total is where the budget will end the run at the pace so far."""
        self.state["global_step"] += 1
        done = self.state["global_step"]
        self.bar.update(1)
        if self.time_budget is not None:
            self.bar.total = expected_total_steps(done, self.total_steps, self.time_budget, self.clock.elapsed(),
                                                  self.start_step, self.start_seconds)
        return done

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside the block is not training time (evaluation, saves); ``train_seconds`` is current on both
        sides of it."""
        self.state["train_seconds"] = self.clock.elapsed()
        with self.clock.paused():
            yield
        self.state["train_seconds"] = self.clock.elapsed()

    def out_of_time(self) -> bool:
        """Whether the time budget is spent, on any process: every process stops at the same step (their clocks
        differ). A collective per call when several processes run and a budget is set; none without a budget."""
        if self.time_budget is None:
            return False
        return any_process(self.clock.elapsed() >= self.time_budget, self.run.accelerator)

    def save_due(self) -> bool:
        """Whether a run state is due after this step (by steps or by the clock; a timed save is taken by every
        process at the same step). Never after the last step: the recipe saves that one itself."""
        due = self.save_cadence.due(self.state["global_step"])
        if self.save_cadence.seconds:
            due = any_process(due, self.run.accelerator)
        return due and self.running()

    def save(self) -> Path:
        """Save a run state, its time paused out of the training clock (all processes call)."""
        with self.paused():
            path = save_run_state(self.run, self.run_states, self.state)
        self.save_cadence.done()
        return path

    def count_skipped(self, guard: StepGuard, max_in_a_row: int) -> None:
        """Read the guard's counts of non-finite steps into ``state`` (free on its host path, one device read on its
        device path), say when this step was skipped, and raise NonFiniteLossError after ``max_in_a_row``
        consecutive ones: the newest run state is left as it was."""
        step = self.state["global_step"] - 1
        counts = guard.poll()
        if counts.skipped > self.state["nan_skipped"]:
            self.run.say(f"# step {step}: non-finite loss, step skipped ({counts.streak} in a row)")
        self.state["nan_skipped"], self.state["nan_streak"] = counts.skipped, counts.streak
        if counts.max_streak >= max_in_a_row:
            raise NonFiniteLossError(
                f"{counts.max_streak} consecutive non-finite losses (max_nan_steps={max_in_a_row}) at step {step}: "
                f"stopping. The last good run state is {self.run_states.latest()} (not overwritten); lower the "
                "learning rate or check the data.")

    def close(self) -> None:
        """Close the bar; ``train_seconds`` is final. Idempotent."""
        if not self.closed:
            self.bar.close()
            self.state["train_seconds"] = self.clock.elapsed()
            self.closed = True
