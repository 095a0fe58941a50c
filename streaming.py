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
    """One answer in one chat: throttled previews, then the whole text.

    Parts of the answer that are complete (all but the one being written) are sent as messages as
    soon as they are done; only the last part is previewed, as a draft or an edited message.
    """

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
        self._shown = False
        self._pieces: list[str] = []  # the answer so far, joined only when a preview is due
        # The messages sent so far and the HTML each one holds.
        self._messages: list[tuple[int, str]] = []

    def add(self, piece: str) -> None:
        """Take the next piece of the answer; preview the answer so far when a preview is due."""
        self._pieces.append(piece)
        now = time.monotonic()
        if now - self._last_preview < self.interval:
            return
        limiter = self.sender.limiter
        # A chat that shows nothing yet goes first; refreshes leave budget for final messages.
        spare = PREVIEW_SPARE * limiter.global_rate if self._shown else 0.0
        if limiter.wait_time(self.chat_id, spare=spare) > 0:
            return  # the next piece tries again
        parts = render.render("".join(self._pieces))
        if not parts:
            return  # only white space so far: the first text that shows will go at once
        self._last_preview = now
        try:
            for i, part in enumerate(parts[:-1]):
                if i >= len(self._messages) - 1:  # new, or the live message that is now complete
                    self._put(i, part)
            self._preview(len(parts) - 1, parts[-1])
        except TelegramError as exc:
            # A preview that fails costs nothing: the final text is sent whole anyway.
            log.info("preview in chat %s failed: %s", self.chat_id, exc.description)

    def finish(self, markdown: str, notes_html: str = "") -> None:
        """Deliver the whole answer (notes after it), replacing any preview."""
        html = "\n\n".join(p for p in (render.markdown_to_html(markdown), notes_html) if p)
        parts = render.split_html(html) or ["…"]
        for i, part in enumerate(parts):
            self._put(i, part)
        for i in range(len(parts), len(self._messages)):
            self._put(i, "…")  # the final text came out shorter than a preview (rare)

    def _preview(self, index: int, html: str) -> None:
        if self.use_drafts and not self.drafts_refused:
            try:
                self.sender.draft(self.chat_id, self.draft_id, html)
                self._shown = True
                return
            except TelegramError as exc:
                if exc.code == 429:
                    return
                log.info("drafts refused in chat %s (%s): editing a message instead",
                         self.chat_id, exc.description)
                self.drafts_refused = True
        self._put(index, html, patience=10)

    def _put(self, index: int, html: str, patience: float | None = None) -> None:
        """Make message `index` of this answer hold `html`: send it, or edit it if it differs."""
        if index < len(self._messages):
            message_id, shown = self._messages[index]
            if shown != html:
                self.sender.edit_part(self.chat_id, message_id, html, patience=patience)
                self._messages[index] = (message_id, html)
            return
        sent = self.sender.send_part(self.chat_id, html, reply_to=self.reply_to if index == 0 else None)
        if sent is not None:
            self._messages.append((sent.message_id, html))
            self._shown = True
