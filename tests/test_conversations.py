"""End to end: the context strategies at a tiny window, several conversations per user (/new,
/history, resume and delete by button), private-chat topics, /retry and /export, each across a
restart of the bot."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import context
from tests.conftest import ALICE, GROUP, Harness, Reply, tiny_bot, unthrottled
from tests.fakes.openai import echo
from tokens import counter_for

SENTENCE = "The quick brown fox jumps over the lazy dog again and again. " * 3
NEXT = "One more question. " + SENTENCE + " Thanks!"  # the message that does not fit any more
SUMMARY = "Alice keeps telling the fox story."


def contents(h: Harness, thread: int | None = None) -> list[str]:
    return [m.content for m in h.session(thread=thread).messages]


def request_contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"]]


def summarizing(body: dict[str, Any]) -> Reply:
    """The fake model: a fixed summary for summary requests, an echo for everything else."""
    if str(body["messages"][0]["content"]).startswith("You condense"):
        return Reply(text=SUMMARY)
    return echo(body)


def fill(h: Harness) -> list[str]:
    """Chat (numbered turns) until NEXT no longer fits beside the history; the history."""
    turn, next_tokens = 0, counter_for("o200k_base").message("user", NEXT.strip())
    while h.session().prompt_tokens(extra=next_tokens) <= 400 - 50:
        h.ask(f"Turn {turn}. {SENTENCE}")
        turn += 1
    return contents(h)


def strategy_bot(start_bot: Callable[..., Harness], tmp_path: Path, strategy: str) -> Harness:
    return unthrottled(tiny_bot(start_bot, tmp_path, SYSTEM_PROMPT="Be brief.", CONTEXT_STRATEGY=strategy,
                                STREAM="false"))


def restarted(h: Harness, start_bot: Callable[..., Harness], tmp_path: Path, strategy: str) -> Harness:
    h.bot.shutdown(grace=2)
    return strategy_bot(start_bot, tmp_path, strategy)


def plain_bot(start_bot: Callable[..., Harness]) -> Harness:
    """Answers arrive whole, flood control off: these tests are about what is sent, not how fast."""
    return unthrottled(start_bot(STREAM="false"))


def db_rows(h: Harness, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(h.data_dir / "sessions.sqlite3") as db:
        return db.execute(sql, args).fetchall()


# -- at the context window --------------------------------------------------------------------------

def test_reset_is_the_default_and_t_says_so(harness: Harness) -> None:
    assert "When the context window is full (reset): the conversation starts afresh" in harness.ask("/t")


def test_trim_keeps_the_system_prompt_and_the_latest_turns(start_bot: Callable[..., Harness],
                                                          tmp_path: Path) -> None:
    h = strategy_bot(start_bot, tmp_path, "trim")
    assert "(trim): the oldest messages are left out" in h.ask("/t")
    before = fill(h)
    assert len(before) == 8
    answer = h.ask(NEXT)
    assert answer.startswith("echo: One more question.") and "its oldest messages are left out" in answer
    assert request_contents(h.chat_requests()[-1]) == ["Be brief.", *before[2:], NEXT.strip()]
    assert contents(h) == [*before[2:], NEXT.strip(), f"echo: {NEXT.strip()}"]
    again = restarted(h, start_bot, tmp_path, "trim")
    kept = contents(again)
    assert kept == contents(h)
    answer = again.ask(NEXT)
    assert answer == f"echo: {NEXT.strip()}"  # told once per conversation, and that survives a restart
    assert request_contents(again.chat_requests()[-1]) == ["Be brief.", *kept[4:], NEXT.strip()]


def test_summarize_replaces_the_oldest_turns_by_a_summary(start_bot: Callable[..., Harness],
                                                         tmp_path: Path) -> None:
    h = strategy_bot(start_bot, tmp_path, "summarize")
    h.llm.default = summarizing
    before = fill(h)
    requests = len(h.chat_requests())
    answer = h.ask(NEXT)
    assert answer.startswith("echo: One more question.") and "replaced by a summary" in answer
    assert not any(SUMMARY in text for text in h.tg.messages(ALICE))  # never shown as an answer
    summary, main = h.chat_requests()[requests:]
    assert summary.get("stream") is not True and summary["max_tokens"] == 50
    assert str(summary["messages"][0]["content"]).startswith("You condense")
    transcript = str(summary["messages"][1]["content"])
    # Turns 0-2 are summarised, of which the tiny model reads only what fits beside the instruction.
    assert transcript.startswith("User: Turn 1.") and "\n\nAssistant: echo: Turn 2." in transcript
    assert "Turn 3" not in transcript  # the latest turn stays verbatim
    note = context.note_text(SUMMARY)
    assert request_contents(main) == ["Be brief.", note, *before[6:], NEXT.strip()]
    assert [m["role"] for m in main["messages"]] == ["system", "system", "user", "assistant", "user"]
    assert contents(h) == [note, *before[6:], NEXT.strip(), f"echo: {NEXT.strip()}"]
    assert h.session().usage.requests == len(h.chat_requests())  # the summary counts as the user's
    again = restarted(h, start_bot, tmp_path, "summarize")
    assert contents(again) == contents(h)
    again.ask("After the restart.")
    assert request_contents(again.chat_requests()[-1])[:2] == ["Be brief.", note]


def test_a_failed_summary_trims_that_turn(start_bot: Callable[..., Harness], tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    h = strategy_bot(start_bot, tmp_path, "summarize")
    before = fill(h)
    h.llm.script(Reply.server_error())  # the summary request
    answer = h.ask(NEXT)
    assert answer.startswith("echo: One more question.") and "its oldest messages are left out" in answer
    assert request_contents(h.chat_requests()[-1]) == ["Be brief.", *before[2:], NEXT.strip()]
    assert contents(h) == [*before[2:], NEXT.strip(), f"echo: {NEXT.strip()}"]
    assert "trimming instead for this turn" in caplog.text
    again = restarted(h, start_bot, tmp_path, "summarize")
    assert contents(again) == contents(h)


# -- /new, /history ---------------------------------------------------------------------------------

def rows(message: dict[str, Any]) -> list[list[tuple[str, str]]]:
    return [[(b["text"], b["callback_data"]) for b in row]
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])]


def press(h: Harness, message: dict[str, Any], data: str) -> dict[str, Any]:
    """Press a button the message shows; the message once the bot has edited it."""
    chat = message["payload"]["chat"]["id"]
    edits = message["edit_count"]
    h.tg.press_button(ALICE, message["message_id"], chat, data)

    def edited() -> dict[str, Any] | None:
        found = [m for m in h.tg.message_objects(chat) if m["message_id"] == message["message_id"]]
        return found[0] if found and found[0]["edit_count"] > edits else None

    h.tg.wait_for(lambda: edited() is not None, timeout=10)
    h.idle()
    result = edited()
    assert result is not None
    return result


def history_message(h: Harness, thread: int | None = None) -> dict[str, Any]:
    before = len(h.tg.messages(ALICE))
    h.say("/history", message_thread_id=thread) if thread else h.say("/history")
    h.tg.wait_messages(ALICE, before + 1)
    h.idle()
    return h.tg.message_objects(ALICE)[-1]


def test_new_history_resume_and_delete_across_a_restart(start_bot: Callable[..., Harness]) -> None:
    h = plain_bot(start_bot)
    assert "already new and empty" in h.ask("/new")
    h.ask("alpha topic")
    assert "The previous one (messages: 2) is kept" in h.ask("/new")
    h.ask("beta topic")
    listing = history_message(h)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert [[text for text, _ in row] for row in rows(listing)] == [
        [f"✅ beta topic · {today}", "🗑"], [f"alpha topic · {today}", "🗑"]]
    alpha_open = rows(listing)[1][0][1]
    resumed = press(h, listing, alpha_open)
    assert "Continuing alpha topic (messages: 2)" in resumed["text"]
    assert rows(resumed)[0][0][0] == f"beta topic · {today}" and rows(resumed)[1][0][0].startswith("✅ alpha")
    h.ask("more alpha")
    assert request_contents(h.chat_requests()[-1])[1:] == ["alpha topic", "echo: alpha topic", "more alpha"]

    h.bot.shutdown(grace=2)
    h = plain_bot(start_bot)
    assert contents(h) == ["alpha topic", "echo: alpha topic", "more alpha", "echo: more alpha"]
    listing = history_message(h)
    assert rows(listing)[0][0][0].startswith("✅ alpha topic")  # the most recent first
    beta_delete = rows(listing)[1][1][1]
    confirm = press(h, listing, beta_delete)
    assert confirm["text"] == "Delete beta topic (messages: 2)? This cannot be undone."
    assert [text for text, _ in rows(confirm)[0]] == ["Delete", "Cancel"]
    done = press(h, confirm, rows(confirm)[0][0][1])
    assert done["text"].startswith("Deleted: beta topic\n")
    assert [row[0][0][:13] for row in rows(done)] == ["✅ alpha topic"]
    assert db_rows(h, "SELECT COUNT(*) FROM conversations WHERE title = 'beta topic'") == [(0,)]
    assert db_rows(h, "SELECT COUNT(*) FROM messages WHERE content LIKE '%beta%'") == [(0,)]

    assert h.ask("/history clear") == "Deleted every conversation you had here (1)."
    assert db_rows(h, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert db_rows(h, "SELECT COUNT(*) FROM conversations") == [(0,)]
    assert h.ask("/history") == "You have no saved conversations here yet."
    assert "/history clear" in h.ask("/history everything")
    h.bot.shutdown(grace=2)
    assert contents(plain_bot(start_bot)) == []


def test_a_deleted_conversations_button_says_it_is_gone(start_bot: Callable[..., Harness]) -> None:
    harness = plain_bot(start_bot)
    harness.ask("first")
    harness.ask("/new")
    harness.ask("second")
    listing = history_message(harness)
    first_id = rows(listing)[1][0][1].split(":")[-1]
    assert harness.ask("/history clear") == "Deleted every conversation you had here (2)."
    answered = set(harness.tg.callback_answers)
    after = press(harness, listing, f"hist:open:{first_id}")
    assert after["text"] == "You have no saved conversations here yet." and rows(after) == []
    [answer] = [a for q, a in harness.tg.callback_answers.items() if q not in answered]
    assert answer["text"] == "That conversation no longer exists."
    assert harness.session().messages == []


def test_history_in_a_group_is_shown_to_the_asking_user_alone(start_bot: Callable[..., Harness]) -> None:
    h = plain_bot(start_bot)
    h.ask("@test_bot group alpha", chat=GROUP)
    h.ask("/new", chat=GROUP)
    h.ask("@test_bot group beta", chat=GROUP)
    h.ask("in private")  # another chat: not listed in the group
    public = len(h.tg.messages(GROUP))
    h.say("/history", chat=GROUP)
    h.tg.wait_for(lambda: len(h.tg.ephemeral_messages(GROUP, receiver=ALICE)) == 1, timeout=10)
    h.idle()
    [listing] = h.tg.ephemeral_messages(GROUP, receiver=ALICE)
    assert [row[0][0].split(" · ")[0] for row in rows(listing)] == ["✅ group beta", "group alpha"]
    h.tg.press_ephemeral_button(ALICE, GROUP, listing["ephemeral_message_id"], rows(listing)[1][0][1])
    h.tg.wait_for(lambda: h.tg.ephemeral_messages(GROUP)[0]["edit_count"] == 1, timeout=10)
    h.idle()
    assert "Continuing group alpha" in h.tg.ephemeral_messages(GROUP)[0]["text"]
    assert len(h.tg.messages(GROUP)) == public  # nobody else saw any of it
    assert contents_in(h, GROUP) == ["group alpha", "echo: group alpha"]


def contents_in(h: Harness, chat: int) -> list[str]:
    return [m.content for m in h.session(chat=chat).messages]


# -- private-chat topics ----------------------------------------------------------------------------

def ask_in(h: Harness, thread: int, text: str) -> str:
    before = len(h.tg.messages(ALICE))
    h.say(text, message_thread_id=thread)
    h.tg.wait_messages(ALICE, before + 1)
    h.idle()
    return "\n".join(h.tg.messages(ALICE)[before:])


def test_private_topics_are_separate_conversations(start_bot: Callable[..., Harness]) -> None:
    h = plain_bot(start_bot)
    ask_in(h, 10, "apples")
    ask_in(h, 20, "pears")
    ask_in(h, 10, "more apples")
    assert request_contents(h.chat_requests()[-1])[1:] == ["apples", "echo: apples", "more apples"]
    assert contents(h, thread=20) == ["pears", "echo: pears"]
    # /retry and /export act on the topic's conversation.
    h.llm.script("apples, again")
    assert ask_in(h, 10, "/retry") == "apples, again"
    assert request_contents(h.chat_requests()[-1])[1:] == ["apples", "echo: apples", "more apples"]
    assert contents(h, thread=10) == ["apples", "echo: apples", "more apples", "apples, again"]
    ask_in(h, 20, "/export")
    [document] = h.tg.documents(ALICE)
    exported = document.data.decode()
    assert document.thread_id == 20 and "pears" in exported and "apple" not in exported
    # /new in one topic leaves the other alone.
    assert "is kept" in ask_in(h, 20, "/new")
    assert contents(h, thread=20) == [] and len(contents(h, thread=10)) == 4
    h.bot.shutdown(grace=2)
    h = plain_bot(start_bot)
    assert contents(h, thread=10) == ["apples", "echo: apples", "more apples", "apples, again"]
    assert contents(h, thread=20) == [] and contents(h) == []
    ask_in(h, 20, "kiwis")
    assert request_contents(h.chat_requests()[-1])[1:] == ["kiwis"]
    # /history in a topic, and its button, act on that topic: pears come back into topic 20.
    listing = history_message(h, thread=20)
    assert listing["payload"]["message_thread_id"] == 20
    pears = next(data for row in rows(listing) for text, data in row if text.startswith("pears"))
    assert "Continuing pears" in press(h, listing, pears)["text"]
    ask_in(h, 20, "more pears")
    assert request_contents(h.chat_requests()[-1])[1:] == ["pears", "echo: pears", "more pears"]
    assert contents(h, thread=10)[0] == "apples"
    # Every answer went to the topic it answers.
    topics = {m["text"]: m["payload"].get("message_thread_id") for m in h.tg.message_objects(ALICE)}
    assert topics["echo: apples"] == topics["apples, again"] == 10
    assert topics["echo: pears"] == topics["echo: kiwis"] == topics["echo: more pears"] == 20


# -- /retry -----------------------------------------------------------------------------------------

def test_retry_replaces_the_last_answer_across_a_restart(start_bot: Callable[..., Harness]) -> None:
    h = plain_bot(start_bot)
    assert h.ask("/retry") == "There is nothing to ask again in this conversation yet."
    h.ask("one")
    h.llm.script("a poor answer")
    h.ask("two")
    h.bot.shutdown(grace=2)
    h = plain_bot(start_bot)
    h.llm.script("a better answer")
    assert h.ask("/retry") == "a better answer"
    assert request_contents(h.chat_requests()[-1])[1:] == ["one", "echo: one", "two"]
    assert contents(h) == ["one", "echo: one", "two", "a better answer"]
    h.ask("three")
    assert "a poor answer" not in str(h.chat_requests()[-1]["messages"])
    h.bot.shutdown(grace=2)
    assert contents(plain_bot(start_bot))[:4] == ["one", "echo: one", "two", "a better answer"]


# -- /export ----------------------------------------------------------------------------------------

def test_export_sends_the_conversation_as_a_markdown_document(start_bot: Callable[..., Harness]) -> None:
    h = plain_bot(start_bot)
    assert h.ask("/export") == "There is nothing to export yet: this conversation has no messages."
    h.ask("alpha: what is **2+2**?")
    h.llm.script("It is `4`.")
    h.ask("and in words?")
    h.ask("/export")
    [document] = h.tg.documents(ALICE)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert document.filename == f"conversation-{today}.md" and document.thread_id is None
    assert document.caption == "alpha: what is **2+2**? (messages: 4)"
    text = document.data.decode("utf-8")
    head, meta, *turns = text.split("\n\n")
    assert head == "# alpha: what is **2+2**?" and meta.endswith("UTC, messages: 4_")
    assert turns == ["## User", "alpha: what is **2+2**?", "## Assistant", "echo: alpha: what is **2+2**?",
                     "## User", "and in words?", "## Assistant", "It is `4`.\n"]
    h.ask("/new")
    h.ask("beta")
    h.bot.shutdown(grace=2)
    h = plain_bot(start_bot)
    h.ask("/export all")
    _, everything = h.tg.documents(ALICE)
    assert everything.filename == f"conversations-{today}.md"
    assert everything.caption == "Conversations: 2, messages: 6"
    text = everything.data.decode("utf-8")
    assert text.startswith("# Conversations\n\n## alpha: what is **2+2**?\n\n_")
    assert text.index("## alpha") < text.index("## beta") and "### User\n\nbeta\n\n### Assistant" in text
    assert text.count("### User") == 3 and text.count("### Assistant") == 3
    assert "/export all" in h.ask("/export everything")


def test_export_marks_a_summary_as_one(start_bot: Callable[..., Harness], tmp_path: Path) -> None:
    h = strategy_bot(start_bot, tmp_path, "summarize")
    h.llm.default = summarizing
    fill(h)
    h.ask(NEXT)
    h.ask("/export")
    text = h.tg.documents(ALICE)[-1].data.decode()
    assert f"## Summary of the earlier messages\n\n{SUMMARY}\n\n## User\n\nTurn 3." in text
    assert context.SUMMARY_MARK not in text


def test_a_forged_history_button_gets_an_answer_not_a_crash(start_bot: Callable[..., Harness]) -> None:
    harness = plain_bot(start_bot)
    harness.ask("first")
    listing = history_message(harness)
    answered = set(harness.tg.callback_answers)
    before = len(harness.tg.messages(ALICE))
    harness.tg.press_button(ALICE, listing["message_id"], ALICE, "hist:open:²", check=False)
    harness.tg.wait_for(lambda: set(harness.tg.callback_answers) - answered, timeout=5)
    harness.idle()
    assert len(harness.tg.messages(ALICE)) == before  # no apology for a crash
    assert [m.content for m in harness.session().messages] == ["first", "echo: first"]
