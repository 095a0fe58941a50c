"""Per-key FIFO queues drained by a bounded worker pool.

Each key (a user) has at most one worker at a time, so one user's updates run
one after another in arrival order, while different users run in parallel.
The polling thread only enqueues: it never waits for a handler.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

Task = Callable[[], None]


class Dispatcher:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="worker")
        self._queues: dict[int, deque[Task]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def submit(self, key: int, task: Task) -> None:
        """Queue `task` behind the key's earlier tasks."""
        with self._lock:
            self._pending += 1
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(task)
                return
            self._queues[key] = deque([task])
        self._pool.submit(self._drain, key)

    def _drain(self, key: int) -> None:
        while True:
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                task = queue[0]
            try:
                task()
            except Exception:  # the task logs its own context; this only keeps the queue alive
                log.exception("task for %s failed", key)
            finally:
                with self._lock:
                    queue.popleft()
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    @property
    def pending(self) -> int:
        return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued task has run; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
