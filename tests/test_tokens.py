"""Tests for tokens.py: exact counts against tiktoken and the OpenAI cookbook message formula."""

from __future__ import annotations

import threading

import pytest
import tiktoken

import tokens
from tokens import REPLY_PRIMING, counter_for, known_encoding

TEXTS = [
    "",
    "hello world",
    "Привет, мир! 你好 👋🏽",
    "<|endoftext|>",
    "before <|endoftext|> after <|fim_prefix|>",
    "def f(x):\n    return x ** 2  # square\n",
]


@pytest.fixture(scope="module")
def o200k() -> tiktoken.Encoding:
    return tiktoken.get_encoding("o200k_base")


def encode(encoding: tiktoken.Encoding, text: str) -> list[int]:
    """Special-token text counted as plain text, as the bot does for user and model text."""
    return encoding.encode(text, disallowed_special=())


def cookbook_num_tokens(messages: list[dict[str, str]], encoding: tiktoken.Encoding) -> int:
    """`num_tokens_from_messages` from the OpenAI cookbook (gpt-4o and later)."""
    tokens_per_message, tokens_per_name = 3, 1
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            num_tokens += len(encode(encoding, value))
            if key == "name":
                num_tokens += tokens_per_name
    return num_tokens + 3  # every reply is primed with <|start|>assistant<|message|>


def test_counter_is_exact_when_the_encoding_loads() -> None:
    counter = counter_for("o200k_base")
    assert (counter.encoding_name, counter.exact) == ("o200k_base", True)


@pytest.mark.parametrize("text", TEXTS)
def test_count_equals_tiktoken(o200k: tiktoken.Encoding, text: str) -> None:
    assert counter_for("o200k_base").count(text) == len(encode(o200k, text))


def test_special_token_text_is_counted_as_plain_text(o200k: tiktoken.Encoding) -> None:
    # As one special token it would be 1; as text it is several ordinary tokens.
    assert counter_for("o200k_base").count("<|endoftext|>") == len(encode(o200k, "<|endoftext|>")) > 1


def test_cl100k_counts_differ_from_o200k() -> None:
    text = "Привет, мир! Как дела?"
    cl100k = tiktoken.get_encoding("cl100k_base")
    assert counter_for("cl100k_base").count(text) == len(encode(cl100k, text))
    assert counter_for("cl100k_base").count(text) != counter_for("o200k_base").count(text)


def test_message_follows_the_cookbook_formula(o200k: tiktoken.Encoding) -> None:
    counter = counter_for("o200k_base")
    content = "What is the capital of France?"
    expected = 3 + len(encode(o200k, "user")) + len(encode(o200k, content))
    assert counter.message("user", content) == expected
    assert counter.message("user", content, name="alice_42") == expected + 1 + len(encode(o200k, "alice_42"))


def test_conversation_total_matches_cookbook(o200k: tiktoken.Encoding) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain <|endoftext|> in one line.", "name": "alice"},
        {"role": "assistant", "content": "It marks the end of a document for the tokenizer."},
        {"role": "user", "content": "Спасибо! И ещё: 2+2?"},
    ]
    counter = counter_for("o200k_base")
    ours = sum(counter.message(m["role"], m["content"], m.get("name")) for m in messages) + REPLY_PRIMING
    assert ours == cookbook_num_tokens(messages, o200k)


@pytest.mark.parametrize(("model_id", "encoding"), [
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-5.4-mini", "o200k_base"),
    ("claude-haiku-5-5", None),
    ("gpt-6-luna", None),  # newer than tiktoken's table: its counts are estimates
    ("no-such-model", None),
])
def test_known_encoding(model_id: str, encoding: str | None) -> None:
    assert known_encoding(model_id) == encoding


def test_unknown_encoding_gives_an_estimating_counter() -> None:
    counter = counter_for("no_such_encoding_for_tests")
    assert counter.exact is False
    short, long = counter.count("hello world"), counter.count("hello world " * 100)
    assert 0 < short < long
    assert counter.count("") == 0
    assert counter.message("user", "hello world") == 3 + counter.count("user") + short


def test_inexact_counter_keeps_exact_flag_false_but_counts_exactly(o200k: tiktoken.Encoding) -> None:
    # Non-OpenAI providers: tiktoken's numbers, flagged as approximate for display.
    counter = counter_for("o200k_base", exact=False)
    assert counter.exact is False
    assert counter.count("hello world") == len(encode(o200k, "hello world"))


def test_a_download_that_never_finishes_gives_estimates_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    asked: list[str] = []

    def stalled_download(name: str) -> tiktoken.Encoding:
        asked.append(name)
        release.wait(10)  # a network that drops packets: tiktoken itself has no timeout
        raise ConnectionError("gave up")

    monkeypatch.setattr(tiktoken, "get_encoding", stalled_download)
    monkeypatch.setattr(tokens, "DOWNLOAD_TIMEOUT", 0.2)
    monkeypatch.setattr(tokens, "_warned", threading.Event())
    try:
        counter = counter_for("stalled_encoding_for_tests")
        assert counter.exact is False and counter.count("hello world") > 0
        assert asked == ["stalled_encoding_for_tests"]
        assert "stalled_encoding_for_tests unavailable (not loaded after 0.2 s" in caplog.text
        assert "estimates" in caplog.text
    finally:
        release.set()
