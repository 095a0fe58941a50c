"""The reply sender: the only code that sends to Telegram.

It throttles every message-producing call per chat and overall (see limiter.py), waits out a 429's
`retry_after`, treats "message is not modified" as success, retries through network faults and 5xx,
splits long HTML at 4096 UTF-16 units, and resends a part as plain text when Telegram rejects its
entities: the user always gets the answer. Rich messages (Bot API 10.1) are tried where asked for;
a server without them is remembered, and a refused rich message is the caller's to send classically.
Typing statuses and callback answers are best-effort: one try, never a wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from telebot import TeleBot, apihelper, types
from telebot.apihelper import ApiException, ApiHTTPException, ApiTelegramException

import render
from limiter import RateLimiter

__all__ = ["FileTooBig", "RateLimiter", "RichRefused", "Sender", "TelegramError"]

log = logging.getLogger(__name__)
T = TypeVar("T")
PREVIEW_PATIENCE = 0.0  # a preview gets one try: the next piece or the final text makes up for it
PLAIN_RETRY_PATIENCE = 2.0  # a preview whose HTML was refused may wait this long to go as plain text
_NO_PREVIEW = types.LinkPreviewOptions(is_disabled=True)


def http_session(pool: int) -> requests.Session:
    """One HTTP session for every thread that calls Telegram.

    pyTelegramBotAPI otherwise keeps a session per thread: with a pool of workers, a burst of new
    chats opens a TCP (and TLS) connection per worker before its first message. Shared, the
    connections are reused; the pool holds one per thread that may call at once.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class TelegramError(Exception):
    """Telegram refused a call for good (a 400 we cannot work around, or a long outage)."""

    def __init__(self, description: str, code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


class FileTooBig(TelegramError):
    """A file over the download cap: Telegram's own (getFile: "file is too big") or the caller's."""


class RichRefused(TelegramError):
    """The server lacks rich messages or rejected this one: send it the classic way."""


class Sender:
    """Safe, throttled calls to Telegram for one bot."""

    def __init__(self, bot: TeleBot, limiter: RateLimiter | None = None, outage_patience: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bot = bot
        self.limiter = limiter or RateLimiter()
        self.outage_patience = outage_patience
        self._sleep = sleep
        self.stats = {"429": 0, "plain_fallbacks": 0, "retries": 0, "rich_fallbacks": 0,
                      "ephemeral_fallbacks": 0}
        # False once the server answered a rich method with 404 (an older Bot API): until restart.
        self.rich_available = True
        self._no_ephemeral: set[int] = set()  # chats where ephemeral messages were refused

    # -- the one place every call goes through ------------------------------------------------

    def call(self, chat_id: int | None, fn: Callable[..., T], *args: Any, throttle: bool = True,
             patience: float | None = None, **kwargs: Any) -> T | None:
        """Call `fn` with throttling and retries; None when Telegram said "not modified"."""
        deadline = time.monotonic() + (self.outage_patience if patience is None else patience)
        backoff = 0.5
        while True:
            if throttle and chat_id is not None and not self.limiter.acquire(chat_id, deadline):
                raise TelegramError("rate limit wait would pass the deadline", 429)
            try:
                return fn(*args, **kwargs)
            except ApiTelegramException as exc:
                if exc.error_code == 429:
                    retry_after = _retry_after(exc)
                    self.stats["429"] += 1
                    log.warning("429 from Telegram for chat %s: waiting %.0fs", chat_id, retry_after)
                    if chat_id is not None:
                        self.limiter.penalize(chat_id, retry_after)
                    if time.monotonic() + retry_after > deadline:
                        raise TelegramError(exc.description, 429) from exc
                    if not throttle:
                        self._sleep(retry_after)
                    continue
                if "message is not modified" in exc.description:
                    return None
                if exc.error_code < 500:
                    raise TelegramError(exc.description, exc.error_code) from exc
                problem: Exception = exc
            except (requests.ConnectionError, requests.Timeout, ApiHTTPException) as exc:
                problem = exc
            except ApiException as exc:  # invalid JSON from a proxy
                problem = exc
            if time.monotonic() + backoff > deadline:
                raise TelegramError(f"Telegram unreachable: {problem.__class__.__name__}") from problem
            self.stats["retries"] += 1
            log.warning("Telegram call failed (%s); retrying in %.1fs", problem.__class__.__name__, backoff)
            self._sleep(backoff)
            backoff = min(backoff * 2, 15.0)

    def _formatted(self, chat_id: int, html: str, send: Callable[[str, str | None], T],
                   **options: Any) -> T | None:
        """`send(text, parse_mode)` with HTML; if Telegram rejects its entities, once more as plain text."""
        try:
            return self.call(chat_id, send, html, "HTML", **options)
        except TelegramError as exc:
            if not _is_entity_error(exc):
                raise
        self.stats["plain_fallbacks"] += 1
        log.warning("Telegram rejected the HTML of a message; sending it as plain text")
        # The first try's token is spent: the plain text waits for its own, even for a preview.
        retry = options | {"throttle": True}
        if not options.get("throttle", True):
            retry["patience"] = PLAIN_RETRY_PATIENCE
        return self.call(chat_id, send, render.html_to_text(html) or "…", None, **retry)

    @staticmethod
    def _budget(preview: bool, patience: float | None = None) -> dict[str, Any]:
        """Call options: a preview has its token already (`RateLimiter.try_preview`) and one try."""
        return {"throttle": False, "patience": PREVIEW_PATIENCE} if preview else {"patience": patience}

    # -- classic messages ---------------------------------------------------------------------

    def send_html(self, chat_id: int, html: str, reply_to: int | None = None,
                  markup: types.InlineKeyboardMarkup | None = None, *, thread_id: int | None = None,
                  ephemeral_for: int | None = None) -> list[types.Message]:
        """Send HTML of any length: split at the limit, each part falling back to plain text.

        `ephemeral_for`: in a group, show the message to that user only (Bot API 10.2), or to everyone
        where Telegram refuses that.
        """
        parts = render.split_html(html) or ["…"]
        sent = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            sent.append(self.send_part(chat_id, part, reply_to=reply_to if i == 0 else None,
                                       markup=markup if last else None, thread_id=thread_id,
                                       ephemeral_for=ephemeral_for))
        return [m for m in sent if m is not None]

    def send_part(self, chat_id: int, html: str, reply_to: int | None = None,
                  markup: types.InlineKeyboardMarkup | None = None, *, thread_id: int | None = None,
                  ephemeral_for: int | None = None, preview: bool = False) -> types.Message | None:
        """One part (at most 4096 UTF-16 units), as HTML or, if refused, as plain text."""
        if ephemeral_for is not None and chat_id < 0 and chat_id not in self._no_ephemeral:
            try:
                return self._send_part(chat_id, html, reply_to, markup, thread_id, ephemeral_for, preview)
            except TelegramError as exc:
                if exc.code != 400:
                    raise
                log.info("ephemeral message refused in chat %s (%s): replying to everyone",
                         chat_id, exc.description)
                self.stats["ephemeral_fallbacks"] += 1
                if "EPHEMERAL" in exc.description.upper():  # the chat's, not this message's: remember it
                    self._no_ephemeral.add(chat_id)
        return self._send_part(chat_id, html, reply_to, markup, thread_id, None, preview)

    def _send_part(self, chat_id: int, html: str, reply_to: int | None,
                   markup: types.InlineKeyboardMarkup | None, thread_id: int | None,
                   ephemeral_for: int | None, preview: bool) -> types.Message | None:
        reply = types.ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        ephemeral = types.EphemeralMessageParameters(ephemeral_for) if ephemeral_for is not None else None

        def send(text: str, mode: str | None) -> types.Message:
            return self.bot.send_message(chat_id, text, parse_mode=mode, reply_parameters=reply,
                                         reply_markup=markup, message_thread_id=thread_id,
                                         link_preview_options=_NO_PREVIEW if mode else None,
                                         ephemeral_message_parameters=ephemeral)

        return self._formatted(chat_id, html, send, **self._budget(preview))

    def edit_part(self, chat_id: int, message_id: int, html: str,
                  markup: types.InlineKeyboardMarkup | None = None, patience: float | None = None, *,
                  preview: bool = False, ephemeral_for: int | None = None) -> None:
        """Make a message show `html`; `ephemeral_for` edits that user's ephemeral message `message_id`."""
        def edit(text: str, mode: str | None) -> object:
            if ephemeral_for is not None:
                return self.bot.edit_ephemeral_message_text(
                    chat_id, ephemeral_for, message_id, text, parse_mode=mode, reply_markup=markup,
                    link_preview_options=_NO_PREVIEW if mode else None)
            return self.bot.edit_message_text(text, chat_id, message_id, parse_mode=mode, reply_markup=markup,
                                              link_preview_options=_NO_PREVIEW if mode else None)

        self._formatted(chat_id, html, edit, **self._budget(preview, patience))

    def draft(self, chat_id: int, draft_id: int, html: str, *, thread_id: int | None = None,
              preview: bool = True) -> None:
        """Show `html` as the chat's draft; raises TelegramError when drafts are refused."""
        def send(text: str, mode: str | None) -> bool:
            return self.bot.send_message_draft(chat_id, draft_id, text, parse_mode=mode,
                                               message_thread_id=thread_id, can_stop=True)

        self._formatted(chat_id, html, send, **self._budget(preview, patience=10))

    # -- rich messages ------------------------------------------------------------------------

    def send_rich(self, chat_id: int, markdown: str, *, reply_to: int | None = None,
                  markup: types.InlineKeyboardMarkup | None = None, thread_id: int | None = None,
                  preview: bool = False) -> types.Message | None:
        """One rich message from Markdown already within the rich limits (see richtext.py)."""
        reply = types.ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        return self._rich(chat_id, self.bot.send_rich_message, chat_id, _rich(markdown),
                          reply_parameters=reply, reply_markup=markup, message_thread_id=thread_id,
                          **self._budget(preview))

    def draft_rich(self, chat_id: int, draft_id: int, markdown: str, *, thread_id: int | None = None) -> None:
        """A rich draft (a preview: its token is taken already)."""
        self._rich(chat_id, self.bot.send_rich_message_draft, chat_id, draft_id, _rich(markdown),
                   message_thread_id=thread_id, can_stop=True, **self._budget(True))

    def edit_rich(self, chat_id: int, message_id: int, markdown: str, *, preview: bool = False,
                  markup: types.InlineKeyboardMarkup | None = None) -> None:
        self._rich(chat_id, self.bot.edit_message_text, None, chat_id, message_id,
                   rich_message=_rich(markdown), reply_markup=markup, **self._budget(preview))

    def _rich(self, chat_id: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if not self.rich_available:
            raise RichRefused("rich messages are not available on this server", 404)
        try:
            return self.call(chat_id, fn, *args, **kwargs)
        except TelegramError as exc:
            if exc.code == 404:
                log.warning("the Bot API server does not know rich messages (%s): classic messages "
                            "until restart", exc.description)
                self.rich_available = False
            elif not _is_rich_rejection(exc):
                raise
            self.stats["rich_fallbacks"] += 1
            log.info("rich message refused in chat %s (%s): sending it the classic way",
                     chat_id, exc.description)
            raise RichRefused(exc.description, exc.code) from exc

    # -- files ----------------------------------------------------------------------------------

    def download(self, file_id: str, max_bytes: int, timeout: float = 60.0) -> bytes:
        """A file's bytes: getFile, then GET {TELEGRAM_API_URL}/file/bot{token}/{file_path} through the
        bot's requests session, refused above `max_bytes` and given up after `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        try:
            info = self.call(None, self.bot.get_file, file_id, throttle=False, patience=min(timeout, 30.0))
        except TelegramError as exc:
            if "file is too big" in exc.description:
                raise FileTooBig(exc.description, exc.code) from exc
            raise
        if info is None or not info.file_path:
            raise TelegramError("getFile gave no file_path")
        if info.file_size and info.file_size > max_bytes:
            raise FileTooBig(f"file is {info.file_size} bytes, over the cap of {max_bytes}")
        url = (apihelper.FILE_URL or "https://api.telegram.org/file/bot{0}/{1}").format(
            self.bot.token, info.file_path)
        chunks: list[bytes] = []
        size = 0
        try:  # the URL holds the token: errors name the exception's class only
            remaining = max(0.1, deadline - time.monotonic())
            with apihelper._get_req_session().get(url, stream=True, proxies=apihelper.proxy,
                                                  timeout=(min(10.0, remaining), remaining)) as response:
                if response.status_code != 200:
                    status = response.status_code
                    raise TelegramError(f"file download answered {status}", status)
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooBig(f"file passed the cap of {max_bytes} bytes while downloading")
                    if time.monotonic() > deadline:
                        raise TelegramError(f"file download took longer than {timeout:.0f} s")
                    chunks.append(chunk)
        except requests.RequestException as exc:
            raise TelegramError(f"file download failed: {exc.__class__.__name__}") from None
        return b"".join(chunks)

    # -- best effort: never a wait, never an exception -----------------------------------------

    def send_document(self, chat_id: int, filename: str, data: bytes, thread_id: int | None = None, *,
                      caption_html: str | None = None, reply_to: int | None = None) -> types.Message | None:
        """Upload `data` as a file called `filename`, with an optional HTML caption (<= 1024 characters).

        The bytes themselves go to the call, not a stream, so a retry after a network fault sends them
        whole again.
        """
        reply = types.ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        return self.call(chat_id, self.bot.send_document, chat_id, data, visible_file_name=filename,
                         caption=caption_html, parse_mode="HTML" if caption_html else None,
                         reply_parameters=reply, message_thread_id=thread_id)

    def typing(self, chat_id: int, thread_id: int | None = None) -> float:
        """Show "typing…"; returns seconds to hold off (Telegram's retry_after after a 429), else 0."""
        return self._best_effort("sendChatAction", self.bot.send_chat_action, chat_id, "typing",
                                 message_thread_id=thread_id)

    def answer_callback(self, callback_id: str, text: str | None = None) -> None:
        # Too old or already answered: the user just sees the spinner stop.
        self._best_effort("answerCallbackQuery", self.bot.answer_callback_query, callback_id, text)

    def _best_effort(self, what: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
        """One try. A 429 is reported back (to defer), never slept out: the caller serves other chats."""
        try:
            fn(*args, **kwargs)
        except ApiTelegramException as exc:
            if exc.error_code == 429:
                self.stats["429"] += 1
                log.info("%s: 429, holding off %.0fs", what, _retry_after(exc))
                return _retry_after(exc)
            log.info("%s failed: %s", what, exc.description)
        except Exception as exc:  # network faults, broken chunked answers, invalid JSON: next time
            log.info("%s failed: %r", what, exc)
        return 0.0


def _rich(markdown: str) -> types.InputRichMessage:
    return types.InputRichMessage(markdown=markdown)


def _retry_after(exc: ApiTelegramException) -> float:
    parameters = (exc.result_json or {}).get("parameters") or {}
    try:
        return max(float(parameters.get("retry_after", 1)), 0.0)
    except (TypeError, ValueError):
        return 1.0


def _is_entity_error(exc: TelegramError) -> bool:
    return exc.code == 400 and ("parse entities" in exc.description or "entities" in exc.description.lower())


def _is_rich_rejection(exc: TelegramError) -> bool:
    """A 400 about the rich content itself (RICH_MESSAGE_*_INVALID, parse errors, limits).

    An older server ignores `rich_message` in editMessageText and finds no text: that is one too.
    """
    text = exc.description.lower()
    return exc.code == 400 and any(s in text for s in ("rich", "parse", "text is empty", "too long"))
