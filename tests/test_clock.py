"""The frame clock: ticks on a fixed grid; a late loop drops ticks instead of queueing them."""

from __future__ import annotations

import math

import pytest

from vprod.engine import FrameClock, ManualTime


def test_manual_time_moves_only_when_told_or_slept_on():
    t = ManualTime(5.0)
    assert t.now() == 5.0
    t.advance(0.25)
    assert t.now() == 5.25
    t.sleep(0.5)
    assert t.now() == 5.75
    t.sleep(-1.0)  # sleeping a negative time does not go back
    t.sleep(0.0)
    assert t.now() == 5.75


@pytest.mark.parametrize("fps", [30.0, 25.0, 60.0, 8.0, 29.97])
def test_ticks_fall_on_exact_multiples_of_the_interval(fps):
    t = ManualTime()
    clock = FrameClock(fps, t)
    interval = 1.0 / fps
    for i in range(20):
        tick = clock.wait()
        assert tick.index == i
        assert tick.pts == i * interval  # pts is computed from the index, not accumulated
        assert tick.dropped == 0
        assert tick.dt == pytest.approx(interval)
        # The clock slept until the tick was due, no longer.
        assert t.now() == pytest.approx(i * interval, abs=1e-9)
    assert clock.dropped_total == 0


def test_the_clock_sleeps_only_for_what_is_left_of_the_interval():
    t = ManualTime()
    clock = FrameClock(4, t)  # 0.25 s, exact in binary
    clock.wait()
    t.advance(0.1)  # the frame took 0.1 s of work
    tick = clock.wait()
    assert (tick.index, tick.pts, tick.dropped) == (1, 0.25, 0)
    assert t.now() == 0.25


@pytest.mark.parametrize("k", [1, 2, 5])
def test_a_stall_of_k_intervals_drops_k_ticks_and_stays_on_the_grid(k):
    t = ManualTime()
    clock = FrameClock(4, t)  # interval 0.25 s
    for _ in range(3):
        clock.wait()  # ticks 0, 1, 2; now = 0.5
    # The loop stalls: it comes back k whole intervals (and a bit) after tick 3 was due.
    due = 3 * 0.25
    t.advance(due - t.now() + k * 0.25 + 0.1)
    tick = clock.wait()
    assert tick.dropped == k
    assert tick.index == 3 + k
    assert tick.pts == (3 + k) * 0.25  # still on the grid
    assert tick.dt == (k + 1) * 0.25  # since the previous processed tick
    assert clock.dropped_total == k
    # No burst of queued ticks: the next one waits for its own time.
    before = t.now()
    nxt = clock.wait()
    assert (nxt.index, nxt.dropped) == (4 + k, 0)
    assert nxt.pts == (4 + k) * 0.25
    assert t.now() == nxt.pts > before


def test_lateness_below_one_interval_drops_nothing():
    t = ManualTime()
    clock = FrameClock(4, t)
    clock.wait()
    t.advance(0.25 + 0.2)  # tick 1 is 0.2 s late: still played, late
    tick = clock.wait()
    assert (tick.index, tick.dropped) == (1, 0)
    tick = clock.wait()
    assert (tick.index, tick.dropped, tick.pts) == (2, 0, 0.5)
    assert t.now() == 0.5


def test_stall_at_30_fps_counts_whole_missed_intervals():
    t = ManualTime()
    clock = FrameClock(30, t)
    interval = 1 / 30
    for _ in range(10):
        clock.wait()
    t.advance(interval * 7.5)  # tick 10 was due one interval after tick 9: 6.5 intervals late
    tick = clock.wait()
    assert tick.dropped == 6
    assert tick.index == 16
    assert tick.pts == 16 * interval
    assert clock.wait().index == 17


def test_dropped_total_adds_up_over_several_stalls():
    t = ManualTime()
    clock = FrameClock(10, t)
    clock.wait()
    t.advance(0.35)  # next due at 0.1: 2.5 intervals late -> 2 dropped
    assert clock.wait().dropped == 2
    # Tick 3 was played late at 0.35; tick 4 is due at 0.4. Now 0.85: 4.5 intervals late -> 4 dropped.
    t.advance(0.5)
    assert clock.wait().dropped == 4
    assert clock.dropped_total == 6


def test_without_restart_set_up_time_counts_as_lateness():
    t = ManualTime()
    clock = FrameClock(4, t)
    t.advance(2.0)  # set-up took 2 s before the first frame
    tick = clock.wait()
    assert tick.dropped == 8
    assert tick.index == 8


def test_restart_before_the_first_frame_counts_ticks_from_now():
    t = ManualTime()
    clock = FrameClock(4, t)
    t.advance(2.0)
    clock.restart()
    tick = clock.wait()
    assert (tick.index, tick.pts, tick.dropped) == (0, 0.0, 0)
    assert t.now() == 2.0
    tick = clock.wait()
    assert (tick.index, tick.pts) == (1, 0.25)
    assert t.now() == 2.25


def test_restart_after_the_first_frame_changes_nothing():
    t = ManualTime()
    clock = FrameClock(4, t)
    clock.wait()
    t.advance(1.1)
    clock.restart()
    tick = clock.wait()
    assert tick.dropped > 0  # the stall is still a stall


@pytest.mark.parametrize("fps", [0, -30, math.nan, math.inf])
def test_fps_must_be_positive_and_finite(fps):
    with pytest.raises(ValueError, match="fps"):
        FrameClock(fps, ManualTime())
