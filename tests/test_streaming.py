"""Replies as Telegram shows them: drafts, edits, Markdown, long answers, flood control, groups."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from render import utf16_len
from sender import RateLimiter, Sender, TelegramError
from tests.conftest import ALICE, BOB, GROUP, Harness, Reply, buttons, unthrottled


def words(n: int) -> list[str]:
    return [f"word{i} " for i in range(n)]


def test_private_answer_streams_as_drafts_then_one_message(harness: Harness) -> None:
    chunks = words(30)
    harness.llm.script(Reply(chunks=chunks, chunk_delay=0.05))
    answer = harness.ask("stream please")
    assert answer == "".join(chunks).strip()
    drafts = harness.tg.drafts(ALICE)
    assert len(drafts) >= 2, drafts
    assert all(d.can_stop for d in drafts)
    texts = [d.text for d in drafts]
    assert all(a != b and b.startswith(a) for a, b in itertools.pairwise(texts))
    assert harness.tg.stats["429"] == 0
    # The finished answer is one sendMessage; nothing is edited in a private chat.
    assert [m["edit_count"] for m in harness.tg.message_objects(ALICE)] == [0]


def test_typing_shown_while_waiting_for_first_token(harness: Harness) -> None:
    harness.llm.script(Reply(text="late answer", delay=1.0))
    assert harness.ask("slow?") == "late answer"
    assert harness.tg.chat_actions(ALICE)[:1] == ["typing"]


def test_group_answer_is_edited_in_place_when_addressed(harness: Harness) -> None:
    chunks = words(40)
    harness.llm.script(Reply(chunks=chunks, chunk_delay=0.08))
    harness.say("@test_bot tell me", user=ALICE, chat=GROUP)
    harness.tg.wait_messages(GROUP, 1)
    harness.idle()
    [message] = harness.tg.message_objects(GROUP)
    assert message["text"] == "".join(chunks).strip()
    assert message["edit_count"] >= 1
    assert harness.tg.drafts(GROUP) == []
    assert harness.chat_requests()[-1]["messages"][-1]["content"] == "tell me"


def test_group_ignores_what_is_not_addressed_to_the_bot(harness: Harness) -> None:
    harness.say("just chatting", user=ALICE, chat=GROUP)
    harness.say("/help@OtherBot", user=ALICE, chat=GROUP)
    assert "Commands" in harness.ask("/help@test_bot", user=ALICE, chat=GROUP)
    assert len(harness.tg.messages(GROUP)) == 1
    bot_message = harness.tg.message_objects(GROUP)[-1]["message_id"]
    before = len(harness.tg.messages(GROUP))
    harness.say("and you?", user=BOB, chat=GROUP, reply_to_message_id=bot_message)
    harness.tg.wait_messages(GROUP, before + 1)
    harness.idle()
    assert harness.tg.messages(GROUP)[-1] == "echo: and you?"
    assert [m.content for m in harness.session(BOB, chat=GROUP).messages] == ["and you?", "echo: and you?"]
    assert harness.session(BOB).messages == []  # Bob's private conversation is another place
    assert len(harness.chat_requests()) == 1


def test_nasty_markdown_arrives_readable(harness: Harness) -> None:
    nasty = ("Unbalanced **bold and <script>alert(1)</script> & co; `code <b>`\n\n"
             "| a | b |\n|---|---|\n| 1 | 2 |")
    harness.llm.script(Reply(text=nasty))
    answer = harness.ask("be nasty")
    assert "**bold" in answer and "<script>alert(1)</script>" in answer and "& co" in answer
    assert "code <b>" in answer
    message = harness.tg.message_objects(ALICE)[-1]
    assert message["parse_mode"] == "HTML" and "<pre>" in message["raw_text"]
    assert harness.bot.sender.stats["plain_fallbacks"] == 0


def test_long_answer_with_code_block_is_split_and_complete(harness: Harness) -> None:
    code = "\n".join(f"    print('line {i:04d}')  # 😀" for i in range(330))
    answer = "Intro paragraph.\n\n```python\n" + code + "\n```\n\n" + "Closing words. " * 800
    assert len(answer) > 20_000
    harness.llm.script(Reply(text=answer, chunks=[answer[i:i + 500] for i in range(0, len(answer), 500)]))
    harness.say("long please")
    harness.tg.wait_for(lambda: "Closing words." in "".join(harness.tg.messages(ALICE)), timeout=30)
    harness.idle()
    messages = harness.tg.message_objects(ALICE)
    assert len(messages) >= 6
    assert all(utf16_len(m["text"]) <= 4096 for m in messages)
    joined = "\n".join(m["text"] for m in messages)
    for i in range(330):
        assert f"print('line {i:04d}')" in joined
    code_parts = [m for m in messages if "print('line" in m["text"]]
    assert all('<pre><code class="language-python">' in m["raw_text"] for m in code_parts)
    assert harness.tg.stats["429"] == 0


def test_two_chats_stream_at_once(harness: Harness) -> None:
    for _ in range(2):
        harness.llm.script(Reply(chunks=words(20), chunk_delay=0.15))
    harness.say("first", user=ALICE)
    harness.say("second", user=BOB)
    # Both show a draft before either answer is finished: neither waits for the other.
    harness.tg.wait_for(lambda: harness.tg.drafts(ALICE) and harness.tg.drafts(BOB), timeout=5)
    assert harness.tg.messages(ALICE) == [] and harness.tg.messages(BOB) == []  # neither answer is done yet
    harness.tg.wait_messages(ALICE, 1)
    harness.tg.wait_messages(BOB, 1)


def test_messages_from_one_chat_are_answered_in_order(harness: Harness) -> None:
    harness.llm.script(Reply(text="one", delay=0.5), Reply(text="two"))
    harness.say("first")
    harness.say("second")
    assert harness.replies(ALICE, 2) == ["one", "two"]
    second = harness.chat_requests()[1]["messages"]
    assert [m["content"] for m in second[1:]] == ["first", "one", "second"]


def test_stop_control_cancels_and_keeps_partial_answer(harness: Harness) -> None:
    harness.llm.script(Reply(chunks=words(200), chunk_delay=0.05))
    harness.say("go on forever")
    harness.tg.wait_for(lambda: len(harness.tg.drafts(ALICE)) >= 2, timeout=5)
    draft_id = harness.tg.drafts(ALICE)[-1].draft_id
    harness.tg.stop_generation(ALICE, draft_id)
    [answer] = harness.replies(ALICE, 1)
    assert answer.endswith("(stopped)") and answer.startswith("word0 word1")
    assert len(answer.split()) < 150
    stored = harness.session().messages[-1]
    assert stored.role == "assistant" and stored.content.startswith("word0")
    assert "(stopped)" not in stored.content
    assert stored.content.split() == [f"word{i}" for i in range(len(stored.content.split()))]  # a true prefix


def test_stream_off_sends_one_plain_request(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false")
    assert h.ask("hi") == "echo: hi"
    assert "stream" not in h.chat_requests()[-1]
    assert h.tg.drafts(ALICE) == []


def test_sender_waits_out_429_and_delivers_everything(harness: Harness) -> None:
    # A limiter far above Telegram's limits, so the fake server answers 429 and the sender must wait.
    sender = Sender(harness.bot.telebot, RateLimiter(private_rate=100, burst=100, global_rate=100))
    for i in range(6):
        sender.send_part(BOB, f"message {i}")
    assert harness.tg.messages(BOB) == [f"message {i}" for i in range(6)]
    assert sender.stats["429"] >= 1


def test_rejected_entities_fall_back_to_plain_text(harness: Harness) -> None:
    sender = harness.bot.sender
    sender.send_part(BOB, "<b>never closed & broken")
    assert harness.tg.messages(BOB) == ["never closed & broken"]
    assert sender.stats["plain_fallbacks"] == 1


def test_not_modified_is_success(harness: Harness) -> None:
    sender = harness.bot.sender
    [message] = sender.send_html(BOB, "same")
    sender.edit_part(BOB, message.message_id, "same")
    assert harness.tg.messages(BOB) == ["same"]


def test_other_telegram_refusals_raise_typed_error(harness: Harness) -> None:
    try:
        harness.bot.sender.edit_part(BOB, 424242, "no such message")
    except TelegramError as exc:
        assert exc.code == 400 and "not found" in exc.description
    else:
        raise AssertionError("editing a missing message must fail")


def test_drafts_refused_fall_back_to_edits(harness: Harness) -> None:
    harness.tg.fail_next("sendMessageDraft", 400, "Bad Request: TEXTDRAFT_PEER_INVALID", count=5)
    harness.llm.script(Reply(chunks=words(40), chunk_delay=0.05))
    answer = harness.ask("no drafts here")
    assert answer == "".join(words(40)).strip()
    assert harness.tg.message_objects(ALICE)[-1]["edit_count"] >= 1
    assert ALICE in harness.bot.app.no_drafts


def test_concurrent_chats_do_not_share_sessions_under_load(start_bot: Callable[..., Harness]) -> None:
    harness = start_bot(ALLOWED_USER_IDS="*")
    users = list(range(200, 220))
    harness.llm.default = lambda body: Reply(text=f"re: {body['messages'][-1]['content']}", delay=0.3)
    for user in users:
        harness.say(f"hello from {user}", user=user)
    harness.tg.wait_for(lambda: all(harness.tg.messages(u) for u in users), timeout=20)
    for user in users:
        assert harness.tg.messages(user) == [f"re: hello from {user}"]
        assert [m.content for m in harness.session(user).messages] == [f"hello from {user}",
                                                                       f"re: hello from {user}"]


def test_finished_parts_of_a_long_answer_are_sent_while_it_streams(harness: Harness) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 20 for i in range(30)]
    harness.llm.script(Reply(chunks=[p + "\n\n" for p in paragraphs], chunk_delay=0.1))
    harness.say("a long one")
    harness.tg.wait_for(lambda: "Paragraph 29" in "".join(harness.tg.messages(ALICE)), timeout=30)
    harness.idle()
    first_sent = harness.tg.calls_of("sendMessage")[0].time
    # The first part became a message while later parts were still previewed as drafts.
    assert any(d.time > first_sent for d in harness.tg.drafts(ALICE))
    messages = harness.tg.messages(ALICE)
    assert len(messages) >= 3 and all(utf16_len(m) <= 4096 for m in messages)
    assert "\n\n".join(messages).split() == "".join(paragraphs).split()


def test_stop_while_the_model_is_silent_ends_at_once(harness: Harness) -> None:
    harness.llm.script(Reply(chunks=["Let me think. ", "Done thinking."], chunk_delay=20))
    harness.say("hard question")
    harness.tg.wait_for(lambda: harness.tg.drafts(ALICE), timeout=5)
    harness.tg.stop_generation(ALICE, harness.tg.drafts(ALICE)[-1].draft_id)
    # The model's next chunk is 20 s away: an answer within 5 s means the stop did not wait for it.
    [answer] = harness.replies(ALICE, 1, timeout=5)
    assert answer == "Let me think.\n\n(stopped)"
    assert harness.session().messages[-1].content == "Let me think. "


def test_error_event_inside_a_stream(harness: Harness) -> None:
    harness.llm.script(Reply(chunks=["never ", "shown"], error_after=0),
                       Reply(chunks=["partial ", "answer ", "lost"], error_after=2))
    assert "not answering right now" in harness.ask("one")
    assert harness.session().messages == []
    answer = harness.ask("two")
    assert answer.startswith("partial answer") and "incomplete" in answer and "lost" not in answer
    assert [m.content for m in harness.session().messages] == ["two", "partial answer "]


# -- forum topics and private replies to commands in groups ---------------------------------------

FORUM = -100900


def test_a_long_answer_in_a_forum_topic_stays_in_the_topic(harness: Harness) -> None:
    h = unthrottled(harness)
    topic = h.tg.create_topic(FORUM, "Long answers", creator=BOB)
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 60 for i in range(8)]
    h.llm.script(Reply(chunks=[p + "\n\n" for p in paragraphs], delay=0.5, chunk_delay=0.05))
    h.tg.send_in_topic(ALICE, FORUM, topic, "@test_bot write a lot")
    h.tg.wait_for(lambda: "Paragraph 7" in "".join(h.tg.messages(FORUM)), timeout=20)
    h.idle()
    h.tg.send_in_topic(ALICE, FORUM, topic, "/help")
    h.tg.send_in_topic(ALICE, FORUM, topic, "/t")
    h.tg.wait_for(lambda: h.tg.ephemeral_messages(FORUM), timeout=10)
    h.idle()
    answer = h.tg.message_objects(FORUM)
    assert len(answer) >= 3 and "Commands" in answer[-1]["text"]
    assert [m["payload"].get("message_thread_id") for m in answer] == [topic] * len(answer)
    assert [m["payload"]["message_thread_id"] for m in h.tg.ephemeral_messages(FORUM)] == [topic]
    assert h.tg.chat_actions_in(FORUM)[0] == ("typing", topic)
    assert "\n\n".join(m["text"] for m in answer[:-1]).split() == "".join(paragraphs).split()


def test_personal_commands_in_a_group_answer_the_asking_user_alone(harness: Harness) -> None:
    h = unthrottled(harness)
    h.say("/t", user=ALICE, chat=GROUP)
    h.say("/model", user=ALICE, chat=GROUP)
    h.tg.wait_for(lambda: len(h.tg.ephemeral_messages(GROUP, receiver=ALICE)) == 2, timeout=10)
    h.idle()
    assert h.tg.messages(GROUP) == []  # nobody else sees them
    tokens, picker = h.tg.ephemeral_messages(GROUP, receiver=ALICE)
    assert "Tokens" in tokens["text"]
    button = next(data for data in buttons(picker).values() if data != buttons(picker).get("✅ gpt-5.4-mini"))
    h.tg.press_ephemeral_button(ALICE, GROUP, picker["ephemeral_message_id"], button)
    h.tg.wait_for(lambda: h.tg.ephemeral_messages(GROUP)[1]["edit_count"] == 1, timeout=10)
    h.idle()
    assert "switched" in h.tg.ephemeral_messages(GROUP)[1]["text"]
    assert h.tg.messages(GROUP) == []
    assert "Commands" in h.ask("/help", user=ALICE, chat=GROUP)  # not personal: for everyone


def test_where_ephemeral_messages_are_refused_the_reply_is_public(harness: Harness) -> None:
    h = unthrottled(harness)
    h.tg.ephemeral_refused.add(GROUP)
    assert "Tokens" in h.ask("/t", user=ALICE, chat=GROUP)
    assert "Tokens" in h.ask("/t", user=ALICE, chat=GROUP)
    assert len([c for c in h.tg.calls_of("sendMessage") if c.status == 400]) == 1


def test_reasoning_is_shown_while_it_happens_then_replaced_by_the_answer(harness: Harness) -> None:
    thought = "The user asks about <tea>. I should weigh green against black."
    harness.llm.script(Reply(reasoning=thought, chunks=["Green ", "tea."], chunk_delay=0.4),
                       Reply(text="Sure."))
    assert harness.ask("which tea?") == "Green tea."
    first = harness.tg.drafts(ALICE)[0]
    assert first.text.startswith("Thinking…\nThe user asks") and first.can_stop
    assert harness.tg.drafts(ALICE)[-1].text == "Green tea."
    assert [m.content for m in harness.session().messages] == ["which tea?", "Green tea."]
    harness.ask("thanks")
    assert "weigh" not in str(harness.chat_requests()[-1]["messages"])
