"""End to end: the real bot against the fake Telegram and OpenAI servers, over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tiktoken

from tests.conftest import ADMIN, ALICE, BOB, STRANGER, Harness, Reply, buttons, tiny_bot
from tests.process import run_bot


def o200k(text: str) -> int:
    return len(tiktoken.get_encoding("o200k_base").encode(text))


def test_chat_turn_sends_history_and_records_tokens(harness: Harness) -> None:
    assert harness.ask("hello") == "echo: hello"
    assert harness.ask("and again") == "echo: and again"

    body = harness.chat_requests()[-1]
    assert body["model"] == "gpt-5.4-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [(m["role"], m["content"]) for m in body["messages"][1:]] == [
        ("user", "hello"), ("assistant", "echo: hello"), ("user", "and again")]
    assert body["messages"][0]["role"] == "system"

    session = harness.session()
    assert [(m.role, m.content) for m in session.messages] == [
        ("user", "hello"), ("assistant", "echo: hello"),
        ("user", "and again"), ("assistant", "echo: and again")]
    # Cookbook formula: 3 per message + role + content, 3 to prime the reply.
    expected = sum(3 + o200k(m["role"]) + o200k(m["content"]) for m in body["messages"]) + 3
    expected += 3 + o200k("assistant") + o200k("echo: and again")
    assert session.prompt_tokens() == expected
    assert session.usage.requests == 2 and session.usage.completion_tokens > 0


def test_users_have_separate_sessions(harness: Harness) -> None:
    harness.ask("I am Alice", user=ALICE)
    harness.ask("I am Bob", user=BOB)
    bob_request = harness.chat_requests()[-1]["messages"]
    assert "I am Alice" not in str(bob_request)
    assert [m.content for m in harness.session(BOB).messages] == ["I am Bob", "echo: I am Bob"]
    assert len(harness.session(ALICE).messages) == 2


def test_stranger_is_refused_with_their_id_and_no_model_call(harness: Harness) -> None:
    answer = harness.ask("hi", user=STRANGER)
    assert "not allowed" in answer and str(STRANGER) in answer
    assert harness.chat_requests() == []


def test_admin_is_always_allowed(harness: Harness) -> None:
    assert harness.ask("hi", user=ADMIN) == "echo: hi"


def test_commands_registered_in_menu(harness: Harness) -> None:
    menu = harness.tg.commands
    assert [c["command"] for c in menu] == ["start", "help", "info", "t", "new", "clear", "history", "retry",
                                            "export", "model", "system", "preset", "sessions", "lang",
                                            "usage", "settings"]
    # not the admins' /limit, /allow, /deny. In groups these answer the asking user alone, so
    # Telegram's menu marks them:
    assert [c["command"] for c in menu if c.get("is_ephemeral")] == [
        "info", "t", "history", "model", "system", "preset", "sessions", "usage", "settings"]


def test_start_and_help_list_commands(harness: Harness) -> None:
    assert "/clear" in harness.ask("/start") and "gpt-5.4-mini" in harness.tg.messages(ALICE)[-1]
    help_text = harness.ask("/help")
    for name in ("/info", "/t", "/new", "/clear", "/history", "/retry", "/export", "/model", "/system",
                 "/sessions", "/preset"):
        assert name in help_text


def test_info_shows_version_model_and_session(harness: Harness) -> None:
    harness.ask("hello")
    info = harness.ask("/info")
    assert "3.0.0" in info
    assert "Model: gpt-5.4-mini" in info
    assert "Messages: 2" in info
    assert f"Tokens: {harness.session().prompt_tokens():,} of 400,000" in info
    assert "translator" in info and "/sessions" in info
    assert all(f"/{name}:" in info for name in ("new", "history", "retry", "export"))


def test_tokens_command_reports_counts_and_api_usage(harness: Harness) -> None:
    harness.llm.script(Reply(text="fine", usage={"prompt_tokens": 40, "completion_tokens": 2,
                                                 "total_tokens": 42}))
    harness.ask("how are you")
    answer = harness.ask("/t")
    session = harness.session()
    assert f"This conversation: {session.prompt_tokens():,}" in answer
    assert "Context window: 400,000" in answer
    assert "40 prompt + 2 completion = 42" in answer


def test_clear_keeps_model_and_prompt(harness: Harness) -> None:
    harness.ask("/model gpt-5.4")
    harness.ask("/system Talk like a pirate.")
    harness.ask("hello")
    assert "previous one (messages: 2) is kept" in harness.ask("/clear")
    session = harness.session()
    assert session.messages == [] and session.model == "gpt-5.4"
    assert session.system_prompt == "Talk like a pirate."
    harness.ask("again")
    assert [m["content"] for m in harness.chat_requests()[-1]["messages"]] == ["Talk like a pirate.", "again"]


def test_model_switch_and_unknown_model(harness: Harness) -> None:
    assert "Model switched to gpt-5.4 " in harness.ask("/model gpt-5.4")
    answer = harness.ask("/model gpt-9-imaginary")
    assert "don't know the model gpt-9-imaginary" in answer and "gpt-5.4-mini" in answer
    assert harness.session().model == "gpt-5.4"
    harness.ask("hi")
    assert harness.chat_requests()[-1]["model"] == "gpt-5.4"


def test_model_without_argument_shows_picker(harness: Harness) -> None:
    harness.ask("/model")
    shown = buttons(harness.tg.message_objects(ALICE)[-1])
    assert "✅ gpt-5.4-mini" in shown
    assert not any("claude" in text for text in shown)  # no Anthropic key: not offered


def test_system_prompt_show_set_default(harness: Harness) -> None:
    assert "helpful assistant" in harness.ask("/system")
    harness.ask("hello")
    assert "A new conversation starts" in harness.ask("/system Answer in French.")
    assert harness.session().messages == []
    assert harness.bot.app is not None
    [kept] = [c for c in harness.bot.app.store.conversations(harness.session().place) if c.messages]
    assert [m.content for m in kept.messages] == ["hello", "echo: hello"]  # the old one is in /history
    harness.ask("bonjour")
    assert harness.chat_requests()[-1]["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert "custom" in harness.ask("/system")
    harness.ask("/system default")
    assert harness.session().system_prompt.startswith("You are a helpful assistant")


def test_sessions_admin_sees_all_others_only_theirs(harness: Harness) -> None:
    harness.ask("hi", user=ALICE)
    harness.ask("hi", user=BOB)
    admin_view = harness.ask("/sessions", user=ADMIN)
    assert str(ALICE) in admin_view and str(BOB) in admin_view
    alice_view = harness.ask("/sessions", user=ALICE)
    assert str(ALICE) in alice_view and str(BOB) not in alice_view


def test_context_warning_then_self_reset(start_bot: Callable[..., Harness], tmp_path: Path) -> None:
    h = tiny_bot(start_bot, tmp_path, CONTEXT_WARN_RATIO="0.5", SYSTEM_PROMPT="Be brief.")
    sentence = "The quick brown fox jumps over the lazy dog again and again. " * 3
    answers = [h.ask(sentence) for _ in range(6)]
    warned = [a for a in answers if "Heads-up" in a]
    assert len(warned) == 1, answers
    assert "of 400 tokens" in warned[0]
    reset = [i for i, a in enumerate(answers) if "started a new one" in a]
    assert reset, answers
    # The request after the reset carries only the system prompt and the new message.
    first_reset_request = h.chat_requests()[reset[0]]["messages"]
    assert [m["role"] for m in first_reset_request] == ["system", "user"]
    assert h.session().prompt_tokens() <= 400 - 50


def test_message_too_large_for_model_is_refused_without_api_call(start_bot: Callable[..., Harness],
                                                                tmp_path: Path) -> None:
    h = tiny_bot(start_bot, tmp_path)
    answer = h.ask("word " * 600)
    assert "too long for tiny" in answer and "Nothing was sent" in answer
    assert h.chat_requests() == []
    assert h.session().messages == []


def test_provider_failure_is_friendly_and_history_stays_consistent(harness: Harness) -> None:
    harness.ask("first")
    harness.llm.script(Reply.server_error())
    answer = harness.ask("second")
    assert "not answering right now" in answer and "Traceback" not in answer
    assert len(harness.chat_requests()) == 2  # sent once: REQUEST_TIMEOUT is all the user waits
    assert [m.content for m in harness.session().messages] == ["first", "echo: first"]
    assert harness.ask("third") == "echo: third"


def test_rate_limited_and_auth_errors_are_worded(harness: Harness) -> None:
    harness.llm.script(Reply.rate_limited())
    harness.llm.script(Reply.rate_limited())
    assert "rate-limiting" in harness.ask("one")
    harness.llm.script(Reply.auth_error())
    assert "refused the bot's API key" in harness.ask("two")
    assert harness.session().messages == []


def test_provider_context_overflow_resets_and_retries_once(harness: Harness) -> None:
    harness.ask("remember me")
    harness.llm.script(Reply.context_too_long())
    answer = harness.ask("next")
    assert "echo: next" in answer and "started a new one" in answer
    assert [m["role"] for m in harness.chat_requests()[-1]["messages"]] == ["system", "user"]
    assert [m.content for m in harness.session().messages] == ["next", "echo: next"]


def test_a_sticker_is_not_something_the_bot_reads(harness: Harness) -> None:
    harness.tg.send_message(ALICE, sticker={"file_id": "x", "file_unique_id": "y", "type": "regular",
                                            "width": 512, "height": 512, "is_animated": False,
                                            "is_video": False})
    assert "can't read stickers" in harness.replies(ALICE, 1)[-1]
    assert harness.tg.calls_of("getFile") == [] and harness.chat_requests() == []


def test_unknown_command(harness: Harness) -> None:
    assert "don't know the command /frobnicate" in harness.ask("/frobnicate now")


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = {
        "TELEGRAM_BOT_TOKEN": {},
        "CONTEXT_WARN_RATIO": {"TELEGRAM_BOT_TOKEN": "1:abc", "OPENAI_API_KEY": "sk-secret-value",
                               "CONTEXT_WARN_RATIO": "lots"},
        "OPENAI_API_KEY": {"TELEGRAM_BOT_TOKEN": "1:abc"},
        "MODELS_FILE": {"TELEGRAM_BOT_TOKEN": "1:abc", "OPENAI_API_KEY": "sk-secret-value",
                        "MODELS_FILE": "/nonexistent.toml"},
    }
    for variable, env in cases.items():
        result = run_bot([], env, tmp_path)
        assert result.returncode == 2, (variable, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and variable in lines[0], (variable, result.stderr)
        assert "sk-secret-value" not in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_model_lists_some_and_says_how_many_more(harness: Harness) -> None:
    featured = [m.id for m in harness.bot.registry.available(featured_only=True)]
    assert len(featured) > 20  # the shipped catalog: enough to need the cut
    answer = harness.ask("/model totally-unknown-xyz")
    assert answer.startswith("I don't know the model totally-unknown-xyz; nothing changed.\nAvailable: ")
    assert answer.count(", ") == 19 and answer.endswith(
        f"…and {len(featured) - 20} more: /model shows them all as buttons")
