"""Several providers at once, their quirks, discovery, the model picker and presets."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import Bot
from config import ConfigError, load_config
from tests.conftest import ALICE, Harness, bot_env, buttons
from tests.fakes.openai import FakeOpenAI, Reply, echo
from tests.fakes.telegram import FakeTelegram


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    servers = {
        "lab": FakeOpenAI(api_key="lab-key", reject_stream_options=True),
        "reasoner": FakeOpenAI(api_key="rk", reject_max_tokens=True),
        "openrouter": FakeOpenAI(api_key="or-key", models=[
            {"id": "anthropic/claude-sonnet-5.5", "context_length": 777_000},
            {"id": "meta/llama-9-chat", "context_length": 131_072},
            {"id": "lab/pinned", "context_length": 4_000},
        ]),
        "ollama": FakeOpenAI(models=[{"id": "llama3.2"}, {"id": "nomic-embed-text"}],
                             ollama_contexts={"llama3.2": 131_072}, ollama_running={"llama3.2": 32_768}),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def models_file(tmp_path: Path, fakes: dict[str, FakeOpenAI]) -> str:
    path = tmp_path / "models.toml"
    path.write_text(f"""
[providers.lab]
base_url = "{fakes['lab'].url}"
api_key_env = "LAB_API_KEY"

[providers.reasoner]
base_url = "{fakes['reasoner'].url}"
api_key_env = "REASONER_API_KEY"

[[models]]
id = "lab-chat"
provider = "lab"
context_window = 32000
max_output = 1000

[[models]]
id = "deep-thinker"
provider = "reasoner"
context_window = 64000
max_output = 2000

