"""The reply sender: the only code that sends to Telegram.

It throttles every message-producing call per chat and overall (Telegram allows
about one message per second per chat, 20 per minute in groups, 30 per second
in all), waits out a 429's `retry_after`, treats "message is not modified" as
success, retries through network faults and 5xx, splits long HTML at 4096
UTF-16 units, and resends a part as plain text when Telegram rejects its
entities: the user always gets the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from telebot import TeleBot, apihelper, types
from telebot.apihelper import ApiException, ApiHTTPException, ApiTelegramException

import render

log = logging.getLogger(__name__)
T = TypeVar("T")


class TelegramError(Exception):
    """Telegram refused a call for good (a 400 we cannot work around, or a long outage)."""

    def __init__(self, description: str, code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


class FileTooBig(TelegramError):
    """A file over the download cap: Telegram's own (getFile: "file is too big") or the caller's."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    blocked_until: float = 0.0


class RateLimiter:
    """Token buckets per chat plus one global bucket; `acquire` blocks until a call may go."""

    # A little under Telegram's limits: network jitter must not bring two calls closer than allowed.
    def __init__(self, private_rate: float = 0.9, group_rate: float = 18 / 60, burst: float = 3,
                 global_rate: float = 28.0) -> None:
        self.private_rate, self.group_rate, self.burst = private_rate, group_rate, burst
        self.global_rate = global_rate
        self._lock = threading.Lock()
        self._chats: dict[int, _Bucket] = {}
        self._global = _Bucket(global_rate, time.monotonic())

    def _rate(self, chat_id: int) -> float:
        return self.private_rate if chat_id > 0 else self.group_rate

    def _refill(self, bucket: _Bucket, rate: float, capacity: float, now: float) -> None:
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now

    def wait_time(self, chat_id: int, spare: float = 0.0) -> float:
        """Seconds until a call to this chat may go, leaving `spare` global calls for others."""
        with self._lock:
            return self._wait(chat_id, time.monotonic(), spare)

    def _wait(self, chat_id: int, now: float, spare: float = 0.0) -> float:
        rate = self._rate(chat_id)
        bucket = self._chats.setdefault(chat_id, _Bucket(self.burst, now))
        self._refill(bucket, rate, self.burst, now)
        self._refill(self._global, self.global_rate, self.global_rate, now)
        waits = [bucket.blocked_until - now, (1 - bucket.tokens) / rate,
                 (1 + spare - self._global.tokens) / self.global_rate]
        return max(0.0, *waits)

    def acquire(self, chat_id: int, deadline: float | None = None) -> bool:
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._wait(chat_id, now)
                if wait <= 0:
                    self._chats[chat_id].tokens -= 1
                    self._global.tokens -= 1
                    return True
            if deadline is not None and now + wait > deadline:
                return False
            time.sleep(min(wait, 1.0))

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429: nothing more to this chat for `seconds`."""
        with self._lock:
            bucket = self._chats.setdefault(chat_id, _Bucket(0, time.monotonic()))
            bucket.blocked_until = max(bucket.blocked_until, time.monotonic() + seconds)
            bucket.tokens = min(bucket.tokens, 0)


class Sender:
    """Safe, throttled calls to Telegram for one bot."""

    def __init__(self, bot: TeleBot, limiter: RateLimiter | None = None, outage_patience: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bot = bot
        self.limiter = limiter or RateLimiter()
        self.outage_patience = outage_patience
        self._sleep = sleep
        self.stats = {"429": 0, "plain_fallbacks": 0, "retries": 0}

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
                    retry_after = float((exc.result_json.get("parameters") or {}).get("retry_after", 1))
                    self.stats["429"] += 1
                    log.warning("429 from Telegram for chat %s: waiting %.0fs", chat_id, retry_after)
                    if chat_id is not None:
                        self.limiter.penalize(chat_id, retry_after)
                    if not throttle:
                        self._sleep(retry_after)
                    if time.monotonic() + retry_after > deadline:
                        raise TelegramError(exc.description, 429) from exc
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

    # -- messages -----------------------------------------------------------------------------

    def send_html(self, chat_id: int, html: str, reply_to: int | None = None,
                  markup: types.InlineKeyboardMarkup | None = None) -> list[types.Message]:
        """Send HTML of any length: split at the limit, each part falling back to plain text."""
        parts = render.split_html(html) or ["…"]
        sent = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            sent.append(self.send_part(chat_id, part, reply_to=reply_to if i == 0 else None,
                                       markup=markup if last else None))
        return [m for m in sent if m is not None]

    def send_part(self, chat_id: int, html: str, reply_to: int | None = None,
                  markup: types.InlineKeyboardMarkup | None = None) -> types.Message | None:
        """One part (at most 4096 UTF-16 units), as HTML or, if refused, as plain text."""
        reply = types.ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            return self.call(chat_id, self.bot.send_message, chat_id, html, parse_mode="HTML",
                             reply_parameters=reply, reply_markup=markup,
                             link_preview_options=types.LinkPreviewOptions(is_disabled=True))
        except TelegramError as exc:
            if not _is_entity_error(exc):
                raise
        self.stats["plain_fallbacks"] += 1
        log.warning("Telegram rejected the HTML of a part; sending it as plain text")
        return self.call(chat_id, self.bot.send_message, chat_id, render.html_to_text(html) or "…",
                         reply_parameters=reply, reply_markup=markup)

    def edit_part(self, chat_id: int, message_id: int, html: str,
                  markup: types.InlineKeyboardMarkup | None = None, patience: float | None = None) -> None:
        try:
            self.call(chat_id, self.bot.edit_message_text, html, chat_id, message_id, parse_mode="HTML",
                      reply_markup=markup, link_preview_options=types.LinkPreviewOptions(is_disabled=True),
                      patience=patience)
            return
        except TelegramError as exc:
            if not _is_entity_error(exc):
                raise
        self.stats["plain_fallbacks"] += 1
        self.call(chat_id, self.bot.edit_message_text, render.html_to_text(html) or "…", chat_id,
                  message_id, reply_markup=markup, patience=patience)

    def draft(self, chat_id: int, draft_id: int, html: str) -> None:
        """Show `html` as the chat's draft; raises TelegramError when drafts are refused."""
        try:
            self.call(chat_id, self.bot.send_message_draft, chat_id, draft_id, html, parse_mode="HTML",
                      can_stop=True, patience=10)
        except TelegramError as exc:
            if not _is_entity_error(exc):
                raise
            self.call(chat_id, self.bot.send_message_draft, chat_id, draft_id, render.html_to_text(html),
                      can_stop=True, patience=10)

    def typing(self, chat_id: int) -> None:
        try:
            self.call(chat_id, self.bot.send_chat_action, chat_id, "typing", throttle=False, patience=5)
        except TelegramError as exc:
            log.debug("chat action failed: %s", exc)

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

    def answer_callback(self, callback_id: str, text: str | None = None) -> None:
        try:
            self.call(None, self.bot.answer_callback_query, callback_id, text, throttle=False, patience=10)
        except TelegramError as exc:  # too old or already answered: the user just sees the spinner stop
            log.info("answerCallbackQuery failed: %s", exc)


def _is_entity_error(exc: TelegramError) -> bool:
    return exc.code == 400 and ("parse entities" in exc.description or "entities" in exc.description.lower())
