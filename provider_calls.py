"""Provider exchanges that can be given up at any moment, and the SSE wire format they stream in.

A blocked read does not wake up when another thread calls `close()`: the provider would keep the
request open (and billed) until the model's next byte or the timeout. So each exchange runs in a
thread of its own (`Call`), every connection of the HTTP pool is tracked with the call that last used
it (`Cutter`), and giving a call up shuts its sockets down: the read fails at once and the provider
sees the connection closed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore2
import httpx2

log = logging.getLogger(__name__)

POLL = 0.2  # seconds: how soon a stop is noticed while the provider is silent
END = object()  # the last event of a call whose work finished
_local = threading.local()  # .call: the Call whose work runs in this thread


class Cancelled(Exception):
    """The caller's stop flag was set: the call was cut."""


class Silent(Exception):
    """Nothing arrived within the caller's patience: the call was cut."""


class Cutter:
    """The live connections of the HTTP pools, each with the call that last used it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_TrackedStream] = weakref.WeakSet()

    def install(self, http_client: httpx2.Client) -> bool:
        """Track the connections `http_client` opens; False (with a warning) where its pools are unknown."""
        transports = [http_client._transport, *(t for t in http_client._mounts.values() if t is not None)]
        pools = [getattr(t, "_pool", None) for t in transports]
        if not pools or not all(hasattr(p, "_network_backend") for p in pools):
            log.warning("cannot track provider connections: a stop will wait for the provider's next byte")
            return False
        for pool in pools:
            pool._network_backend = _TrackingBackend(pool._network_backend, self)  # type: ignore[union-attr]
        return True

    def add(self, stream: _TrackedStream) -> None:
        with self._lock:
            self._streams.add(stream)

    def discard(self, stream: _TrackedStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def cut(self, call: Call) -> int:
        """Shut down the sockets `call` is using; how many."""
        with self._lock:
            mine = [s for s in self._streams if s.owner is call]
        for stream in mine:
            stream.shut()
        return len(mine)


class _TrackedStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream, cutter: Cutter) -> None:
        self._inner, self._cutter = inner, cutter
        self.owner: Call | None = getattr(_local, "call", None)
        cutter.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.owner = getattr(_local, "call", None)
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.owner = getattr(_local, "call", None)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._cutter.discard(self)
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        self._cutter.discard(self)  # the TLS stream wraps this one's socket
        return _TrackedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._cutter)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the pool checks an idle connection before handing it to a new request
            self.owner = getattr(_local, "call", None)
        return self._inner.get_extra_info(info)

    def shut(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _TrackingBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend, cutter: Cutter) -> None:
        self._inner, self._cutter = inner, cutter

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return _TrackedStream(self._inner.connect_tcp(*args, **kwargs), self._cutter)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return _TrackedStream(self._inner.connect_unix_socket(*args, **kwargs), self._cutter)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Call:
    """One exchange run in a thread of its own; `work(emit)` passes each event to the caller."""

    def __init__(self, cutter: Cutter, work: Callable[[Callable[[object], None]], None]) -> None:
        self._cutter = cutter
        self._events: queue.Queue[object] = queue.Queue()
        threading.Thread(target=self._run, args=(work,), name="llm-call", daemon=True).start()

    def _run(self, work: Callable[[Callable[[object], None]], None]) -> None:
        _local.call = self
        try:
            work(self._events.put)
        except BaseException as exc:  # handed to the caller, who decides
            self._events.put(_Failure(exc))
        else:
            self._events.put(END)
        finally:
            _local.call = None

    def next(self, cancel: threading.Event | None, patience: float) -> object:
        """The next event, or END; raises the work's error, `Cancelled`, or `Silent` after `patience` s."""
        deadline = time.monotonic() + patience
        while True:
            if cancel is not None and cancel.is_set():
                self._cutter.cut(self)
                raise Cancelled
            left = deadline - time.monotonic()
            if left <= 0:
                self._cutter.cut(self)
                raise Silent
            try:
                event = self._events.get(timeout=min(POLL, left))
            except queue.Empty:
                continue
            if isinstance(event, _Failure):
                raise event.exc
            return event


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event; comments (`: ping`), `event:` and `id:` lines are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)
