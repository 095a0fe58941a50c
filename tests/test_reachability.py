"""Tests for reachability.py: the cause of a failed call to Telegram, and when it is logged."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import requests
from telebot.apihelper import ApiHTTPException

from reachability import Outage, cause
from tests.fakes.telegram import FakeTelegram


def failure(url: str, timeout: float = 5) -> requests.RequestException:
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return exc
    raise AssertionError(f"{url} answered")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused() -> None:
    assert cause(failure(f"http://127.0.0.1:{closed_port()}/")) == "connection refused"


def test_dns_failure() -> None:
    assert cause(failure("http://api.telegram.invalid/")).startswith("DNS lookup failed (")


def test_timeout(silent_port: int) -> None:
    assert cause(failure(f"http://127.0.0.1:{silent_port}/", timeout=0.2)) == "timed out"


def test_tls_failure(tg: FakeTelegram) -> None:
    # https to a server that speaks plain http: the TLS handshake fails.
    assert cause(failure(f"https://127.0.0.1:{tg.port}/")).startswith("TLS failed (")


def test_http_status_of_a_proxy_page() -> None:
    response = requests.Response()
    response.status_code, response.reason, response._content = 502, "Bad Gateway", b"<html>nginx</html>"
    assert cause(ApiHTTPException("getUpdates", response)) == "HTTP 502 Bad Gateway"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_change_is_logged_once_then_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    clock = Clock()
    outage = Outage("api.telegram.org", clock)
    for _ in range(5):  # every 5 s for 25 s: one line
        outage.failed("unreachable (connection refused)", "retrying")
        clock.now += 5
    outage.failed("unreachable (DNS lookup failed (Name or service not known))")  # a new cause: at once
    for _ in range(13):  # 65 s more: repeated once
        clock.now += 5
        outage.failed("unreachable (DNS lookup failed (Name or service not known))")
    outage.succeeded()
    outage.succeeded()  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "Telegram at api.telegram.org: unreachable (connection refused); retrying",
        "Telegram at api.telegram.org: unreachable (DNS lookup failed (Name or service not known))",
        "Telegram at api.telegram.org: still unreachable (DNS lookup failed (Name or service not known)) "
        "(for 1 min 25 s, 18 failed calls)",
        "Telegram at api.telegram.org: answers again, after 1 min 30 s (19 failed calls)",
    ]
    assert outage.failures == 0
