"""Per-user sessions: plain data with pure methods, and the store that owns them.

A `Session` knows its history (each message with its token count, computed once),
model, system prompt and the usage the API reported. It does no I/O. The
`SessionStore` hands sessions out and writes them through to a backend.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tokens import REPLY_PRIMING

log = logging.getLogger(__name__)


@dataclass(slots=True)  # sessions hold many of these: slots halve their memory
class Message:
    role: str
    content: str
    tokens: int


@dataclass
class Usage:
    """What the API reported, summed over the session's life (not reset by /clear)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.requests += 1

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Fit(enum.Enum):
    OK = "ok"
    RESET = "reset"  # fits only without the history
    TOO_LARGE = "too_large"  # does not fit even alone


@dataclass
class Session:
    user_id: int
    model: str
    system_prompt: str
    system_tokens: int
    encoding: str
    name: str = ""
    preset: str | None = None
    messages: list[Message] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    warned: bool = False
    last_active: float = field(default_factory=time.time)
    # Bumped whenever history is dropped, so the store knows to rewrite rather than append.
    epoch: int = 0
    _history_tokens: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._history_tokens = sum(m.tokens for m in self.messages)

    @property
    def history_tokens(self) -> int:
        return self._history_tokens

    def prompt_tokens(self, extra: int = 0) -> int:
        """Tokens of the next request: system prompt, history, `extra`, reply priming."""
        return self.system_tokens + self._history_tokens + extra + REPLY_PRIMING

    def fit(self, message_tokens: int, window: int, reserve: int) -> Fit:
        """Whether a new message of `message_tokens` fits before the reply reserve."""
        budget = window - reserve
        if self.prompt_tokens(message_tokens) <= budget:
            return Fit.OK
        if self.system_tokens + message_tokens + REPLY_PRIMING <= budget:
            return Fit.RESET
        return Fit.TOO_LARGE

    def crosses_warning(self, window: int, ratio: float) -> bool:
        """True once, the first time the prompt reaches `ratio` of the window."""
        if self.warned or self.prompt_tokens() < ratio * window:
            return False
        self.warned = True
        return True

    def add(self, role: str, content: str, tokens: int) -> None:
        self.messages.append(Message(role, content, tokens))
        self._history_tokens += tokens
        self.last_active = time.time()

    def clear(self) -> None:
        """Drop the history; model, system prompt and usage stay."""
        self.messages.clear()
        self._history_tokens = 0
        self.warned = False
        self.epoch += 1

    def set_system_prompt(self, prompt: str, tokens: int, preset: str | None) -> None:
        self.system_prompt, self.system_tokens, self.preset = prompt, tokens, preset
        self.clear()

    def recount(self, encoding: str, count: Callable[[str, str], int]) -> None:
        """Recount every message with another encoding (after a model switch)."""
        if encoding == self.encoding:
            return
        self.encoding = encoding
        self.system_tokens = count("system", self.system_prompt)
        for message in self.messages:
            message.tokens = count(message.role, message.content)
        self._history_tokens = sum(m.tokens for m in self.messages)
        self.epoch += 1

    def request_messages(self) -> list[dict[str, str]]:
        """The history in the chat-completions shape, system prompt first."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": m.role, "content": m.content} for m in self.messages]


class Backend(Protocol):
    """Where sessions persist (SQLite, or nothing)."""

    def load_sessions(self) -> list[Session]: ...

    def save_session(self, session: Session) -> None: ...


class MemoryBackend:
    """Keeps nothing: SESSION_STORE=memory."""

    def load_sessions(self) -> list[Session]:
        return []

    def save_session(self, session: Session) -> None:
        pass


class SessionStore:
    """The only holder of sessions: get or create by user id, save after every change."""

    def __init__(self, backend: Backend, new_session: Callable[[int], Session]) -> None:
        self._backend = backend
        self._new_session = new_session
        self._lock = threading.Lock()
        self._sessions = {s.user_id: s for s in backend.load_sessions()}

    def get(self, user_id: int, name: str = "") -> Session:
        with self._lock:
            session = self._sessions.get(user_id)
            if session is None:
                session = self._sessions[user_id] = self._new_session(user_id)
        if name and session.name != name:
            session.name = name
        return session

    def save(self, session: Session) -> None:
        self._backend.save_session(session)

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)
