"""Conversations belong to places: private history never reaches a group, forum topics and group
members each have their own, settings follow the user, and a failed turn never loses the history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import ALICE, BOB, GROUP, Harness, Reply, tiny_bot


def contents(h: Harness, user: int = ALICE, chat: int | None = None, thread: int | None = None) -> list[str]:
    return [m.content for m in h.session(user, chat, thread).messages]


def request_text(body: dict[str, object]) -> str:
    return "\n".join(str(m["content"]) for m in body["messages"])  # type: ignore[index, union-attr]


def test_private_history_never_reaches_a_group_answer(harness: Harness) -> None:
    harness.ask("my salary is 123456, keep it secret")
    answer = harness.ask("@test_bot summarise what we discussed", chat=GROUP)
    assert answer == "echo: summarise what we discussed"
    group_request = request_text(harness.chat_requests()[-1])
    assert "123456" not in group_request and "secret" not in group_request
    # The private conversation goes on where it was, untouched by the group turn.
    assert harness.ask("and in private?") == "echo: and in private?"
    assert "123456" in request_text(harness.chat_requests()[-1])
    assert "summarise" not in request_text(harness.chat_requests()[-1])
    assert contents(harness, chat=GROUP) == [
        "summarise what we discussed", "echo: summarise what we discussed"]


def test_group_members_and_forum_topics_have_their_own_conversations(harness: Harness) -> None:
    def say_in(topic: int, text: str, user: int = ALICE) -> None:
        before = len(harness.tg.messages(GROUP))
        harness.tg.send_text(user, f"@test_bot {text}", chat_id=GROUP, message_thread_id=topic,
                             is_topic_message=True)
        harness.tg.wait_messages(GROUP, before + 1)
        harness.idle()

    say_in(5, "topic five")
    say_in(7, "topic seven")
    say_in(5, "still five")
    say_in(5, "bob here", user=BOB)
    assert contents(harness, chat=GROUP, thread=5) == [
        "topic five", "echo: topic five", "still five", "echo: still five"]
    assert contents(harness, chat=GROUP, thread=7) == ["topic seven", "echo: topic seven"]
    assert contents(harness, BOB, chat=GROUP, thread=5) == ["bob here", "echo: bob here"]
    assert "topic seven" not in request_text(harness.chat_requests()[2])
    assert "topic five" not in request_text(harness.chat_requests()[3])  # Bob's request


def test_reply_threads_in_a_plain_supergroup_are_not_topics(harness: Harness) -> None:
    harness.tg.send_text(ALICE, "@test_bot one", chat_id=GROUP, message_thread_id=11)
    harness.tg.wait_messages(GROUP, 1)
    harness.idle()
    assert contents(harness, chat=GROUP) == ["one", "echo: one"]


def test_settings_follow_the_user_into_groups(harness: Harness) -> None:
    harness.ask("/model gpt-5.4")
    harness.ask("/system Answer like a pirate.")
    harness.ask("@test_bot ahoy", chat=GROUP)
    body = harness.chat_requests()[-1]
    assert body["model"] == "gpt-5.4"
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}  # type: ignore[index]


def test_sessions_survive_a_restart_in_their_places(start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    h.ask("private note")
    h.ask("@test_bot group note", chat=GROUP)
    h.bot.shutdown(grace=2)
    again = start_bot()
    assert contents(again) == ["private note", "echo: private note"]
    assert contents(again, chat=GROUP) == ["group note", "echo: group note"]


def test_a_failed_turn_that_needed_a_reset_keeps_the_history(start_bot: Callable[..., Harness],
                                                             tmp_path: Path) -> None:
    h = tiny_bot(start_bot, tmp_path, SYSTEM_PROMPT="Be brief.")
    sentence = "The quick brown fox jumps over the lazy dog again and again. " * 3
    while h.session().prompt_tokens(extra=60) <= 400 - 50:  # until the next message needs a reset
        h.ask(sentence)
    before = contents(h)
    assert len(before) >= 4
    # The next message no longer fits beside the history: it needs a reset, and the request fails.
    h.llm.script(Reply.server_error())
    h.llm.script(Reply.server_error())
    answer = h.ask(sentence + " more")
    assert "not answering right now" in answer and "started a new one" not in answer
    assert [m["role"] for m in h.chat_requests()[-1]["messages"]] == ["system", "user"]
    assert contents(h) == before
    h.bot.shutdown(grace=2)
    assert contents(start_bot(MODELS_FILE=str(tmp_path / "models.toml"), DEFAULT_MODEL="tiny")) == before