[[models]]
id = "lab/pinned"
provider = "openrouter"
context_window = 16000
max_output = 500
""")
    return str(path)


def presets_file(tmp_path: Path) -> str:
    path = tmp_path / "presets.toml"
    path.write_text('''
[presets.pirate]
title = "Pirate"
description = "Talks like a pirate"
prompt = "Answer like a pirate."
model = "lab-chat"
temperature = 0.2

[presets.translator]
title = "My translator"
description = "Into Latin"
prompt = "Translate everything into Latin."
''')
    return str(path)


@pytest.fixture
def multi(start_bot: Callable[..., Harness], fakes: dict[str, FakeOpenAI], tmp_path: Path) -> Harness:
    h = start_bot(MODELS_FILE=models_file(tmp_path, fakes), PRESETS_FILE=presets_file(tmp_path),
                  LAB_API_KEY="lab-key", REASONER_API_KEY="rk", OPENROUTER_API_KEY="or-key",
                  OPENROUTER_BASE_URL=fakes["openrouter"].url, OLLAMA_BASE_URL=fakes["ollama"].url)
    registry = h.bot.registry
    h.tg.wait_for(lambda: "meta/llama-9-chat" in registry.models and "llama3.2" in registry.models,
                  timeout=10)
    return h


def test_provider_refusing_stream_options_is_learnt_once(multi: Harness,
                                                         fakes: dict[str, FakeOpenAI]) -> None:
    multi.ask("/model lab-chat")
    assert multi.ask("one") == "echo: one"
    assert multi.ask("two") == "echo: two"
    bodies = [r.body for r in fakes["lab"].chat_requests()]
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    assert all(b["stream"] for b in bodies)


def test_model_refusing_max_tokens_gets_max_completion_tokens(multi: Harness,
                                                              fakes: dict[str, FakeOpenAI]) -> None:
    multi.ask("/model deep-thinker")
    assert multi.ask("think") == "echo: think"
    assert multi.ask("again") == "echo: again"
    bodies = [r.body for r in fakes["reasoner"].chat_requests()]
    assert [("max_tokens" in b, b.get("max_completion_tokens")) for b in bodies] == [
        (True, None), (False, 2000), (False, 2000)]


def test_provider_refusing_max_completion_tokens_gets_max_tokens(start_bot: Callable[..., Harness],
                                                                 tmp_path: Path) -> None:
    def strict(body: dict[str, Any]) -> Reply:
        if "max_completion_tokens" in body:  # as Mistral answers an unknown field
            return Reply(status=422, error={"message": "extra_forbidden: max_completion_tokens",
                                            "type": "invalid_request_error", "param": None, "code": None})
        return echo(body)

    with FakeOpenAI(default=strict) as server:
        models = tmp_path / "strict.toml"
        models.write_text(f'''
[providers.strict]
base_url = "{server.url}"

[[models]]
id = "thinker"
provider = "strict"
context_window = 32000
max_output = 1000
reasoning = true
''')
        h = start_bot(MODELS_FILE=str(models), DEFAULT_MODEL="thinker")
        assert h.ask("one") == "echo: one"
        assert h.ask("two") == "echo: two"
        sent = [sorted(k for k in r.body if k.startswith("max_")) for r in server.chat_requests()]
        assert sent == [["max_completion_tokens"], ["max_tokens"], ["max_tokens"]]


def test_discovered_context_windows_and_precedence(multi: Harness) -> None:
    models = multi.bot.registry.models
    assert models["meta/llama-9-chat"].context_window == 131_072  # reported by the provider
    assert models["anthropic/claude-sonnet-5.5"].context_window == 777_000  # reported beats the table
    assert models["lab/pinned"].context_window == 16_000  # the user's MODELS_FILE beats both
    assert models["llama3.2"].context_window == 32_768  # what Ollama runs it with (/api/ps), not its maximum
    assert "nomic-embed-text" not in models  # not a chat model


def test_discovered_model_is_usable_by_id(multi: Harness, fakes: dict[str, FakeOpenAI]) -> None:
    assert "switched to meta/llama-9-chat" in multi.ask("/model meta/llama-9-chat")
    assert multi.ask("hi there") == "echo: hi there"
    assert fakes["openrouter"].chat_requests()[-1].body["model"] == "meta/llama-9-chat"
    assert "≈" in multi.ask("/t")  # not an OpenAI tokenizer: an estimate


def test_picker_switches_model_and_edits_the_keyboard(multi: Harness, fakes: dict[str, FakeOpenAI]) -> None:
    multi.ask("/model")
    picker = multi.tg.message_objects(ALICE)[-1]
    shown = buttons(picker)
    assert any(text.startswith("lab-chat") for text in shown)
    assert any(text.startswith("llama3.2") for text in shown)  # Ollama: discovered and featured
    assert not any(text.startswith("meta/llama-9-chat") for text in shown)  # listed only: by id
    lab = next(data for text, data in shown.items() if text.startswith("lab-chat"))
    multi.tg.press_button(ALICE, picker["message_id"], ALICE, lab)
    multi.tg.wait_for(lambda: multi.tg.message_objects(ALICE)[-1]["edit_count"] == 1)
    multi.idle()
    edited = multi.tg.message_objects(ALICE)[-1]
    assert "Model switched to lab-chat" in edited["text"]
    marked = [text for text in buttons(edited) if "✅" in text]
    assert len(marked) == 1 and marked[0].startswith("✅ lab-chat")
    assert multi.tg.callback_answers and multi.session().model == "lab-chat"
    multi.ask("via lab")
    assert fakes["lab"].chat_requests()[-1].body["messages"][-1]["content"] == "via lab"


def test_presets_shipped_and_user_overrides(multi: Harness, fakes: dict[str, FakeOpenAI]) -> None:
    assert "Proofreader" in multi.ask("/preset proofreader")
    assert "proofreader" in multi.session().system_prompt.lower()
    assert "preset Proofreader" in multi.ask("/system")
    # The user's file overrides the shipped translator and adds a pirate with its own model.
    multi.ask("/preset translator")
    assert multi.session().system_prompt == ("Translate everything into Latin.\n\n"
                                             "The user's Telegram app language code is en.")
    assert "Pirate" in multi.ask("/preset pirate")
    assert multi.session().model == "lab-chat" and multi.session().messages == []
    multi.ask("ahoy")
    body = fakes["lab"].chat_requests()[-1].body
    assert body["temperature"] == 0.2
    assert body["messages"][0]["content"].startswith("Answer like a pirate.")
    assert "There is no preset nope" in multi.ask("/preset nope")
    info = multi.ask("/info")
    assert "pirate: Talks like a pirate" in info and "english_teacher" in info


def test_preset_buttons(multi: Harness) -> None:
    multi.ask("/preset")
    menu = multi.tg.message_objects(ALICE)[-1]
    data = list(buttons(menu).values())
    assert "preset:translator" in data and "preset:code" in data
    multi.ask("remember this")
    multi.tg.press_button(ALICE, menu["message_id"], ALICE, "preset:code")
    multi.tg.wait_for(lambda: "Code assistant" in (multi.tg.message_objects(ALICE)[0]["text"] or ""))
    multi.idle()
    assert multi.session().preset == "code" and multi.session().messages == []


def test_only_anthropic_configured(start_bot: Callable[..., Harness], fakes: dict[str, FakeOpenAI]) -> None:
    h = start_bot(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="lab-key",
                  ANTHROPIC_BASE_URL=fakes["lab"].url)
    model = h.session().model
    assert h.bot.registry.models[model].provider == "anthropic"
    assert h.ask("hello claude") == "echo: hello claude"
    assert fakes["lab"].chat_requests()[-1].body["model"] == model
    assert all(m.provider == "anthropic" for m in h.bot.registry.models.values())


def test_only_ollama_configured(start_bot: Callable[..., Harness], fakes: dict[str, FakeOpenAI]) -> None:
    h = start_bot(OPENAI_API_KEY="", OPENAI_BASE_URL="", OLLAMA_BASE_URL=fakes["ollama"].url)
    assert h.session().model == "llama3.2"
    assert h.ask("local?") == "echo: local?"
    assert h.bot.registry.models["llama3.2"].context_window == 32_768


def test_unknown_default_model_still_works(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DEFAULT_MODEL="my-private-finetune")
    assert h.ask("hi") == "echo: hi"
    assert h.chat_requests()[-1]["model"] == "my-private-finetune"
    assert "Context window: 8,192" in h.ask("/t")


def test_session_on_removed_model_moves_to_default(harness: Harness) -> None:
    assert harness.bot.registry.discovered.wait(10)
    harness.session().model = "gpt-3.5-turbo"  # shut down since the session was saved
    answer = harness.ask("still there?")
    assert "gpt-3.5-turbo is no longer available" in answer and "echo: still there?" in answer
    assert harness.session().model == "gpt-5.4-mini"


def test_session_model_kept_while_providers_never_list_theirs(harness: Harness) -> None:
    assert harness.bot.registry.discovered.wait(10) and harness.bot.app is not None
    harness.bot.registry.discovered.clear()  # as just after a restart, before the lists arrive
    harness.bot.app.discovery_wait = 0.1
    harness.session().model = "llama-from-a-list"
    assert harness.ask("hi") == "echo: hi"
    assert harness.chat_requests()[-1]["model"] == "llama-from-a-list"


def test_message_right_after_a_restart_waits_for_the_lists_then_leaves_a_removed_model(
        harness: Harness) -> None:
    registry = harness.bot.registry
    assert registry.discovered.wait(10)
    registry.discovered.clear()  # as just after a restart: the lists arrive a moment later
    harness.session().model = "gpt-3.5-turbo"
    threading.Timer(0.3, registry.discovered.set).start()
    answer = harness.ask("right away")
    assert "gpt-3.5-turbo is no longer available" in answer and "echo: right away" in answer
    assert [body["model"] for body in harness.chat_requests()] == ["gpt-5.4-mini"]


def test_only_ollama_and_it_lists_nothing_stops_with_a_clear_error(tg: FakeTelegram, tmp_path: Path) -> None:
    with FakeOpenAI(models=[]) as empty:
        config = load_config(bot_env(tg, empty, tmp_path / "data", OPENAI_API_KEY="", OPENAI_BASE_URL="",
                                     OLLAMA_BASE_URL=empty.url), tmp_path / "absent.env")
        bot = Bot(config)
        with pytest.raises(ConfigError, match="DEFAULT_MODEL"):
            bot.start()
        bot.shutdown(grace=0)


def test_gateway_at_openai_base_url_offers_what_it_lists(start_bot: Callable[..., Harness]) -> None:
    listed = [{"id": "corp-llm", "max_input_tokens": 64_000}, {"id": "gpt-5.4"}, {"id": "text-embedding-3"}]
    with FakeOpenAI(api_key="gw-key", models=listed, unknown_model_400=True) as gateway:
        h = start_bot(OPENAI_BASE_URL=gateway.url, OPENAI_API_KEY="gw-key")
        assert h.bot.registry.discovered.wait(10)
        assert h.ask("hi") == "echo: hi"  # the default moved to a model the gateway serves
        assert gateway.chat_requests()[-1].body["model"] == "corp-llm"
        assert "64,000" in h.ask("/t")
        h.ask("/model")
        shown = " ".join(buttons(h.tg.message_objects(ALICE)[-1]))
        assert "corp-llm" in shown and "gpt-5.4" in shown and "gpt-5.4-mini" not in shown
        assert "switched to gpt-5.4" in h.ask("/model gpt-5.4")


def test_gateway_refusing_a_pinned_model_says_it_is_unavailable(start_bot: Callable[..., Harness]) -> None:
    with FakeOpenAI(api_key="gw-key", models=[{"id": "corp-llm"}], unknown_model_400=True) as gateway:
        h = start_bot(OPENAI_BASE_URL=gateway.url, OPENAI_API_KEY="gw-key", DEFAULT_MODEL="gpt-5.4-mini")
        answer = h.ask("hi")  # LiteLLM's 400 "Invalid model name"
        assert "does not serve gpt-5.4-mini" in answer and "/model" in answer
        assert len(gateway.chat_requests()) == 1 and h.session().messages == []


def test_out_of_credit_is_told_as_such_and_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.llm.script(Reply.insufficient_quota())
    with caplog.at_level(logging.ERROR, logger="llm"):
        answer = harness.ask("hi")
    assert "out of credit" in answer and "rate-limiting" not in answer
    assert "provider openai" in caplog.text and "insufficient_quota" in caplog.text
    assert len(harness.chat_requests()) == 1


def test_long_retry_after_is_told_at_once(harness: Harness) -> None:
    harness.llm.script(Reply.rate_limited(retry_after=120), "not asked")
    assert "try again in about 120 s" in harness.ask("hi")
    assert len(harness.chat_requests()) == 1


def test_reasoning_model_cut_before_answering_is_told_so(harness: Harness) -> None:
    harness.llm.script(Reply(reasoning="Let me consider every case " * 20, chunks=[], finish_reason="length"))
    answer = harness.ask("a hard question")
    assert "spent its whole output budget thinking" in answer and "Let me consider" not in answer
    assert harness.chat_requests()[-1]["max_completion_tokens"] == 128_000  # gpt-5.4-mini's own limit
    assert harness.session().messages == []


@pytest.mark.parametrize("stream", ["true", "false"])
def test_shutdown_cuts_a_silent_model_request(start_bot: Callable[..., Harness], llm: FakeOpenAI,
                                              stream: str) -> None:
    h = start_bot(STREAM=stream)
    llm.script(Reply(hang=True))  # the model sends no byte at all
    h.say("hi")
    llm.wait_for(llm.chat_requests, what="the model request")
    h.bot.shutdown(grace=0.2)
    llm.wait_for(lambda: llm.hangups, timeout=2, what="the model's connection closed by the shutdown")


def test_a_default_model_typo_is_named_with_its_near_match(start_bot: Callable[..., Harness],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    h = start_bot(DEFAULT_MODEL="gpt-5.4-mni")
    assert h.bot.registry.discovered.wait(10)
    assert ("DEFAULT_MODEL gpt-5.4-mni is neither described nor listed by any provider "
            "(did you mean gpt-5.4-mini") in caplog.text
