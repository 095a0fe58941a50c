"""Showing an answer while it is generated, then delivering it whole.

Private chats get a draft that previews the part being written; the finished answer is then sent as
messages. Groups, and chats where drafts are refused, get a message that is edited as the answer grows,
with a new message for each further part. Everything goes to the forum topic the question came from.

Previews never wait: each takes a token from the limiter when one is free for it (a chat that shows
nothing yet before refreshes of chats that do) and is skipped otherwise; the final text is always sent
in full and goes ahead of every preview. With rich formatting the answer goes as rich messages (the
model's Markdown, parsed by Telegram); a part Telegram refuses goes the classic way, once. While a
model reasons, the preview shows a "Thinking…" line with the end of its reasoning; the answer replaces
it, and reasoning is never part of the final message.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass

import render
import richtext
from sender import RichRefused, Sender, TelegramError

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0
EXCERPT = 240  # characters of reasoning shown under "Thinking…"
STREAM_MARK_EVERY = 5.0  # seconds between reminding the limiter that this answer is still streaming


class TypingTicker:
    """One thread that keeps "typing…" showing in every chat (and topic) still waiting for a first token.

    Best-effort: a failed status is skipped, a 429 defers that chat's next one; nothing stops the thread.
    """

    def __init__(self, sender: Sender, every: float = TYPING_EVERY) -> None:
        self._sender = sender
        self._every = every
        self._due: dict[tuple[int, int | None], float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="typing", daemon=True)
        self._thread.start()

    def start(self, chat_id: int, thread_id: int | None = None) -> None:
        with self._cond:
            self._due[(chat_id, thread_id)] = 0.0
            self._cond.notify()

    def stop(self, chat_id: int, thread_id: int | None = None) -> None:
        with self._cond:
            self._due.pop((chat_id, thread_id), None)

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
                ready = [key for key, due in self._due.items() if due <= now]
                for key in ready:
                    self._due[key] = now + self._every
                if not ready:
                    next_due = min(self._due.values(), default=now + 60)
                    self._cond.wait(timeout=max(0.05, next_due - now))
                    continue
            for chat, thread in ready:
                try:
                    hold = self._sender.typing(chat, thread)
                except Exception:  # the sender swallows Telegram's faults; this is for our own bugs
                    log.exception("typing status for chat %s failed", chat)
                    hold = 0.0
                if hold > self._every:
                    with self._cond:
                        if (chat, thread) in self._due:
                            self._due[(chat, thread)] = time.monotonic() + hold


@dataclass
class _Shown:
    """A message of this answer and what it holds: HTML, or rich Markdown."""

    message_id: int
    content: str
    rich: bool


class LiveReply:
    """One answer in one chat: throttled previews, then the whole text.

    Parts of the answer that are complete (all but the one being written) are sent as messages as
    soon as they are done; only the last part is previewed, as a draft or an edited message.
    """

    def __init__(self, sender: Sender, chat_id: int, draft_id: int, *, reply_to: int | None,
                 use_drafts: bool, interval: float, thread_id: int | None = None, rich: bool = False,
                 thinking: str = "Thinking…") -> None:
        self.sender = sender
        self.chat_id = chat_id
        self.draft_id = draft_id
        self.reply_to = reply_to
        self.use_drafts = use_drafts
        self.interval = interval
        self.thread_id = thread_id
        self.thinking = thinking  # the label over the reasoning excerpt, in the user's language
        self.drafts_refused = False
        self._want_rich = rich
        self._key = (chat_id, draft_id)
        self._last_preview = 0.0
        self._marked = time.monotonic()
        self._shown = False
        self._pieces: list[str] = []  # the answer so far, joined only when a preview is due
        self._thought = ""  # the end of the reasoning so far
        self._messages: list[_Shown] = []  # sent so far, in order
        self._slot = 0  # messages before this one hold finished parts; this one is the live preview
        self._parts_done = 0  # parts of the answer sent in final form while streaming
        self._refused: set[str] = set()  # rich parts Telegram refused: classic from then on
        sender.limiter.stream_active(self._key)

    @property
    def rich(self) -> bool:
        return self._want_rich and self.sender.rich_available

    # -- while streaming ----------------------------------------------------------------------

    def add(self, piece: str) -> None:
        """Take the next piece of the answer; preview the answer so far when a preview is due."""
        self._pieces.append(piece)
        self._tick()

    def add_reasoning(self, piece: str) -> None:
        """Take the next piece of the model's reasoning: shown only until the answer begins."""
        self._thought = (self._thought + piece)[-4 * EXCERPT:]
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._marked >= STREAM_MARK_EVERY:
            self._marked = now
            self.sender.limiter.stream_active(self._key)
        if now - self._last_preview < self.interval:
            return
        if not self.sender.limiter.try_preview(self.chat_id, first=not self._shown):
            return  # the next piece tries again
        self._last_preview = now
        try:
            self._preview("".join(self._pieces))
        except TelegramError as exc:
            # A preview that fails costs nothing: the final text is sent whole anyway.
            log.info("preview in chat %s failed: %s", self.chat_id, exc.description)

    def _preview(self, answer: str) -> None:
        if not answer.strip():
            if self._thought.strip():
                self._live(*self._thinking())
            return
        rich = self.rich
        parts = richtext.split(richtext.escape(answer)) if rich else render.render(answer)
        if not parts:
            return  # only markup so far: the first text that shows will go at once
        if len(parts) - 1 > self._parts_done:
            self._slot = self._deliver(parts[self._parts_done:-1], self._slot, rich)
            self._parts_done = len(parts) - 1
        self._live(parts[-1], rich)

    def _thinking(self) -> tuple[str, bool]:
        """The live preview while the model reasons: the label and the end of its reasoning."""
        excerpt = " ".join(self._thought.split())
        if len(excerpt) > EXCERPT:
            cut = excerpt[-EXCERPT:]
            excerpt = "…" + cut[cut.find(" ") + 1:] if " " in cut else "…" + cut
        if self.rich and self.use_drafts and not self.drafts_refused:
            return f"<tg-thinking>{richtext.html_text(excerpt or self.thinking)}</tg-thinking>", True
        if self.rich:  # the thinking block exists in drafts only
            quote = "\n\n" + richtext.plain(excerpt) if excerpt else ""
            return richtext.italic_note(self.thinking) + quote, True
        quote = f"\n<blockquote>{html.escape(excerpt, quote=False)}</blockquote>" if excerpt else ""
        return f"<i>{html.escape(self.thinking)}</i>{quote}", False

    def _live(self, content: str, rich: bool) -> None:
        """Show the part being written: as the chat's draft, or in the live message."""
        if self.use_drafts and not self.drafts_refused:
            try:
                if rich:
                    self.sender.draft_rich(self.chat_id, self.draft_id, content, thread_id=self.thread_id)
                else:
                    self.sender.draft(self.chat_id, self.draft_id, content, thread_id=self.thread_id)
                self._shown = True
                return
            except RichRefused:
                return  # half-written Markdown Telegram cannot parse yet: the next preview may do
            except TelegramError as exc:
                if exc.code == 429:
                    return
                log.info("drafts refused in chat %s (%s): editing a message instead",
                         self.chat_id, exc.description)
                self.drafts_refused = True
        self._put(self._slot, content, rich, preview=True)

    # -- the whole answer ---------------------------------------------------------------------

    def close(self) -> None:
        """The stream has ended (however it ended): previews no longer keep budget for it."""
        self.sender.limiter.stream_closed(self._key, self.chat_id)

    def finish(self, markdown: str, notes_html: str = "") -> None:
        """Deliver the whole answer (notes after it), replacing any preview."""
        self.close()
        parts: list[str] = []
        rich = self.rich
        if rich:
            notes = [richtext.italic_note(render.html_to_text(n)) for n in notes_html.split("\n\n")]
            parts = richtext.split("\n\n".join(p for p in (richtext.escape(markdown), *notes) if p.strip()))
        if not parts:
            rich = False
            html_text = "\n\n".join(p for p in (render.markdown_to_html(markdown), notes_html) if p)
            parts = render.split_html(html_text) or ["…"]
        slot = self._deliver(parts, 0, rich)
        for i in range(slot, len(self._messages)):
            self._put(i, "…", False)  # the final text came out shorter than a preview (rare)

    def _deliver(self, parts: list[str], slot: int, rich: bool) -> int:
        """Put each part in its final form from message `slot` on; the slot after them."""
        for part in parts:
            if rich and part not in self._refused and self.sender.rich_available and richtext.fits(part):
                try:
                    self._put(slot, part, True)
                    slot += 1
                    continue
                except RichRefused:
                    self._refused.add(part)  # not delivered: this part goes the classic way, once
            for piece in render.render(part) if rich else [part]:
                self._put(slot, piece, False)
                slot += 1
        return slot

    def _put(self, index: int, content: str, rich: bool, preview: bool = False) -> None:
        """Make message `index` of this answer hold `content`: send it, or edit it if it differs."""
        if index < len(self._messages):
            shown = self._messages[index]
            if (shown.content, shown.rich) != (content, rich):
                if rich:
                    self.sender.edit_rich(self.chat_id, shown.message_id, content, preview=preview)
                else:
                    self.sender.edit_part(self.chat_id, shown.message_id, content, preview=preview)
                self._messages[index] = _Shown(shown.message_id, content, rich)
            return
        reply = self.reply_to if index == 0 else None
        if rich:
            sent = self.sender.send_rich(self.chat_id, content, reply_to=reply, thread_id=self.thread_id,
                                         preview=preview)
        else:
            sent = self.sender.send_part(self.chat_id, content, reply_to=reply, thread_id=self.thread_id,
                                         preview=preview)
        if sent is not None:
            self._messages.append(_Shown(sent.message_id, content, rich))
            self._shown = True
