"""Reasoning told apart from the answer: the <think> splitter and content parts."""

from __future__ import annotations

import itertools

import pytest

from reasoning import ThinkSplitter, content_parts, drop_orphan_close

CASES = [
    # (content, reasoning, text)
    ("<think>Let me see.</think>\n\nHello world", "Let me see.", "Hello world"),
    ("\n <think>a < b</thinking></think>Hi <think>x</think>", "a < b</thinking>", "Hi <think>x</think>"),
    ("<think>cut while thinking", "cut while thinking", ""),  # unclosed, at the very start
    ("Plain <think> is text after the start", "", "Plain <think> is text after the start"),
    ("<thin", "", "<thin"),  # a partial tag that never completes is text
    ("", "", ""),
]


def split(pieces: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    out = [pair for piece in pieces for pair in splitter.feed(piece)] + splitter.flush()
    return "".join(p for k, p in out if k == "reasoning"), "".join(p for k, p in out if k == "text")


@pytest.mark.parametrize(("content", "reasoning", "text"), CASES)
def test_every_way_of_cutting_the_stream_gives_the_same_split(content: str, reasoning: str,
                                                              text: str) -> None:
    cuts = range(1, len(content))
    for first, second in itertools.combinations_with_replacement(cuts, 2):
        pieces = [content[:first], content[first:second], content[second:]]
        assert split(pieces) == (reasoning, text), pieces
    assert split([content]) == (reasoning, text)
    assert split(list(content)) == (reasoning, text)  # one character per chunk


def test_text_is_passed_on_at_once_and_only_a_possible_tag_waits() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>abc</th") == [("reasoning", "abc")]
    assert splitter.feed("ink>") == []
    assert splitter.feed("\n\n") == []
    assert splitter.feed("Answer") == [("text", "Answer")]


def test_content_parts_of_mistrals_thinking_chunks() -> None:
    content = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
               {"type": "text", "text": "Yes."}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert list(content_parts(content)) == [("reasoning", "hmm"), ("text", "Yes.")]
    assert list(content_parts("plain")) == [("content", "plain")]
    assert list(content_parts(None)) == []


def test_an_answer_holding_only_the_end_of_its_thinking() -> None:
    assert drop_orphan_close("the prompt opened it</think>\n\nAnswer") == "Answer"
    assert drop_orphan_close("<think>x</think> kept as is") == "<think>x</think> kept as is"
