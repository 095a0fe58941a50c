"""Rich messages: the Markdown made safe and split within Telegram's limits, and the bot's three settings."""

from __future__ import annotations

from collections.abc import Callable

import richtext
from tests.conftest import ALICE, BOB, Harness, Reply, buttons

TABLE = "Prices:\n\n| fruit | price |\n|---|---|\n| apple | 1 |\n| <b>pear</b> | 2 |"


# -- richtext ----------------------------------------------------------------------------------------


def test_escape_keeps_what_the_model_meant() -> None:
    source = ("Use <div> or <!-- x --> here, ![chart](https://x.io/c.png), [docs](https://x.io), "
              "[run](tg://photo?id=5) and `a <b> c`.\n\n```html\n<p>kept</p>\n```\n\n    <indented code>")
    assert richtext.escape(source) == (
        "Use \\<div> or \\<!-- x --> here, \\![chart](https://x.io/c.png), [docs](https://x.io), "
        "\\[run](tg://photo?id=5) and `a <b> c`.\n\n```html\n<p>kept</p>\n```\n\n    <indented code>")


def test_a_table_wider_than_telegram_allows_becomes_code() -> None:
    header = "|" + "|".join(f"c{i}" for i in range(21)) + "|"
    escaped = richtext.escape(f"{header}\n|{'-|' * 21}\n|{'1|' * 21}")
    assert escaped.startswith("```\n|c0|") and escaped.endswith("|\n```")
    assert richtext.fits(escaped)


def test_split_at_block_boundaries_within_the_limits() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 2_000 for i in range(7)]  # 70,000 characters
    parts = richtext.split("\n\n".join(paragraphs))
    assert len(parts) == 3 and all(richtext.fits(p) for p in parts)
    assert " ".join(parts).split() == " ".join(paragraphs).split()
    many = "\n".join(f"- item {i}" for i in range(700))  # 1,401 blocks (list, items, paragraphs)
    parts = richtext.split(many)
    assert len(parts) >= 3 and all(richtext.fits(p) for p in parts)
    assert [line for p in parts for line in p.split("\n")] == many.split("\n")


def test_a_huge_code_block_is_split_into_code_blocks() -> None:
    code = "```python\n" + "\n".join(f"print({i})  # {'x' * 60}" for i in range(1_000)) + "\n```"
    parts = richtext.split(code)
    assert len(parts) == 3
    assert all(p.startswith("```python\n") and p.endswith("\n```") and richtext.fits(p) for p in parts)


# -- the bot -----------------------------------------------------------------------------------------


def test_rich_messages_on_a_table_goes_as_a_rich_message(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="on")
    h.llm.script(Reply(text=TABLE))
    answer = h.ask("prices?")
    [message] = h.tg.message_objects(ALICE)
    assert message["parse_mode"] == "rich"
    assert message["raw_text"] == TABLE.replace("<b>pear</b>", "\\<b>pear\\</b>")  # text, not markup
    assert "<b>pear</b>" in answer and "|" not in answer
    assert h.bot.sender.stats["rich_fallbacks"] == 0


def test_a_13000_character_answer_is_one_rich_message(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="on")
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 100 for i in range(25))
    assert 12_500 < len(text) < 14_000
    chunks = [text[i:i + 400] for i in range(0, len(text), 400)]
    h.llm.script(Reply(text=text, chunks=chunks, chunk_delay=0.02))
    answer = h.ask("a long one")
    assert len(h.tg.messages(ALICE)) == 1 and answer.split() == text.split()
    assert all(d.parse_mode == "rich" for d in h.tg.drafts(ALICE))


def test_a_server_without_rich_messages_gets_classic_ones(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="on")
    h.tg.rich_methods = False
    for i in range(3):
        h.llm.script(Reply(text=f"answer **{i}**", chunks=["answer ", f"**{i}**"], chunk_delay=0.4))
        assert h.ask(f"question {i}") == f"answer {i}"
    refused = [c for c in h.tg.calls if c.method.lower().startswith("sendrich")]
    assert 1 <= len(refused) <= 2 and all(c.status == 404 for c in refused)
    assert [m["parse_mode"] for m in h.tg.message_objects(ALICE)] == ["HTML"] * 3


def test_a_rejected_rich_message_goes_classic_once(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="on", STREAM="false")
    deep = "\n".join("  " * i + "- level" for i in range(20))  # deeper than rich messages nest
    h.llm.script(Reply(text=deep), Reply(text="**fine**"))
    assert h.ask("deep").count("level") == 20
    assert h.ask("again") == "fine"
    assert [m["parse_mode"] for m in h.tg.message_objects(ALICE)] == ["HTML", "rich"]
    assert h.bot.sender.rich_available


def test_rich_messages_are_off_by_default(harness: Harness) -> None:
    harness.llm.script(Reply(text=TABLE))
    harness.ask("prices?")
    assert harness.tg.message_objects(ALICE)[0]["parse_mode"] == "HTML"
    assert not [c for c in harness.tg.calls if "rich" in c.method.lower()]
    assert "/settings" in harness.ask("/help")


def test_each_user_chooses_rich_formatting_in_settings(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="user")
    assert "off" in h.ask("/settings")
    page = h.tg.message_objects(ALICE)[-1]
    h.tg.press_button(ALICE, page["message_id"], ALICE, buttons(page)["Turn rich formatting on"])
    h.tg.wait_for(lambda: "Rich formatting: on." in h.tg.messages(ALICE)[-1], timeout=10)
    h.idle()
    assert h.session(ALICE).profile.rich is True
    for user in (ALICE, BOB):
        h.llm.script(Reply(text=TABLE))
        h.ask("prices?", user=user)
    assert h.tg.message_objects(ALICE)[-1]["parse_mode"] == "rich"
    assert h.tg.message_objects(BOB)[-1]["parse_mode"] == "HTML"


def test_settings_say_when_the_owner_decides(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(RICH_MESSAGES="on")
    assert "owner" in h.ask("/settings")
    assert buttons(h.tg.message_objects(ALICE)[-1]) == {  # the language, but no rich switch
        "✅ English": "settings:lang:en", "Русский": "settings:lang:ru"}


def test_settings_change_the_language_with_a_button(harness: Harness) -> None:
    harness.ask("/settings")
    page = harness.tg.message_objects(ALICE)[-1]
    harness.tg.press_button(ALICE, page["message_id"], ALICE, "settings:lang:ru")
    harness.tg.wait_for(lambda: "Язык" in harness.tg.messages(ALICE)[-1], timeout=10)
    harness.idle()
    assert harness.session().profile.language == "ru"
    assert "✅ Русский" in buttons(harness.tg.message_objects(ALICE)[-1])
    assert "Команды" in harness.ask("/help")
