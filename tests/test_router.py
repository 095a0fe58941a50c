"""Tests for router.py: which raw updates reach the bot, and as what."""

from __future__ import annotations

from typing import Any

import pytest

from router import BotIdentity, Incoming, Media, StopGeneration, parse_update

ME = BotIdentity(999, "test_bot")
USER = 42
GROUP = -100123


def sender(user_id: int = USER, **fields: Any) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "Alice", "last_name": "Smith",
            "username": "alice", "language_code": "de", **fields}


def message(text: str | None = "hello", group: bool = False, **fields: Any) -> dict[str, Any]:
    chat = {"id": GROUP, "type": "supergroup"} if group else {"id": USER, "type": "private"}
    body: dict[str, Any] = {"message_id": 10, "date": 0, "chat": chat, "from": sender()}
    if text is not None:
        body["text"] = text
    return {**body, **fields}


def parse(update_id: int = 1, **update: Any) -> Incoming | StopGeneration | None:
    return parse_update({"update_id": update_id, **update}, ME)


def parse_message(text: str | None = "hello", group: bool = False, **fields: Any) -> Incoming | None:
    result = parse(message=message(text, group, **fields))
    assert not isinstance(result, StopGeneration)
    return result


def test_private_text() -> None:
    assert parse(update_id=5, message=message("hello there")) == Incoming(
        update_id=5, kind="text", user_id=USER, user_name="Alice Smith (@alice)", chat_id=USER,
        private=True, message_id=10, text="hello there", language="de")


def test_user_name_falls_back_to_the_id() -> None:
    result = parse_message(**{"from": {"id": USER, "is_bot": False}})
    assert result is not None and result.user_name == str(USER)
    assert result.language is None


def test_command_with_args() -> None:
    result = parse_message("/Model  gpt-4o \n mini ")
    assert result is not None
    assert (result.kind, result.command, result.args) == ("command", "model", "gpt-4o \n mini")
    assert result.text == "/Model  gpt-4o \n mini "


def test_command_without_args() -> None:
    result = parse_message("/start")
    assert result is not None and (result.kind, result.command, result.args) == ("command", "start", "")


@pytest.mark.parametrize("group", [False, True])
def test_command_addressed_to_us(group: bool) -> None:
    result = parse_message("/help@Test_Bot", group=group)
    assert result is not None
    assert (result.kind, result.command, result.args, result.private) == ("command", "help", "", not group)


def test_command_for_another_bot_is_ignored_in_groups() -> None:
    assert parse_message("/help@OtherBot", group=True) is None


def test_command_for_another_bot_in_private_is_ours() -> None:
    # Nobody else reads a private chat with us: answer rather than stay silent.
    result = parse_message("/help@OtherBot", group=False)
    assert result is not None and (result.kind, result.command) == ("command", "help")


def test_plain_command_in_a_group_is_ours() -> None:
    result = parse_message("/clear", group=True)
    assert result is not None and (result.kind, result.chat_id) == ("command", GROUP)


def test_not_a_command() -> None:
    result = parse_message("/ not a command")
    assert result is not None and result.kind == "text"


def test_plain_text_in_a_group_is_ignored() -> None:
    assert parse_message("hello everyone", group=True) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("@test_bot hi", "hi"),
    ("hi @Test_Bot, how are you?", "hi , how are you?"),
    ("@test_bot", ""),
])
def test_mention_in_a_group(text: str, expected: str) -> None:
    result = parse_message(text, group=True)
    assert result is not None
    assert (result.kind, result.text, result.chat_id, result.private) == ("text", expected, GROUP, False)


@pytest.mark.parametrize("text", ["@test_botanist hi", "@test_bot_two hi", "mail test_bot@example.com"])
def test_similar_names_are_not_mentions(text: str) -> None:
    assert parse_message(text, group=True) is None


def test_mention_in_private_is_kept() -> None:
    result = parse_message("@test_bot hi")
    assert result is not None and result.text == "@test_bot hi"


def test_reply_to_our_message_in_a_group() -> None:
    replied = {"message_id": 9, "from": {"id": ME.id, "is_bot": True, "first_name": "Bot"}}
    result = parse_message("and what about Rome?", group=True, reply_to_message=replied)
    assert result is not None and (result.kind, result.text) == ("text", "and what about Rome?")


def test_reply_to_someone_else_in_a_group_is_ignored() -> None:
    replied = {"message_id": 9, "from": {"id": 777, "is_bot": True, "first_name": "Other"}}
    assert parse_message("right", group=True, reply_to_message=replied) is None


@pytest.mark.parametrize(("field", "value"), [("sticker", {"file_id": "x"}), ("photo", [{"file_id": "y"}]),
                                              ("voice", {"file_id": "z"})])
