"""Tests for logs.py: secrets are masked in the whole formatted record, uncaught exceptions included."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from logs import MaskingFormatter, setup_logging

TOKEN = "123456:ABC-def_ghi"
API_KEY = "sk-live-0123456789abcdef"


def record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("httpx", logging.INFO, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def test_message_and_args_are_masked() -> None:
    line = MaskingFormatter([TOKEN, API_KEY], "%(message)s").format(record(
        "POST %s with key=%s -> %d", f"https://api.telegram.org/bot{TOKEN}/getUpdates", API_KEY, 200))
    assert line == "POST https://api.telegram.org/bot****/getUpdates with key=**** -> 200"


def test_a_chained_traceback_is_masked() -> None:
    # requests puts the URL, token included, in the message of an error wrapped in another one.
    try:
        try:
            raise requests.ConnectionError(f"Max retries exceeded with url: /bot{TOKEN}/getMe")
        except requests.ConnectionError as inner:
            raise RuntimeError("polling failed") from inner
    except RuntimeError:
        line = MaskingFormatter([TOKEN]).format(record("poll", exc_info=sys.exc_info()))
    assert "Traceback" in line and "/bot****/getMe" in line and TOKEN not in line


def test_url_encoded_secret_is_masked() -> None:
    line = MaskingFormatter([TOKEN], "%(message)s").format(record("GET /x?token=123456%3AABC-def_ghi"))
    assert line == "GET /x?token=****"


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """setup_logging() writing to a buffer; the logging and hooks of the test session restored after."""
    root, saved = logging.getLogger(), (sys.stderr, sys.excepthook, threading.excepthook)
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    sys.stderr = buffer
    try:
        setup_logging("INFO", [TOKEN, API_KEY])
        yield buffer
    finally:
        sys.stderr, sys.excepthook, threading.excepthook = saved
        root.handlers[:], root.level = handlers, level
        logging.captureWarnings(False)


def test_an_uncaught_exception_in_a_thread_is_logged_masked(stderr: io.StringIO) -> None:
    def leak() -> None:
        raise ValueError(f"bad answer from https://api.telegram.org/bot{TOKEN}/sendMessage")

    thread = threading.Thread(target=leak, name="leaky")
    thread.start()
    thread.join()
    out = stderr.getvalue()
    assert "ERROR bot: uncaught exception in thread leaky" in out
    assert "ValueError: bad answer from https://api.telegram.org/bot****/sendMessage" in out
    assert TOKEN not in out


def test_an_uncaught_exception_in_the_main_thread_is_logged_masked(stderr: io.StringIO) -> None:
    try:
        raise KeyError(API_KEY)
    except KeyError:
        sys.excepthook(*sys.exc_info())
    out = stderr.getvalue()
    assert "CRITICAL bot: uncaught exception" in out and "KeyError: '****'" in out
    assert API_KEY not in out


def test_library_chatter_stays_below_info(stderr: io.StringIO) -> None:
    logging.getLogger("urllib3.connectionpool").info("GET /bot%s/getUpdates", TOKEN)
    logging.getLogger("bot").info("ready")
    assert stderr.getvalue().endswith("INFO bot: ready\n")
