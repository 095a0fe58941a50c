"""Tests for dispatch.py: per-key FIFO order, no concurrency within a key, parallelism across keys."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from dispatch import Dispatcher

TIMEOUT = 5.0


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(workers=4)
    yield dispatcher
    dispatcher.close()


class Recorder:
    """Records task starts and ends, and the most tasks that ever ran at once per key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.running: dict[int, int] = {}
        self.max_running: dict[int, int] = {}

    def task(self, key: int, name: str, gate: threading.Event | None = None) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                self.events.append(f"start {name}")
                self.running[key] = self.running.get(key, 0) + 1
                self.max_running[key] = max(self.max_running.get(key, 0), self.running[key])
            try:
                if gate is not None:
                    assert gate.wait(TIMEOUT), f"{name}: gate never opened"
            finally:
                with self.lock:
                    self.running[key] -= 1
                    self.events.append(f"end {name}")
        return run


def test_tasks_of_one_key_run_in_order_and_never_concurrently(dispatcher: Dispatcher) -> None:
    recorder, gate = Recorder(), threading.Event()
    dispatcher.submit(1, recorder.task(1, "a", gate))
    for name in "bcde":
        dispatcher.submit(1, recorder.task(1, name))
    assert dispatcher.pending == 5
    gate.set()
    assert dispatcher.wait_idle(TIMEOUT)
    assert recorder.events == [f"{step} {name}" for name in "abcde" for step in ("start", "end")]
    assert recorder.max_running == {1: 1}
    assert dispatcher.pending == 0


def test_different_keys_run_in_parallel(dispatcher: Dispatcher) -> None:
    started = {1: threading.Event(), 2: threading.Event()}
    saw_other: dict[int, bool] = {}

    def task(key: int, other: int) -> Callable[[], None]:
        def run() -> None:
            started[key].set()
            saw_other[key] = started[other].wait(TIMEOUT)  # only possible if both run at once
        return run

    dispatcher.submit(1, task(1, 2))
    dispatcher.submit(2, task(2, 1))
    assert dispatcher.wait_idle(TIMEOUT)
    assert saw_other == {1: True, 2: True}


def test_a_blocked_key_does_not_hold_up_others(dispatcher: Dispatcher) -> None:
    recorder, gate, other_done = Recorder(), threading.Event(), threading.Event()
    dispatcher.submit(1, recorder.task(1, "slow", gate))
    dispatcher.submit(1, recorder.task(1, "after slow"))
    dispatcher.submit(2, other_done.set)
    assert other_done.wait(TIMEOUT)
    assert "start after slow" not in recorder.events
    gate.set()
    assert dispatcher.wait_idle(TIMEOUT)
    assert recorder.events[-2:] == ["start after slow", "end after slow"]


def test_a_failing_task_does_not_stop_later_tasks(dispatcher: Dispatcher,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()

    def boom() -> None:
        raise RuntimeError("handler exploded")

    dispatcher.submit(7, recorder.task(7, "first"))
    dispatcher.submit(7, boom)
    dispatcher.submit(7, recorder.task(7, "last"))
    with caplog.at_level(logging.ERROR, logger="dispatch"):
        assert dispatcher.wait_idle(TIMEOUT)
    assert recorder.events == ["start first", "end first", "start last", "end last"]
    assert "task for 7 failed" in caplog.text and "handler exploded" in caplog.text
    assert dispatcher.pending == 0


def test_wait_idle_times_out_while_a_task_blocks(dispatcher: Dispatcher) -> None:
    gate, finished = threading.Event(), threading.Event()

    def blocked() -> None:
        gate.wait(TIMEOUT)
        finished.set()

    dispatcher.submit(1, blocked)
    assert dispatcher.wait_idle(0.05) is False
    assert dispatcher.pending == 1
    assert not finished.is_set()
    gate.set()
    assert dispatcher.wait_idle(TIMEOUT) is True
    assert finished.is_set()


def test_wait_idle_with_nothing_submitted(dispatcher: Dispatcher) -> None:
    assert dispatcher.wait_idle(0) is True


def test_a_key_can_be_reused_after_its_queue_drained(dispatcher: Dispatcher) -> None:
    results: list[int] = []
    for round_ in range(3):
        dispatcher.submit(1, lambda round_=round_: results.append(round_))
        assert dispatcher.wait_idle(TIMEOUT)
    assert results == [0, 1, 2]
