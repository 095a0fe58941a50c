"""Logging to stderr with every secret masked in the whole formatted record.

Masking happens in the formatter, after the message, the traceback and the
stack are put together: a library's exception that carries a URL with the bot
token (`/bot<token>/getUpdates`) is masked like any message. Uncaught
exceptions, in the main thread or any other, are logged through it too instead
of being printed raw to stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from types import TracebackType
from urllib.parse import quote

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "****"
# Library chatter below WARNING: request lines carry URLs with the token.
NOISY = ("urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "openai", "TeleBot")

log = logging.getLogger("bot")


class MaskingFormatter(logging.Formatter):
    """A Formatter that replaces every secret in the finished text with ****."""

    def __init__(self, secrets: Iterable[str], fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        forms = set()
        for secret in secrets:
            if secret:
                forms |= {secret, quote(secret, safe="")}  # as is, and as it appears in a query string
        # Longest first: a secret that contains another is masked whole.
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    """Log to stderr at `level`; secrets masked everywhere, uncaught exceptions included."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    log.critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value,
                                                                  args.exc_traceback))
