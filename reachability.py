"""Why Telegram cannot be reached, said once per change and then at most once a minute.

`cause()` turns the exception of a failed call into a short, stable phrase
(DNS, refused, timeout, TLS, HTTP status, ...). `Outage` is the polling loop's
memory of the current problem: the first failure and every change of cause are
logged at once, a problem that persists is repeated at most once a minute, and
the recovery is logged once.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import requests
from telebot.apihelper import ApiException, ApiTelegramException
from urllib3.exceptions import NameResolutionError, ProtocolError

log = logging.getLogger("bot")

REPEAT_EVERY = 60.0  # seconds between log lines about the same problem


def cause(exc: BaseException) -> str:
    """What went wrong with a call to Telegram, in a few words that stay the same while it lasts."""
    if isinstance(exc, ApiTelegramException):
        return f"HTTP {exc.error_code} {exc.description}"
    chain = list(_chain(exc))
    for error in chain:
        if isinstance(error, socket.gaierror | NameResolutionError):
            reason = error.strerror if isinstance(error, socket.gaierror) else _strerror(chain)
            return f"DNS lookup failed ({reason})" if reason else "DNS lookup failed"
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"TLS failed: {error.verify_message or 'certificate verify failed'}"
        if isinstance(error, ssl.SSLError):
            return f"TLS failed ({error.reason or error.__class__.__name__})"
    for error in chain:
        if isinstance(error, requests.Timeout | socket.timeout | TimeoutError):
            return "timed out"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected
                      | ProtocolError):
            return "connection closed by the other side"
    if isinstance(exc, ApiException) and isinstance(exc.result, requests.Response):
        response = exc.result
        if response.status_code != 200:
            return f"HTTP {response.status_code} {response.reason}".rstrip()
        return "HTTP 200 with a body that is not Telegram's JSON (a proxy?)"
    reason = _strerror(chain)
    return reason or exc.__class__.__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (causes, contexts, urllib3's `reason`, args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        wrapped = [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _strerror(chain: list[BaseException]) -> str | None:
    return next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), None)


class Outage:
    """The current problem with Telegram, if any, and when it was last logged."""

    def __init__(self, address: str, clock: Callable[[], float] = time.monotonic,
                 repeat_every: float = REPEAT_EVERY) -> None:
        self.address = address
        self.failures = 0  # consecutive failed calls
        self._clock = clock
        self._repeat_every = repeat_every
        self._problem: str | None = None
        self._since = 0.0
        self._logged = 0.0
        self._changed = threading.Condition()

    @property
    def problem(self) -> str | None:
        return self._problem

    def failed(self, problem: str, advice: str = "") -> None:
        """A call failed because of `problem`: log it if it is new, or if it was last said a minute ago."""
        now = self._clock()
        with self._changed:
            self.failures += 1
            self._changed.notify_all()
        if self._problem is None:
            self._since = now
        if problem != self._problem:
            self._problem, self._logged = problem, now
            log.warning("Telegram at %s: %s%s", self.address, problem, f"; {advice}" if advice else "")
        elif now - self._logged >= self._repeat_every:
            self._logged = now
            log.warning("Telegram at %s: still %s (for %s, %d failed calls)%s", self.address, problem,
                        _duration(now - self._since), self.failures, f"; {advice}" if advice else "")

    def succeeded(self) -> None:
        """A call went through: say so once if there was a problem."""
        if self._problem is not None:
            log.info("Telegram at %s: answers again, after %s (%d failed calls)", self.address,
                     _duration(self._clock() - self._since), self.failures)
        with self._changed:
            self._problem, self.failures = None, 0
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, re-checked after every call (for tests and benchmarks)."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
