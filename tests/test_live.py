"""Fast unit tests of the streaming parts: RateLimiter, LiveReply and TypingTicker, without servers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from limiter import RateLimiter
from sender import RichRefused, TelegramError
from streaming import LiveReply, TypingTicker

# -- RateLimiter -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**kwargs: Any) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(clock=clock, **kwargs), clock


def drain(lim: RateLimiter, first_chat: int = 10_000) -> int:
    """Spend the global bucket on first previews of fresh chats; how many went."""
    n = 0
    while lim.try_preview(first_chat + n, first=True):
        n += 1
    lim.forget_preview(first_chat + n)
    return n


def test_previews_use_the_whole_global_budget_when_few_answers_stream() -> None:
    lim, clock = limiter(global_rate=30)
    assert drain(lim) == 29  # the bucket holds one token less than Telegram's
    clock.now += 0.1
    assert drain(lim, 20_000) == 3  # refilled at the full 30/s


def test_a_chat_showing_nothing_goes_before_refreshes() -> None:
    lim, clock = limiter(global_rate=30)
    assert lim.try_preview(1, first=True)  # chat 1 shows text now
    drain(lim, 100)
    assert not lim.try_preview(2, first=True)  # chat 2 shows nothing and waits for budget
    clock.now += 1.5 / 30
    assert not lim.try_preview(1, first=False)  # the refresh yields to chat 2
    assert lim.try_preview(2, first=True)
    clock.now += 1 / 30
    assert lim.try_preview(1, first=False)  # nobody waits for a first preview any more


def test_a_waiting_final_message_goes_before_any_preview() -> None:
    lim, clock = limiter(global_rate=30)
    drain(lim)
    granted = threading.Event()
    final = threading.Thread(target=lambda: lim.acquire(5) and granted.set())
    final.start()
    assert wait_until(lambda: lim.waiting == 1)
    clock.now += 1.5 / 30  # one token (and a half) for someone
    assert not lim.try_preview(6, first=True)
    lim.penalize(7, 0)  # wakes the waiter at once (it would wake by itself within a second)
    assert granted.wait(2)
    final.join(2)
    assert lim.waiting == 0


def test_finals_are_served_in_arrival_order() -> None:
    lim = RateLimiter(global_rate=200, global_burst=1)
    lim.acquire(1)  # the bucket is empty: everyone below waits 5 ms for the one before
    order: list[int] = []
    threads = []
    for chat in range(10, 16):
        t = threading.Thread(target=lambda c=chat: lim.acquire(c) and order.append(c))
        t.start()
        arrived = len(threads) + 1
        assert wait_until(lambda n=arrived: lim.waiting + len(order) >= n)
        threads.append(t)
    for t in threads:
        t.join(5)
    assert order == list(range(10, 16))


def test_previews_leave_a_reserve_while_many_answers_stream() -> None:
    lim, clock = limiter(global_rate=30)
    for stream in range(70):
        lim.stream_active(("chat", stream))
    assert lim.reserve() == 70 - 2 * 29
    assert drain(lim) == 29 - 12
    assert lim.acquire(1, deadline=clock.now)  # a final message may take the reserve
    for stream in range(70):
        lim.stream_closed(("chat", stream), stream)
    assert lim.reserve() == 0


def test_per_chat_limit_and_429_penalty() -> None:
    lim, clock = limiter(burst=3, private_rate=1)
    assert [lim.try_preview(1, first=False) for _ in range(4)] == [True, True, True, False]
    assert lim.try_preview(2, first=False)  # another chat is not affected
    lim.penalize(2, 5)
    clock.now += 4.9
    assert not lim.try_preview(2, first=False)
    assert not lim.acquire(2, deadline=clock.now + 0.05)  # would pass the deadline: no wait
    clock.now += 0.2
    assert lim.try_preview(2, first=False)


def test_stale_marks_expire() -> None:
    lim, clock = limiter(global_rate=30)
    for stream in range(80):
        lim.stream_active(stream)
    drain(lim)
    assert not lim.try_preview(1, first=True)  # waiting for a first preview...
    clock.now += 40  # ...but it never tried again, and the streams were never closed
    lim.try_preview(2, first=False)
    assert lim.reserve() == 0
    assert lim.try_preview(3, first=False)


def wait_until(condition: Any, timeout: float = 5) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if condition():
            return True
        done.wait(0.005)
    return bool(condition())


# -- LiveReply -------------------------------------------------------------------------------------


@dataclass
class Sent:
    message_id: int


@dataclass
class FakeSender:
    """Records what LiveReply asks for; `refuse_rich` makes rich calls fail like Telegram would."""

    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(private_rate=1000, group_rate=1000,
                                                                     burst=1000, global_rate=1000))
    rich_available: bool = True
    refuse_rich: str | None = None  # "404" (no such method), or a substring of content to reject
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    _ids: int = 0

    def _new(self) -> Sent:
        self._ids += 1
        return Sent(self._ids)

    def _check_rich(self, content: str) -> None:
        if self.refuse_rich == "404":
            self.rich_available = False
            raise RichRefused("Not Found", 404)
        if self.refuse_rich and self.refuse_rich in content:
            raise RichRefused("Bad Request: RICH_MESSAGE_INVALID", 400)

    def draft(self, chat: int, draft_id: int, html: str, *, thread_id: int | None = None) -> None:
        self.calls.append(("draft", html, thread_id))

    def draft_rich(self, chat: int, draft_id: int, md: str, *, thread_id: int | None = None) -> None:
        self._check_rich(md)
        self.calls.append(("draft_rich", md, thread_id))

    def send_part(self, chat: int, html: str, reply_to: int | None = None, *, thread_id: int | None = None,
                  preview: bool = False) -> Sent:
        self.calls.append(("send", html, thread_id))
        return self._new()

    def send_rich(self, chat: int, md: str, *, reply_to: int | None = None, thread_id: int | None = None,
                  preview: bool = False) -> Sent:
        self._check_rich(md)
        self.calls.append(("send_rich", md, thread_id))
        return self._new()

    def edit_part(self, chat: int, message_id: int, html: str, *, preview: bool = False) -> None:
        self.calls.append(("edit", html, message_id))

    def edit_rich(self, chat: int, message_id: int, md: str, *, preview: bool = False) -> None:
        self._check_rich(md)
        self.calls.append(("edit_rich", md, message_id))

    def of(self, *kinds: str) -> list[str]:
        return [c[1] for c in self.calls if c[0] in kinds]


def live(sender: FakeSender, *, private: bool = True, rich: bool = False,
         thread: int | None = None) -> LiveReply:
    chat = 5 if private else -5
    return LiveReply(sender, chat, 77, reply_to=None if private else 3,  # type: ignore[arg-type]
                     use_drafts=private, interval=0, thread_id=thread, rich=rich)


def test_reasoning_shows_in_the_draft_then_the_answer_replaces_it() -> None:
    sender = FakeSender()
    reply = live(sender)
    for piece in ("Let me think ", "about <this> ", "carefully."):
        reply.add_reasoning(piece)
    reply.add("The answer ")
    reply.add("is 42.")
    reply.finish("The answer is 42.")
    drafts = sender.of("draft")
    assert drafts[0].startswith("<i>Thinking…</i>")
    assert "about &lt;this&gt; carefully." in drafts[-3]
    assert drafts[-1] == "The answer is 42."
    assert sender.of("send") == ["The answer is 42."]  # the final message holds no reasoning


def think_then_answer(reply: LiveReply, thought: str, answer: str, notes: str = "") -> None:
    reply.add_reasoning(thought)
    reply.add(answer)
    reply.finish(answer, notes)


def test_reasoning_in_a_group_is_edited_into_the_answer() -> None:
    sender = FakeSender()
    think_then_answer(live(sender, private=False), "weighing options", "Yes.", "<i>(stopped)</i>")
    assert sender.of("send") == ["<i>Thinking…</i>\n<blockquote>weighing options</blockquote>"]
    assert sender.of("edit") == ["Yes.", "Yes.\n\n<i>(stopped)</i>"]


def test_long_reasoning_shows_only_its_end() -> None:
    sender = FakeSender()
    reply = live(sender)
    reply.add_reasoning(" ".join(f"step{i}" for i in range(500)))
    shown = sender.of("draft")[-1]
    assert "step499" in shown and "step0 " not in shown and "…step" in shown
    assert len(shown) < 400


def test_every_call_goes_to_the_topic() -> None:
    sender = FakeSender()
    reply = live(sender, private=False, thread=9)
    paragraphs = [f"Paragraph {i} " + "word " * 300 for i in range(4)]
    for p in paragraphs:
        reply.add(p + "\n\n")
    reply.finish("\n\n".join(paragraphs))
    sends = [c for c in sender.calls if c[0] == "send"]
    assert len(sends) >= 2 and all(c[2] == 9 for c in sends)


def test_first_preview_then_refreshes() -> None:
    sender = FakeSender()
    asked: list[bool] = []
    real = sender.limiter.try_preview
    sender.limiter.try_preview = lambda chat, first: asked.append(first) or real(chat, first)  # type: ignore[method-assign]
    reply = live(sender)
    reply.add("one ")
    reply.add("two ")
    assert asked == [True, False]


def test_rich_answer_with_a_thinking_block() -> None:
    sender = FakeSender()
    table = "| a | b |\n|---|---|\n| <x> | 2 |"
    think_then_answer(live(sender, rich=True), "hmm <b>", table, "<i>(stopped)</i>")
    assert sender.of("draft_rich")[0] == "<tg-thinking>hmm &lt;b&gt;</tg-thinking>"
    assert sender.of("send_rich") == ["| a | b |\n|---|---|\n| \\<x> | 2 |\n\n*(stopped)*"]
    assert sender.of("send", "draft") == []


def test_a_refused_rich_part_goes_classic_without_repeating_delivered_parts() -> None:
    sender = FakeSender(refuse_rich="SECOND")
    reply = live(sender, private=False, rich=True)
    answer = "FIRST " + "a " * 12_000 + "\n\nSECOND " + "b " * 5_000
    reply.finish(answer)
    [rich] = sender.of("send_rich")  # one rich message for the first 24,000 characters
    assert rich.startswith("FIRST") and "SECOND" not in rich
    classic = sender.of("send")  # the refused rest: classic messages of at most 4096 characters
    assert len(classic) == 3 and " ".join(classic).split() == ["SECOND", *["b"] * 5_000]


def test_a_server_without_rich_messages_gets_classic_ones() -> None:
    sender = FakeSender(refuse_rich="404")
    reply = live(sender, rich=True)
    reply.add("**bold**")
    reply.add(" and more")
    reply.finish("**bold** and more")
    assert sender.of("draft") == ["<b>bold</b> and more"]
    assert sender.of("send") == ["<b>bold</b> and more"]
    assert [c[0] for c in sender.calls if "rich" in c[0]] == []  # only the first, refused try


def test_a_draft_refused_for_half_written_markdown_is_just_skipped() -> None:
    sender = FakeSender(refuse_rich="$$")
    reply = live(sender, rich=True)
    reply.add("$$x")
    reply.add("^2$$ done")
    assert sender.of("draft_rich") == []  # both refused: nothing shown, nothing broken
    assert not reply.drafts_refused


# -- TypingTicker ----------------------------------------------------------------------------------


class TypingSender:
    def __init__(self, fail: dict[int, BaseException | float]) -> None:
        self.fail = fail
        self.calls: list[tuple[int, int | None]] = []
        self.cond = threading.Condition()

    def typing(self, chat: int, thread: int | None = None) -> float:
        with self.cond:
            self.calls.append((chat, thread))
            self.cond.notify_all()
        outcome = self.fail.get(chat, 0.0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def wait(self, n: int) -> list[tuple[int, int | None]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, 5), self.calls
            return list(self.calls)


def test_typing_survives_errors_and_a_429_defers_only_its_chat() -> None:
    sender = TypingSender({1: RuntimeError("chunked encoding broke"), 2: 30.0})
    ticker = TypingTicker(sender, every=0.05)  # type: ignore[arg-type]
    try:
        ticker.start(1)
        ticker.start(2)
        ticker.start(3, thread_id=7)
        calls = sender.wait(12)
    finally:
        ticker.close()
    assert calls.count((2, None)) == 1  # Telegram said retry in 30 s: not asked again meanwhile
    assert calls.count((1, None)) >= 3  # an exception did not kill the thread
    assert calls.count((3, 7)) >= 3


def test_typing_is_kept_per_topic() -> None:
    sender = TypingSender({})
    ticker = TypingTicker(sender, every=0.05)  # type: ignore[arg-type]
    try:
        ticker.start(-5, 1)
        ticker.start(-5, 2)
        ticker.stop(-5, 1)
        sender.wait(4)
        ticker.stop(-5, 2)
    finally:
        ticker.close()
    assert set(sender.calls) <= {(-5, 1), (-5, 2)}
    assert sender.calls.count((-5, 2)) >= 3


@pytest.mark.parametrize("code", [429, 400])
def test_a_failed_preview_costs_nothing(code: int) -> None:
    sender = FakeSender()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise TelegramError("no", code)

    sender.draft = refuse  # type: ignore[method-assign]
    reply = live(sender)
    reply.add("text")
    reply.finish("text")
    assert sender.of("send") == ["text"]
    assert reply.drafts_refused is (code == 400)


def test_answers_that_end_free_their_share_of_the_reserve() -> None:
    sender = FakeSender(limiter=RateLimiter(private_rate=1000, burst=1000, global_rate=30))
    replies = [LiveReply(sender, chat, 1, reply_to=None, use_drafts=True, interval=0)  # type: ignore[arg-type]
               for chat in range(1, 71)]
    assert sender.limiter.reserve() == 70 - 2 * sender.limiter.global_burst
    for reply in replies[:40]:
        reply.close()  # e.g. the message was too large: no answer, no finish
    for reply in replies[40:]:
        reply.finish("done")
    assert sender.limiter.reserve() == 0
