"""Telling a model's reasoning from its answer.

Reasoning arrives beside the answer (DeepSeek's `reasoning_content`, OpenRouter's `reasoning`), as
"thinking" content parts (Mistral), or inside the answer as `<think>…</think>` (local models). Tags may
be split across stream chunks, and the closing one may never come (an answer cut while thinking).
Only a block at the very start of the answer counts: a `<think>` later on is text the model meant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

OPEN, CLOSE = "<think>", "</think>"
Kind = Literal["text", "reasoning"]


class ThinkSplitter:
    """Feed content pieces in order; get (kind, piece) pairs back, holding back only a partial tag."""

    def __init__(self) -> None:
        self._state: Literal["start", "think", "gap", "text"] = "start"
        self._pending = ""

    def feed(self, piece: str) -> list[tuple[Kind, str]]:
        self._pending += piece
        out: list[tuple[Kind, str]] = []
        while self._pending:
            if self._state == "start":
                head = self._pending.lstrip()
                if head.startswith(OPEN):
                    self._pending, self._state = head[len(OPEN):], "think"
                elif OPEN.startswith(head):
                    break  # whitespace or "<thi" so far: it may still become the tag
                else:
                    self._state = "text"
            elif self._state == "think":
                end = self._pending.find(CLOSE)
                if end >= 0:
                    if end:
                        out.append(("reasoning", self._pending[:end]))
                    self._pending, self._state = self._pending[end + len(CLOSE):], "gap"
                    continue
                safe = len(self._pending) - _partial_tag(self._pending, CLOSE)
                if safe:
                    out.append(("reasoning", self._pending[:safe]))
                self._pending = self._pending[safe:]
                break
            elif self._state == "gap":  # the blank lines between "</think>" and the answer
                self._pending = self._pending.lstrip()
                if self._pending:
                    self._state = "text"
            else:
                out.append(("text", self._pending))
                self._pending = ""
        return out

    def flush(self) -> list[tuple[Kind, str]]:
        """What is still held back, at the end of the answer."""
        rest, self._pending = self._pending, ""
        if not rest or self._state == "gap":
            return []
        return [("reasoning" if self._state == "think" else "text", rest)]


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def content_parts(content: object) -> Iterator[tuple[Kind | Literal["content"], str]]:
    """A message's or delta's content: a string (still to split), or a list of text and thinking parts."""
    if isinstance(content, str):
        yield "content", content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "thinking":
                yield from (("reasoning", text) for text in _texts(part.get("thinking")))
            elif isinstance(part.get("text"), str):
                yield "text", part["text"]


def _texts(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                yield item["text"]
            elif isinstance(item, str):
                yield item


def drop_orphan_close(text: str) -> str:
    """Some templates put `<think>` in the prompt, so the answer holds only its end: keep what follows it."""
    if CLOSE in text and OPEN not in text:
        return text.rsplit(CLOSE, 1)[1].lstrip()
    return text
