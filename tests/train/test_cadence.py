"""Cadence: every N steps, every T seconds (aligned to multiples, or after the last run), either off at 0."""

from __future__ import annotations

from mvssl_hub.train.schedule import Cadence


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def elapsed(self) -> float:
        return self.t


def test_steps_only_and_off() -> None:
    c = Cadence(steps=3)
    assert [s for s in range(1, 10) if c.due(s)] == [3, 6, 9]
    assert not any(Cadence().due(s) for s in range(1, 10))


def test_aligned_seconds_fall_on_multiples() -> None:
    clock = FakeClock()
    clock.t = 25.0  # a resumed run: the next point is 30, not 25 + 10
    c = Cadence(seconds=10.0, clock=clock, aligned=True)
    assert not c.due(1)
    clock.t = 31.0
    assert c.due(2)
    c.done()
    assert c.next_seconds == 40.0


def test_relative_seconds_count_from_the_last_run() -> None:
    clock = FakeClock()
    clock.t = 25.0
    c = Cadence(seconds=10.0, clock=clock)
    assert c.next_seconds == 35.0
    clock.t = 36.0
    assert c.due(1)
    c.done()
    assert c.next_seconds == 46.0
