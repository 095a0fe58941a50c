"""Per-key FIFO queues drained by a bounded pool of worker threads.

Each key (a user) has at most one worker at a time, so one user's updates run
one after another in arrival order, while different users run in parallel.
The polling thread only enqueues: it never waits for a handler.

The workers are daemon threads: a handler stuck in a network call cannot keep
the process alive past its shutdown (a ThreadPoolExecutor's threads are joined
at exit). `close()` stops starting queued tasks; those stay in the update
journal for the next run.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[], None]


class Dispatcher:
    def __init__(self, workers: int) -> None:
        self._max_workers = workers
        self._queues: dict[int, deque[Task]] = {}
        self._ready: deque[int] = deque()  # keys with work and no worker yet
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._idle = threading.Condition(self._lock)  # wait_idle() waits here
        self._workers = 0
        self._waiting = 0  # workers waiting for a key
        self._pending = 0  # tasks queued or running
        self._running = 0
        self._closed = False

    def submit(self, key: int, task: Task) -> None:
        """Queue `task` behind the key's earlier tasks."""
        with self._lock:
            if self._closed:
                return  # shutting down: the update stays journaled for the next run
            self._pending += 1
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(task)
                return
            self._queues[key] = deque([task])
            self._ready.append(key)
            if len(self._ready) > self._waiting and self._workers < self._max_workers:
                self._workers += 1
                threading.Thread(target=self._serve, name=f"worker-{self._workers}", daemon=True).start()
            else:
                self._work.notify()

    def _serve(self) -> None:
        with self._lock:
            while True:
                while not self._ready and not self._closed:
                    self._waiting += 1
                    self._work.wait()
                    self._waiting -= 1
                if self._closed:
                    self._workers -= 1
                    return
                self._drain(self._ready.popleft())

    def _drain(self, key: int) -> None:
        """Run the key's tasks in order; called and returns with the lock held."""
        queue = self._queues[key]
        while queue and not self._closed:
            task = queue[0]
            self._running += 1
            self._lock.release()
            try:
                task()
            except Exception:  # the task logs its own context; this only keeps the queue alive
                log.exception("task for %s failed", key)
            finally:
                self._lock.acquire()
                queue.popleft()
                self._pending -= 1
                self._running -= 1
                if self._running == 0:
                    self._idle.notify_all()
        if not queue:
            del self._queues[key]

    @property
    def pending(self) -> int:
        return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued task has run (after `close()`: every running one); False on timeout."""
        with self._lock:
            return self._idle.wait_for(
                lambda: self._running == 0 and (self._closed or self._pending == 0), timeout)

    def close(self) -> None:
        """Start no more tasks; the ones running go on (see `wait_idle`)."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
            self._idle.notify_all()

