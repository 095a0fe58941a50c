"""The sender against the fake Telegram (no bot): topics, rich and ephemeral fallbacks, best effort."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import telebot
from telebot import apihelper

from limiter import RateLimiter
from sender import RichRefused, Sender
from tests.fakes.telegram import FakeTelegram

GROUP = -100321


@pytest.fixture
def tg(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    with FakeTelegram(rate_limit=False) as fake:  # flood control has its own tests
        monkeypatch.setattr(apihelper, "API_URL", fake.api_url)
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sender(tg: FakeTelegram, sleeps: list[float]) -> Sender:
    bot = telebot.TeleBot(tg.token, threaded=False)
    fast = RateLimiter(private_rate=100, group_rate=100, burst=100, global_rate=100)
    return Sender(bot, fast, outage_patience=5, sleep=sleeps.append)


def test_everything_goes_to_the_topic(tg: FakeTelegram, sender: Sender) -> None:
    topic = tg.create_topic(GROUP, "Ideas")
    long_html = "\n\n".join(f"<b>Part {i}</b> " + "word " * 500 for i in range(3))
    sent = sender.send_html(GROUP, long_html, thread_id=topic)
    assert len(sent) >= 2 and all(m.message_thread_id == topic for m in sent)
    sender.edit_part(GROUP, sent[0].message_id, "<i>edited</i>")
    assert sender.typing(GROUP, topic) == 0
    sender.draft(7, 5, "draft in a private topic", thread_id=3)
    assert tg.chat_actions_in(GROUP) == [("typing", topic)]
    assert tg.active_draft(7).thread_id == 3
    assert [m["payload"].get("message_thread_id") for m in tg.message_objects(GROUP)] == [topic] * len(sent)


def test_a_bad_html_part_falls_back_to_plain_text_everywhere(tg: FakeTelegram, sender: Sender) -> None:
    [message] = sender.send_html(5, "<b>unclosed & raw")
    sender.edit_part(5, message.message_id, "<i>again unclosed")
    sender.draft(5, 9, "<u>and again")
    assert tg.messages(5) == ["again unclosed"]
    assert tg.active_draft(5).text == "and again"
    assert sender.stats["plain_fallbacks"] == 3


def test_typing_and_callback_answers_never_wait_out_a_429(tg: FakeTelegram, sender: Sender,
                                                         sleeps: list[float]) -> None:
    tg.fail_next("sendChatAction", 429, "Too Many Requests: retry after 30", retry_after=30)
    assert sender.typing(5) == 30.0
    tg.fail_next("answerCallbackQuery", 429, "Too Many Requests: retry after 12", retry_after=12)
    sender.answer_callback("123")
    assert sleeps == []
    assert [c.status for c in tg.calls] == [429, 429]  # one try each


def test_typing_survives_a_broken_connection(sender: Sender, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")

    monkeypatch.setattr(sender.bot, "send_chat_action", broken)
    assert sender.typing(5) == 0.0


def test_rich_refused_by_an_older_server_is_remembered(tg: FakeTelegram, sender: Sender) -> None:
    tg.rich_methods = False
    for _ in range(3):
        with pytest.raises(RichRefused):
            sender.send_rich(5, "**hi**")
    assert sender.rich_available is False
    assert len(tg.calls_of("sendRichMessage")) == 1  # asked once, then remembered until restart


def test_a_rejected_rich_message_does_not_disable_rich_messages(tg: FakeTelegram, sender: Sender) -> None:
    with pytest.raises(RichRefused) as refused:
        sender.send_rich(5, "x" * 32_769)
    assert refused.value.description == "Bad Request: RICH_MESSAGE_TOO_LONG"
    assert sender.rich_available
    message = sender.send_rich(5, "## ok")
    assert message is not None and tg.messages(5) == ["ok"]
    with pytest.raises(RichRefused):
        sender.edit_rich(5, message.message_id, "<blink>no</blink>")


def test_ephemeral_replies_fall_back_to_everyone_where_refused(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_text(42, "/t", chat_id=GROUP)
    sender.send_html(GROUP, "<b>yours</b>", reply_to=1, ephemeral_for=42)
    assert [m["text"] for m in tg.ephemeral_messages(GROUP, receiver=42)] == ["yours"]
    assert tg.messages(GROUP) == []
    tg.ephemeral_refused.add(GROUP)
    sender.send_html(GROUP, "first", reply_to=1, ephemeral_for=42)
    sender.send_html(GROUP, "second", reply_to=1, ephemeral_for=42)
    assert tg.messages(GROUP) == ["first", "second"]
    refused = [c for c in tg.calls_of("sendMessage") if c.status == 400]
    assert len(refused) == 1  # the refusal is remembered for the chat
    assert sender.stats["ephemeral_fallbacks"] == 1


def test_ephemeral_message_edits(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_text(42, "/model", chat_id=GROUP)
    [sent] = sender.send_html(GROUP, "pick one", ephemeral_for=42)
    sender.edit_part(GROUP, sent.ephemeral_message_id, "<b>picked</b>", ephemeral_for=42)
    assert tg.ephemeral_messages(GROUP, receiver=42)[0]["text"] == "picked"


def test_a_refusal_about_one_receiver_is_not_remembered(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_text(42, "/t", chat_id=GROUP)
    sender.send_html(GROUP, "for a stranger", ephemeral_for=77)  # not a member: Telegram refuses him
    sender.send_html(GROUP, "for a member", ephemeral_for=42)
    assert tg.messages(GROUP) == ["for a stranger"]
    assert [m["text"] for m in tg.ephemeral_messages(GROUP)] == ["for a member"]
