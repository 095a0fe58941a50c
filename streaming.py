"""Showing an answer while it is generated, then delivering it whole.

Private chats get a draft (`sendMessageDraft`) that previews the part being
written; the finished answer is then sent as messages. Groups, and chats where
drafts are refused, get a message that is edited as the answer grows, with a new
message for each further part. Previews are throttled per chat and skipped when
the chat's rate budget is spent; the final text is always sent in full.
"""

from __future__ import annotations

import logging
import threading
import time

import render
from sender import Sender, TelegramError

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0
# Previews leave this share of the global rate budget to final messages, which must not wait.
PREVIEW_SPARE = 0.3


class TypingTicker:
    """One thread that keeps "typing…" showing in every chat still waiting for a first token."""

    def __init__(self, sender: Sender, every: float = TYPING_EVERY) -> None:
        self._sender = sender
        self._every = every
        self._due: dict[int, float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="typing", daemon=True)
        self._thread.start()

    def start(self, chat_id: int) -> None:
        with self._cond:
            self._due[chat_id] = 0.0
            self._cond.notify()

    def stop(self, chat_id: int) -> None:
        with self._cond:
            self._due.pop(chat_id, None)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                ready = [chat for chat, due in self._due.items() if due <= now]
                for chat in ready:
                    self._due[chat] = now + self._every
                if not ready:
                    next_due = min(self._due.values(), default=now + 60)
                    self._cond.wait(timeout=max(0.05, next_due - now))
                    continue
            for chat in ready:
                self._sender.typing(chat)


class LiveReply:
    """One answer in one chat: throttled previews, then the whole text."""

    def __init__(self, sender: Sender, chat_id: int, draft_id: int, *, reply_to: int | None,
                 use_drafts: bool, interval: float) -> None:
        self.sender = sender
        self.chat_id = chat_id
        self.draft_id = draft_id
        self.reply_to = reply_to
        self.use_drafts = use_drafts
        self.interval = interval
        self.drafts_refused = False
        self._last_preview = 0.0
        # Edit mode: the messages shown so far and the HTML each one holds.
        self._messages: list[tuple[int, str]] = []

    def update(self, markdown: str) -> None:
        """Preview the answer so far, unless it is too soon or the chat's budget is spent."""
        now = time.monotonic()
        if now - self._last_preview < self.interval or not markdown.strip():
            return
        limiter = self.sender.limiter
        if limiter.wait_time(self.chat_id, spare=PREVIEW_SPARE * limiter.global_rate) > 0:
            return  # keep the budget for final messages; the next delta tries again
        self._last_preview = now
        parts = render.render(markdown)
        if not parts:
            return
        try:
            if self.use_drafts and not self.drafts_refused:
                try:
                    self.sender.draft(self.chat_id, self.draft_id, parts[-1])
                    return
                except TelegramError as exc:
                    if exc.code == 429:
                        return
                    log.info("drafts refused in chat %s (%s): editing a message instead",
                             self.chat_id, exc.description)
                    self.drafts_refused = True
            self._show(parts, final=False)
        except TelegramError as exc:
            # A preview that fails costs nothing: the final text is sent whole anyway.
            log.info("preview in chat %s failed: %s", self.chat_id, exc.description)

    def finish(self, markdown: str, prefix_html: str = "", suffix_html: str = "") -> None:
        """Deliver the whole answer (with notices around it), replacing any preview."""
        html = "\n\n".join(p for p in (prefix_html, render.markdown_to_html(markdown), suffix_html) if p)
        parts = render.split_html(html) or ["…"]
        self._show(parts, final=True)

    def _show(self, parts: list[str], final: bool) -> None:
        """Make the chat's messages hold `parts`: edit those shown, send the rest."""
        for i, part in enumerate(parts):
            if i < len(self._messages):
                message_id, shown = self._messages[i]
                if shown != part and (final or i == len(self._messages) - 1):
                    self.sender.edit_part(self.chat_id, message_id, part, patience=None if final else 10)
                    self._messages[i] = (message_id, part)
                continue
            if not final and i < len(parts) - 1:
                continue  # only the part being written is previewed
            sent = self.sender.send_part(self.chat_id, part, reply_to=self.reply_to if i == 0 else None)
            if sent is not None:
                self._messages.append((sent.message_id, part))
        if final and len(self._messages) > len(parts):
            for message_id, _ in self._messages[len(parts):]:
                self.sender.edit_part(self.chat_id, message_id, "…")