def test_media_in_private(field: str, value: Any) -> None:
    result = parse_message(None, **{field: value})
    assert result is not None and (result.kind, result.text) == ("media", "")
    assert result.media is not None and result.media.field == field and result.media.file_id in "xyz"


def test_media_in_a_group_only_when_replying_to_us_or_mentioning_us() -> None:
    assert parse_message(None, group=True, sticker={"file_id": "x"}) is None
    assert parse_message(None, group=True, photo=[{"file_id": "x"}], caption="look at this") is None
    replied = {"message_id": 9, "from": {"id": ME.id, "is_bot": True}}
    result = parse_message(None, group=True, sticker={"file_id": "x"}, reply_to_message=replied)
    assert result is not None and result.kind == "media" and result.media == Media("sticker", "x")
    result = parse_message(None, group=True, photo=[{"file_id": "x"}], caption="@test_bot what is it?")
    assert result is not None and result.text == "what is it?" and result.media == Media("photo", "x")


def test_media_carries_what_the_handlers_need() -> None:
    document = {"file_id": "d", "file_unique_id": "u", "file_name": "notes.md", "mime_type": "text/markdown",
                "file_size": 1234}
    result = parse_message(None, document=document, caption="summarise")
    assert result is not None and result.text == "summarise"
    assert result.media == Media("document", "d", 1234, "text/markdown", "notes.md")
    voice = {"file_id": "v", "duration": 7, "mime_type": "audio/ogg"}
    assert (parse_message(None, voice=voice) or Incoming(0, "", 0, "", 0, True)).media == Media(
        "voice", "v", None, "audio/ogg", None, 7)
    sizes = [{"file_id": "big", "width": 1280, "height": 960, "file_size": 90_000},
             {"file_id": "small", "width": 90, "height": 68, "file_size": 2_000}]
    photo = (parse_message(None, photo=sizes) or Incoming(0, "", 0, "", 0, True)).media
    assert photo == Media("photo", "big", 90_000)  # the largest, wherever it is in the list
    odd = parse_message(None, document={"file_id": 5, "file_size": "big"})
    assert odd is not None and odd.media == Media("document", "")  # malformed fields are dropped


def test_service_message_or_unknown_kind_in_private_is_ignored() -> None:
    assert parse_message(None, new_kind_of_thing={}) is None
    assert parse_message(None, pinned_message={"message_id": 1}) is None


def test_edited_message() -> None:
    result = parse(edited_message=message("/help fixed typo"))
    assert isinstance(result, Incoming)
    assert (result.kind, result.text, result.command) == ("edited", "/help fixed typo", "")


def test_edited_message_in_a_group_is_ignored() -> None:
    assert parse(edited_message=message("hello", group=True)) is None


def test_message_without_sender_is_ignored() -> None:
    body = message("hello")
    del body["from"]
    assert parse(message=body) is None


def test_messages_from_bots_are_ignored() -> None:
    assert parse_message("/help", **{"from": sender(is_bot=True)}) is None
    assert parse(callback_query=callback(**{"from": sender(is_bot=True)})) is None


def test_channel_post_is_ignored() -> None:
    post = {"message_id": 1, "chat": {"id": -1001, "type": "channel"}, "text": "news"}
    assert parse(channel_post=post) is None


def callback(**fields: Any) -> dict[str, Any]:
    return {"id": "cb-1", "from": sender(), "data": "model:abc123", "message": message("pick one"), **fields}


def test_callback_query() -> None:
    result = parse(update_id=8, callback_query=callback())
    assert result == Incoming(update_id=8, kind="callback", user_id=USER, user_name="Alice Smith (@alice)",
                              chat_id=USER, private=True, message_id=10, text="model:abc123",
                              callback_id="cb-1", language="de")


def test_callback_without_its_message_is_ignored() -> None:
    query = callback()
    del query["message"]
    assert parse(callback_query=query) is None


def test_stopped_message_generation() -> None:
    stop = {"chat": {"id": USER, "type": "private"}, "draft_id": 77}
    assert parse(update_id=3, stopped_message_generation=stop) == StopGeneration(3, USER, 77)
    assert parse(stopped_message_generation={"chat": {"id": USER}}) is None


@pytest.mark.parametrize("update", [{}, {"update_id": "1", "message": message()}, {"message": message()}])
def test_update_without_an_integer_update_id_is_ignored(update: dict[str, Any]) -> None:
    assert parse_update(update, ME) is None


def test_unknown_update_kind_is_ignored() -> None:
    assert parse(message_reaction={"chat": {"id": USER}}) is None
