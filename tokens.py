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
# tiktoken downloads an encoding on first use with no timeout: a network that drops packets would
# hold the first message for ever. Past this, counts are estimates (marked as such) for this run.
DOWNLOAD_TIMEOUT = 20.0


@lru_cache(maxsize=16)
def counter_for(encoding_name: str, exact: bool = True) -> Counter:
    """The counter for an encoding; an estimating counter (exact=False) if it cannot be loaded."""
    try:
        encoding = _load(encoding_name, DOWNLOAD_TIMEOUT)
    except Exception as exc:  # tiktoken raises plain errors for downloads and unknown names
        if not _warned.is_set():
            _warned.set()
            log.warning("tiktoken encoding %s unavailable (%s); token counts are estimates, shown with ≈ "
                        "(TIKTOKEN_CACHE_DIR can point to a folder holding the encodings)",
                        encoding_name, exc)
        return Counter(encoding_name, False, None)
    return Counter(encoding_name, exact, encoding)


@dataclass
class _Loading:
    done: threading.Event
    encoding: _Encoding | None = None
    error: BaseException | None = None


_loads: dict[str, _Loading] = {}
_loads_lock = threading.Lock()


def _load(name: str, timeout: float) -> _Encoding:
    """tiktoken's encoding, loaded in a helper thread so that a stalled download times out.

    The helper goes on after a timeout: a download that finishes late fills tiktoken's cache for
    the next start.
    """
    with _loads_lock:
        loading = _loads.get(name)
        if loading is None:
            loading = _loads[name] = _Loading(threading.Event())
            threading.Thread(target=_fetch, args=(name, loading), name="tiktoken", daemon=True).start()
    if not loading.done.wait(timeout):
        raise TimeoutError(f"not loaded after {timeout:g} s: is the download blocked?")
    if loading.error is not None:
        raise loading.error
    assert loading.encoding is not None
    return loading.encoding


def _fetch(name: str, loading: _Loading) -> None:
    try:
        loading.encoding = tiktoken.get_encoding(name)
    except Exception as exc:
        loading.error = exc
    finally:
        loading.done.set()


def known_encoding(model_id: str) -> str | None:
    """tiktoken's encoding for an OpenAI model id; None for ids tiktoken does not know."""
    try:
        return tiktoken.encoding_name_for_model(model_id)
    except KeyError:
        return None
