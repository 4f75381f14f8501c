"""The loop frame both recipes share: paused time is not training time, the time budget ends the loop, run states
are saved on their cadence but never by the frame after the last step, and a resumed frame counts on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mvssl_hub.train.loop import LoopFrame
from mvssl_hub.train.schedule import TrainingClock
from mvssl_hub.train.startup import Run


class OneProcess:
    num_processes, is_main_process, device = 1, True, "cpu"


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, main_process_only: bool = True) -> None:
        self.lines.append(message)


class RunStates:
    """Records what the frame saves (the step, and the training seconds the state held)."""

    def __init__(self) -> None:
        self.saved: list[tuple[int, float]] = []

    def save(self, accelerator: Any, step: int, state: dict, config: dict) -> Path:
        self.saved.append((step, state["train_seconds"]))
        return Path(f"run_states/step-{step:08d}")


def frame(state: dict, run_states: RunStates, **kw: Any) -> LoopFrame:
    run = Run(OneProcess(), "fp32", Log(), config={"seed": 0})
    return LoopFrame(run, state, run_states, clock=TrainingClock("wall"), progress=False, **kw)


def test_saves_follow_their_cadence_and_a_resumed_frame_counts_on() -> None:
    state, run_states = {"global_step": 0, "train_seconds": 0.0}, RunStates()
    with frame(state, run_states, total_steps=5, run_state_every=2) as f:
        while f.running():
            assert f.advance() == state["global_step"]
            assert not f.out_of_time()  # no budget
            if f.save_due():
                f.save()
    assert [step for step, _ in run_states.saved] == [2, 4]  # not after step 5: the recipe saves the last itself
    assert f.run.log.lines == ["# run state: run_states/step-00000002", "# run state: run_states/step-00000004"]
    resumed = {"global_step": 3, "train_seconds": 7.5}
    with frame(resumed, RunStates(), total_steps=5) as f:
        assert f.clock.elapsed() >= 7.5 and f.running()  # the clock restarts at the run's training time so far


def test_paused_time_is_not_training_time_and_the_budget_ends_the_loop() -> None:
    state = {"global_step": 0, "train_seconds": 0.0}
    with frame(state, RunStates(), total_steps=10**6, time_budget=0.2) as f:
        with f.paused():  # an evaluation: 0.5 s that the budget does not count
            time.sleep(0.5)
        assert state["train_seconds"] < 0.2
        steps = 0
        while f.running():
            time.sleep(0.01)
            f.advance()
            steps += 1
            if f.out_of_time():
                break
    assert state["train_seconds"] >= 0.2 and steps >= 2 and f.closed
    assert f.bar.total < 10**6  # the bar's total follows the budget's pace, not the planned steps
