"""The pacer that holds queue consumers back while the API takes a burst, on an injected clock."""

from __future__ import annotations

import pytest

from novulite.pacing import BURST_CONFIRM_SECONDS, BURST_HOLD_SECONDS, Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_pacer(share: float = 0.25) -> tuple[Pacer, FakeTime]:
    clock = FakeTime()
    return Pacer(background_share=share, monotonic=clock.monotonic, sleep=clock.sleep), clock


def saturate(pacer: Pacer, clock: FakeTime) -> None:
    """Report backed-up commits for longer than a burst needs to be confirmed."""
    for _ in range(30):
        pacer.note_commit(backlogged=True)
        clock.now += BURST_CONFIRM_SECONDS / 10


def test_consumers_run_freely_without_a_burst() -> None:
    pacer, clock = make_pacer()
    # At a moderate rate a trigger sometimes arrives while a commit runs.
    for index in range(50):
        pacer.note_commit(backlogged=index % 3 == 0)
        clock.now += 0.005
    pacer.charge(0.050)
    pacer.wait_turn()
    assert not pacer.in_burst
    assert clock.slept == []


def test_one_backed_up_commit_is_not_a_burst() -> None:
    pacer, _ = make_pacer()
    pacer.note_commit(backlogged=True)
    assert not pacer.in_burst


def test_short_spike_is_not_a_burst() -> None:
    pacer, clock = make_pacer()
    for backlogged in [True] * 12 + [False] * 5:
        pacer.note_commit(backlogged)
        clock.now += 0.005
    assert not pacer.in_burst


def test_pacer_limits_consumers_in_burst() -> None:
    pacer, clock = make_pacer(share=0.25)
    saturate(pacer, clock)
    assert pacer.in_burst
    pacer.charge(0.010)
    pacer.wait_turn()
    # 10 ms of consumer CPU at a 25% share earns 30 ms of waiting.
    assert sum(clock.slept) == pytest.approx(0.030)


def test_charges_from_several_consumers_add_up() -> None:
    pacer, clock = make_pacer(share=0.5)
    saturate(pacer, clock)
    pacer.charge(0.010)
    pacer.charge(0.020)
    pacer.wait_turn()
    assert sum(clock.slept) == pytest.approx(0.030)


def test_waiting_ends_when_the_burst_ends() -> None:
    pacer, clock = make_pacer(share=0.01)
    saturate(pacer, clock)
    last_report = clock.now - BURST_CONFIRM_SECONDS / 10
    pacer.charge(1.0)
    pacer.wait_turn()
    assert clock.now == pytest.approx(last_report + BURST_HOLD_SECONDS)
    assert not pacer.in_burst


def test_share_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="background_share"):
        Pacer(background_share=0)
