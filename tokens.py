"""Token counting with tiktoken, using the OpenAI cookbook formula for chat messages.

A request costs 3 tokens per message, the tokens of each field's value (role,
content, name), 1 more for a name, and 3 to prime the reply. Each message is
encoded once, when it is added to a session, so a turn's cost does not grow
with the length of the history.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import tiktoken

log = logging.getLogger(__name__)

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
FALLBACK_ENCODING = "o200k_base"


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: tuple[()] = ()) -> list[int]: ...


@dataclass(frozen=True)
class Counter:
    """Counts tokens for one encoding; `exact` is False when only an estimate is possible."""

    encoding_name: str
    exact: bool
    _encoding: _Encoding | None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is None:
            return _estimate(text)
        # Model output and user text may contain "<|endoftext|>": count it as text.
        return len(self._encoding.encode(text, disallowed_special=()))

    def message(self, role: str, content: str, name: str | None = None) -> int:
        """Tokens one chat message adds to a request."""
        tokens = TOKENS_PER_MESSAGE + self.count(role) + self.count(content)
        if name:
            tokens += TOKENS_PER_NAME + self.count(name)
        return tokens


def _estimate(text: str) -> int:
    # About 4 bytes of UTF-8 per token for English, fewer for other scripts: round up.
    return max(1, (len(text.encode("utf-8", "surrogatepass")) + 3) // 4)


_warned = threading.Event()


@lru_cache(maxsize=16)
def counter_for(encoding_name: str, exact: bool = True) -> Counter:
    """The counter for an encoding; an estimating counter if it cannot be loaded."""
    try:
        encoding = tiktoken.get_encoding(encoding_name)
    except Exception as exc:  # tiktoken raises plain errors for downloads and unknown names
        if not _warned.is_set():
            _warned.set()
            log.warning("tiktoken encoding %s unavailable (%s); token counts are estimates",
                        encoding_name, exc)
        return Counter(encoding_name, False, None)
    return Counter(encoding_name, exact, encoding)


def known_encoding(model_id: str) -> str | None:
    """tiktoken's encoding for an OpenAI model id; None for ids tiktoken does not know."""
    try:
        return tiktoken.encoding_name_for_model(model_id)
    except KeyError:
        return None
