"""The fake servers, exercised through the real clients (pyTelegramBotAPI, openai) over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import openai
import pytest
import requests
import telebot
from telebot import apihelper
from telebot.apihelper import ApiHTTPException, ApiTelegramException
from telebot.types import (
    BotCommand,
    EphemeralMessageParameters,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputRichMessage,
    ReplyParameters,
)

from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.telegram import NOT_MODIFIED, FakeTelegram
from tests.fakes.tg_html import HtmlParseError, parse_html

# -- fixtures ------------------------------------------------------------------------------------------


def _use(fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    with fake:
        monkeypatch.setattr(apihelper, "API_URL", fake.api_url)
        # telebot turns long_polling_timeout=0 into this default; 0 makes such calls answer at once.
        monkeypatch.setattr(apihelper, "LONG_POLLING_TIMEOUT", 0)
        yield fake


@pytest.fixture
def tg(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    """A fake without flood control, so tests can send freely."""
    yield from _use(FakeTelegram(rate_limit=False), monkeypatch)


@pytest.fixture
def tg_limited(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    yield from _use(FakeTelegram(), monkeypatch)


@pytest.fixture
def bot() -> telebot.TeleBot:
    return telebot.TeleBot("123:TEST", threaded=False)


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
def client(llm: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.url, api_key="sk-test", max_retries=0)


USER = [{"role": "user", "content": "hello"}]


def _api_error(call, *args, **kwargs) -> ApiTelegramException:
    with pytest.raises(ApiTelegramException) as caught:
        call(*args, **kwargs)
    return caught.value


# -- Telegram: basics ----------------------------------------------------------------------------------


def test_get_me(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    me = bot.get_me()
    assert (me.id, me.is_bot, me.first_name, me.username) == (999, True, "Test Bot", "test_bot")
    assert tg.calls_of("getMe")[0].status == 200


def test_wrong_token_and_unknown_method(tg: FakeTelegram) -> None:
    wrong = requests.post(f"{tg.url}/bot1:WRONG/getMe", timeout=5)
    assert (wrong.status_code, wrong.json()) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    unknown = requests.post(f"{tg.url}/bot{tg.token}/sendTelepathy", timeout=5)
    assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_json_and_form_bodies_are_accepted(tg: FakeTelegram) -> None:
    base = f"{tg.url}/bot{tg.token}/sendMessage"
    as_json = requests.post(base, json={"chat_id": 5, "text": "json"}, timeout=5).json()
    as_form = requests.post(base, data={"chat_id": "5", "text": "form"}, timeout=5).json()
    assert as_json["result"]["text"] == "json"
    assert as_form["result"]["message_id"] == as_json["result"]["message_id"] + 1
    assert tg.messages(5) == ["json", "form"]


def test_send_message_html(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]])
    html = '  <b>Bold</b> &amp; <a href="https://example.com">link</a> &lt;tag&gt;\n'
    sent = bot.send_message(-1001, html, parse_mode="HTML", reply_markup=markup)
    assert sent.text == "Bold & link <tag>"  # tags removed, entities decoded, trimmed
    assert (sent.chat.id, sent.chat.type, sent.from_user.is_bot) == (-1001, "supergroup", True)
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 4), ("text_link", 7, 4)]
    stored = tg.message_objects(-1001)[0]
    assert (stored["raw_text"], stored["parse_mode"]) == (html, "HTML")
    assert stored["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "go"


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<script>x</script>", 'Unsupported start tag "script" at byte offset 0'),
        ("ok <b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("a <b", "Unclosed start tag at byte offset 2"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("Tom & Jerry", 'Unescaped "&" at byte offset 4 (strict fake: write it as "&amp;")'),
        ("😀<br>", 'Unsupported start tag "br" at byte offset 4'),  # offsets count UTF-8 bytes
    ],
)
def test_invalid_html_is_rejected(tg: FakeTelegram, bot: telebot.TeleBot, html: str, reason: str) -> None:
    error = _api_error(bot.send_message, 5, html, parse_mode="HTML")
    assert error.error_code == 400
    assert error.description == "Bad Request: can't parse entities: " + reason
    assert tg.messages(5) == []


def test_html_parser_matches_tdlib_vectors() -> None:
    assert parse_html('<pre><code class="language-py">x = 1</code></pre>') == (
        "x = 1",
        [{"type": "pre", "offset": 0, "length": 5, "language": "py"}],
    )
    assert parse_html("&#x1F600;&#33;&lt")[0] == "😀!<"
    assert parse_html("<blockquote expandable>q</blockquote>")[1][0]["type"] == "expandable_blockquote"
    assert parse_html("AT&T", strict=False)[0] == "AT&T"  # what real Telegram does
    with pytest.raises(HtmlParseError, match='Tag "span" must have class "tg-spoiler"'):
        parse_html("<span>x</span>")


def test_text_limit_counts_utf16_code_units(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    assert bot.send_message(5, "😀" * 2048).text == "😀" * 2048  # 4096 UTF-16 units
    error = _api_error(bot.send_message, 5, "😀" * 2048 + "a")
    assert (error.error_code, error.description) == (400, "Bad Request: message is too long")
    assert _api_error(bot.send_message, 5, " \n ").description == "Bad Request: message text is empty"
    # the limit applies to the visible text, not to the HTML source
    assert bot.send_message(5, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")


def test_edits(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop")]])
    sent = bot.send_message(5, "draft", reply_markup=markup)
    error = _api_error(bot.edit_message_text, "draft", 5, sent.message_id, reply_markup=markup)
    assert (error.error_code, error.description) == (400, NOT_MODIFIED)
    # same text without reply_markup is a change: it removes the keyboard, as on Telegram
    edited = bot.edit_message_text("draft", 5, sent.message_id)
    assert edited.reply_markup is None
    bot.edit_message_text("<i>final</i>", 5, sent.message_id, parse_mode="HTML")
    assert tg.messages(5) == ["final"]
    assert tg.message_objects(5)[0]["edit_count"] == 2
    missing = _api_error(bot.edit_message_text, "x", 5, 12345)
    assert missing.description == "Bad Request: message to edit not found"


def test_flood_control(tg_limited: FakeTelegram, bot: telebot.TeleBot) -> None:
    sent = bot.send_message(5, "v0")
    bot.edit_message_text("v1", 5, sent.message_id)
    bot.edit_message_text("v2", 5, sent.message_id)  # burst of 3 used up
    error = _api_error(bot.edit_message_text, "v3", 5, sent.message_id)
    assert error.error_code == 429
    assert error.result_json["parameters"]["retry_after"] >= 1
    assert (
        error.description
        == f"Too Many Requests: retry after {error.result_json['parameters']['retry_after']}"
    )
    assert tg_limited.stats["429"] == 1
    bot.send_message(6, "other chats have their own budget")
    bot.send_chat_action(5, "typing")  # chat actions are not limited per chat
    assert tg_limited.chat_actions(5) == ["typing"]


def test_drafts(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    assert bot.send_message_draft(5, 7, "") is True  # empty: "Thinking…"
    assert bot.send_message_draft(5, 7, "<b>Hel</b>lo", parse_mode="HTML", can_stop=True) is True
    assert [d.text for d in tg.drafts(5)] == ["", "Hello"]
    assert tg.active_draft(5).can_stop
    group = _api_error(bot.send_message_draft, -100123, 7, "x")
    assert (group.error_code, group.description) == (400, "Bad Request: TEXTDRAFT_PEER_INVALID")
    assert _api_error(bot.send_message_draft, 5, 0, "x").error_code == 400
    tg.stop_generation(5, 7)
    update = bot.get_updates(long_polling_timeout=0)[-1]
    assert (update.stopped_message_generation.chat.id, update.stopped_message_generation.draft_id) == (5, 7)
    bot.send_message_draft(5, 8, "again")
    bot.send_message(5, "Hello")  # the final message replaces the draft
    assert tg.active_draft(5) is None
    with pytest.raises(AssertionError, match="not shown"):
        tg.stop_generation(5, 8)


def test_get_updates_offset(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    ids = [tg.send_text(5, text) for text in ("a", "b", "c")]
    assert [u.update_id for u in bot.get_updates(long_polling_timeout=0)] == ids
    assert [u.message.text for u in bot.get_updates(offset=ids[1], long_polling_timeout=0)] == ["b", "c"]
    assert bot.get_updates(offset=ids[2] + 1, long_polling_timeout=0) == []
    # confirmed updates are forgotten forever
    assert [u.update_id for u in bot.get_updates(offset=ids[0], long_polling_timeout=0)] == []
    assert [u.message.text for u in bot.get_updates(limit=1, long_polling_timeout=0)] == []


def test_long_poll_wakes_up_when_an_update_arrives(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    def user_writes_while_bot_polls() -> None:
        tg.wait_for(lambda: any(c.method == "getUpdates" and c.status == 0 for c in tg.calls), 5)
        tg.send_text(5, "hello")

    threading.Thread(target=user_writes_while_bot_polls, daemon=True).start()
    start = time.monotonic()
    updates = bot.get_updates(long_polling_timeout=5)
    assert time.monotonic() - start < 2
    assert [u.message.text for u in updates] == ["hello"]


def test_duplicate_delivery(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    update = {"update_id": 500, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                            "text": "dup"}}  # fmt: skip
    tg.push_update(update)
    first = bot.get_updates(long_polling_timeout=0)
    tg.push_update(update)
    second = bot.get_updates(offset=first[-1].update_id + 1, long_polling_timeout=0)
    assert [u.update_id for u in first + second] == [500, 500]


def test_user_messages_commands_replies_and_buttons(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry:1")]])
    answer = bot.send_message(-100777, "answer", reply_markup=markup)
    tg.send_text(42, "/ask@test_bot why?", chat_id=-100777, reply_to_message_id=answer.message_id)
    tg.press_button(42, answer.message_id, -100777, "retry:1")
    message, press = (u for u in bot.get_updates(long_polling_timeout=0))
    assert message.message.chat.type == "supergroup"
    assert [(e.type, e.offset, e.length) for e in message.message.entities] == [("bot_command", 0, 13)]
    assert message.message.reply_to_message.from_user.username == "test_bot"
    assert (press.callback_query.data, press.callback_query.message.message_id) == (
        "retry:1",
        answer.message_id,
    )
    assert bot.answer_callback_query(press.callback_query.id, "ok") is True
    assert _api_error(bot.answer_callback_query, press.callback_query.id).error_code == 400
    with pytest.raises(AssertionError, match="shows no button"):
        tg.press_button(42, answer.message_id, -100777, "other")


def test_commands_actions_and_user_edits(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    assert bot.set_my_commands([BotCommand("new", "Start a new chat")]) is True
    assert tg.commands == [{"command": "new", "description": "Start a new chat"}]
    assert [c.command for c in bot.get_my_commands()] == ["new"]
    assert (
        _api_error(bot.set_my_commands, [BotCommand("New!", "x")]).description
        == "Bad Request: BOT_COMMAND_INVALID"
    )
    assert _api_error(bot.send_chat_action, 5, "dancing").error_code == 400
    tg.send_text(5, "helo")
    tg.edit_user_message(5, 1, "hello")
    (_, edited) = bot.get_updates(long_polling_timeout=0)
    assert (edited.edited_message.text, edited.edited_message.message_id) == ("hello", 1)
    # allowed_updates is honoured for updates created after the call, like on Telegram
    bot.get_updates(allowed_updates=["message"], long_polling_timeout=0)
    tg.edit_user_message(5, 1, "hello!")
    assert bot.get_updates(offset=edited.update_id + 1, long_polling_timeout=0) == []
    assert "edited_message" in tg.dropped_updates[0]


def test_rich_messages(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    table = "## Prices\n\n| fruit | price |\n|---|---|\n| apple | 1 |\n\nSee [docs](https://example.com)."
    sent = bot.send_rich_message(5, InputRichMessage(markdown=table))
    stored = tg.message_objects(5)[0]
    assert (stored["raw_text"], stored["parse_mode"]) == (table, "rich")
    assert sent.rich_message.blocks[0].text == tg.messages(5)[0]
    assert "apple" in tg.messages(5)[0] and "|" not in tg.messages(5)[0]
    bot.edit_message_text(None, 5, sent.message_id, rich_message=InputRichMessage(markdown="**done**"))
    assert tg.messages(5) == ["done"] and tg.message_objects(5)[0]["edit_count"] == 1
    assert bot.send_rich_message_draft(5, 7, InputRichMessage(markdown="<tg-thinking>hmm</tg-thinking>"),
                                       message_thread_id=3, can_stop=True) is True
    draft = tg.active_draft(5)
    assert (draft.parse_mode, draft.raw_text, draft.thread_id, draft.can_stop) == (
        "rich", "<tg-thinking>hmm</tg-thinking>", 3, True)


@pytest.mark.parametrize(
    ("markdown", "description"),
    [
        ("x" * 32_769, "RICH_MESSAGE_TOO_LONG"),
        ("a <script>b</script>", 'can\'t parse rich message: unsupported start tag "script"'),
        ("<tg-thinking>hmm</tg-thinking>", "RICH_MESSAGE_BLOCK_INVALID"),  # drafts only
        ("![chart](https://example.com/c.png)", "RICH_MESSAGE_MEDIA_INVALID"),
        ("[x](ftp://host/f)", 'can\'t parse rich message: unsupported URL "ftp://host/f"'),
        ("\n".join(f"- {i}" for i in range(260)), "RICH_MESSAGE_BLOCK_COUNT_INVALID"),
        ("|" + "c|" * 21 + "\n|" + "-|" * 21, "RICH_MESSAGE_TABLE_INVALID"),
        ("> " * 17 + "deep", "RICH_MESSAGE_DEPTH_INVALID"),
        ("   ", "RICH_MESSAGE_EMPTY"),
    ],
)
def test_rich_messages_refused(tg: FakeTelegram, bot: telebot.TeleBot, markdown: str,
                               description: str) -> None:
    error = _api_error(bot.send_rich_message, 5, InputRichMessage(markdown=markdown))
    assert (error.error_code, error.description) == (400, "Bad Request: " + description)
    assert tg.messages(5) == []


def test_rich_messages_on_an_older_server(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    tg.rich_methods = False
    assert _api_error(bot.send_rich_message, 5, InputRichMessage(markdown="hi")).error_code == 404
    assert _api_error(bot.send_rich_message_draft, 5, 1, InputRichMessage(markdown="hi")).error_code == 404
    sent = bot.send_message(5, "classic")
    rich = InputRichMessage(markdown="x")
    edit = _api_error(bot.edit_message_text, None, 5, sent.message_id, rich_message=rich)
    assert edit.description == "Bad Request: message text is empty"  # rich_message is an unknown parameter


def test_ephemeral_messages(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    tg.send_text(42, "/t", chat_id=-100777)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("More", callback_data="more")]])
    sent = bot.send_message(-100777, "<b>only you</b>", parse_mode="HTML", reply_markup=markup,
                            reply_parameters=ReplyParameters(1),
                            ephemeral_message_parameters=EphemeralMessageParameters(42))
    assert (sent.message_id, sent.ephemeral_message_id) == (0, 1)
    assert tg.messages(-100777) == [] and tg.ephemeral_messages(-100777, receiver=7) == []
    [shown] = tg.ephemeral_messages(-100777, receiver=42)
    assert (shown["text"], shown["payload"]["reply_to_message"]["text"]) == ("only you", "/t")
    tg.press_ephemeral_button(42, -100777, 1, "more")
    [_, press] = bot.get_updates(long_polling_timeout=0)
    assert press.callback_query.message.ephemeral_message_id == 1
    assert bot.edit_ephemeral_message_text(-100777, 42, 1, "more for you") is True
    assert tg.ephemeral_messages(-100777)[0]["text"] == "more for you"
    stranger = EphemeralMessageParameters(99)  # not a member of the chat
    assert _api_error(bot.send_message, -100777, "x", ephemeral_message_parameters=stranger).error_code == 400
    tg.ephemeral_refused.add(-100777)
    alice = EphemeralMessageParameters(42)
    refused = _api_error(bot.send_message, -100777, "x", ephemeral_message_parameters=alice)
    assert refused.description == "Bad Request: EPHEMERAL_MESSAGE_PEER_INVALID"
    assert bot.set_my_commands([BotCommand("t", "Tokens", is_ephemeral=True)]) is True
    assert tg.commands == [{"command": "t", "description": "Tokens", "is_ephemeral": True}]


def test_forum_topics(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    ideas = tg.create_topic(-100555, "Ideas")
    tg.send_in_topic(42, -100555, ideas, "@test_bot hi")
    [update] = bot.get_updates(long_polling_timeout=0)
    asked = update.message
    assert (asked.message_thread_id, asked.is_topic_message, asked.chat.is_forum) == (ideas, True, True)
    assert asked.reply_to_message.forum_topic_created.name == "Ideas"
    in_topic = bot.send_message(-100555, "there", message_thread_id=ideas)
    replied = bot.send_message(-100555, "reply", reply_parameters=ReplyParameters(asked.message_id))
    general = bot.send_message(-100555, "general")
    assert [m.message_thread_id for m in (in_topic, replied, general)] == [ideas, ideas, None]
    assert _api_error(bot.send_message, -100555, "x", message_thread_id=999).description == (
        "Bad Request: message thread not found")
    bot.send_chat_action(-100555, "typing", message_thread_id=ideas)
    assert tg.chat_actions_in(-100555) == [("typing", ideas)]


def test_outage_keeps_state(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    bot.send_message(5, "before")
    tg.send_text(5, "queued")
    port = tg.port
    tg.go_down()
    with pytest.raises(requests.exceptions.ConnectionError):
        bot.get_me()
    tg.come_back()
    assert tg.port == port
    assert bot.get_me().id == 999
    assert tg.messages(5) == ["before"]
    assert [u.message.text for u in bot.get_updates(long_polling_timeout=0)] == ["queued"]


def test_outage_cuts_a_long_poll(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    def outage_while_polling() -> None:
        tg.wait_for(lambda: any(c.method == "getUpdates" and c.status == 0 for c in tg.calls), 5)
        tg.go_down()

    threading.Thread(target=outage_while_polling, daemon=True).start()
    with pytest.raises(requests.exceptions.ConnectionError):
        bot.get_updates(long_polling_timeout=5)


def test_fail_next(tg: FakeTelegram, bot: telebot.TeleBot) -> None:
    tg.fail_next("sendMessage", 502, "Bad Gateway")
    with pytest.raises(ApiHTTPException) as caught:  # not JSON: telebot cannot parse it
        bot.send_message(5, "lost")
    assert caught.value.result.status_code == 502
    assert "<title>502 Bad Gateway</title>" in caught.value.result.text
    tg.fail_next("sendMessage", 500, "Internal Server Error", applied=True)
    assert _api_error(bot.send_message, 5, "sent but unconfirmed").error_code == 500
    assert tg.messages(5) == ["sent but unconfirmed"]
    bot.send_message(5, "fine again")
    assert [c.status for c in tg.calls_of("sendMessage")] == [502, 500, 200]


def test_wait_for_reports_a_timeout(tg: FakeTelegram) -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.05s waiting for a message"):
        tg.wait_for(lambda: tg.messages(5), timeout=0.05, what="a message")


# -- OpenAI --------------------------------------------------------------------------------------------


def test_completion(llm: FakeOpenAI, client: openai.OpenAI) -> None:
    llm.script("scripted")
    first = client.chat.completions.create(model="gpt-x", messages=USER)
    second = client.chat.completions.create(model="gpt-x", messages=USER)
    assert (first.choices[0].message.content, second.choices[0].message.content) == (
        "scripted",
        "echo: hello",
    )
    assert (first.model, first.choices[0].finish_reason, first.object) == ("gpt-x", "stop", "chat.completion")
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert llm.requests[0].body["messages"] == USER
    assert llm.requests[0].headers["authorization"] == "Bearer sk-test"


def test_streaming_with_usage(llm: FakeOpenAI, client: openai.OpenAI) -> None:
    llm.script(Reply(text="The quick brown fox jumps over the lazy dog"))
    chunks = list(
        client.chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps over the lazy dog"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert llm.stats == {"requests": 1, "streams": 1, "errors": 0}


def test_stream_chunks_arrive_as_produced(llm: FakeOpenAI, client: openai.OpenAI) -> None:
    llm.script(Reply(chunks=["a", "b", "c", "d"], chunk_delay=0.2))
    arrivals = [
        time.monotonic()
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True)
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] >= 0.5  # three 0.2 s gaps: nothing was buffered until the end


@pytest.mark.parametrize(
    ("reply", "error_class", "code"),
    [
        (Reply.rate_limited(), openai.RateLimitError, "rate_limit_exceeded"),
        (Reply.server_error(), openai.InternalServerError, None),
        (Reply.context_too_long(), openai.BadRequestError, "context_length_exceeded"),
        (Reply.auth_error(), openai.AuthenticationError, "invalid_api_key"),
    ],
)
def test_scripted_errors(
    llm: FakeOpenAI, client: openai.OpenAI, reply: Reply, error_class: type[openai.APIStatusError], code: str
) -> None:
    llm.script(reply)
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(model="m", messages=USER)
    assert caught.value.code == code
    assert caught.value.status_code == reply.status
    if reply.status == 429:
        assert caught.value.response.headers["retry-after"] == "1"


def test_wrong_key(llm: FakeOpenAI) -> None:
    wrong = openai.OpenAI(base_url=llm.url, api_key="sk-wrong-key-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="m", messages=USER)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.message.startswith("Error code: 401")


def test_request_validation(llm: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="empty array"):
        client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "x"}])
    assert caught.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError, match="only allowed when 'stream' is enabled"):
        client.chat.completions.create(model="m", messages=USER, stream_options={"include_usage": True})
    assert llm.stats["errors"] == 3


def test_provider_strictness_toggles() -> None:
    with FakeOpenAI(reject_stream_options=True, reject_max_tokens=True, context_window=50) as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="any", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError, match="Unrecognized request argument supplied"):
            client.chat.completions.create(
                model="m", messages=USER, stream=True, stream_options={"include_usage": True}
            )
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=USER, max_tokens=10)
        assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "max_tokens")
        assert client.chat.completions.create(model="m", messages=USER, max_completion_tokens=10)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 400}])
        assert caught.value.code == "context_length_exceeded"


def test_models() -> None:
    models = [{"id": "small", "context_length": 8192}, {"id": "big", "context_length": 128000}]
    with FakeOpenAI(models=models) as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="any", max_retries=0)
        listed = client.models.list().data
        assert [(m.id, m.owned_by, m.model_extra["context_length"]) for m in listed] == [
            ("small", "fake", 8192),
            ("big", "fake", 128000),
        ]
        with pytest.raises(openai.NotFoundError):  # the model list is enforced when given
            client.chat.completions.create(model="huge", messages=USER)


def test_cut_stream(llm: FakeOpenAI, client: openai.OpenAI) -> None:
    """cut_after: the SDK yields the chunks that arrived, then raises openai.APIConnectionError.

    The connection closes mid-body (incomplete chunked transfer, no [DONE]); the openai SDK does not
    treat that as a normal end of stream, so a bot sees an exception after a partial answer.
    """
    llm.script(Reply(text="one two three four five six seven", cut_after=1))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "one two three"]


def test_hang_times_out(llm: FakeOpenAI) -> None:
    llm.script(Reply(hang=True))
    impatient = openai.OpenAI(base_url=llm.url, api_key="sk-test", max_retries=0, timeout=1)
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - start < 3
    assert llm.internal_errors == []
