"""Tests for sessions.py: Session token bookkeeping, fitting, warnings, and the SessionStore."""

from __future__ import annotations

import pytest

from sessions import Fit, Message, Session, SessionStore, Usage
from tokens import REPLY_PRIMING

SYSTEM_TOKENS = 10


def make_session(user_id: int = 1, *history_tokens: int, system_prompt: str = "Be brief.") -> Session:
    session = Session(user_id=user_id, model="gpt-test", system_prompt=system_prompt,
                      system_tokens=SYSTEM_TOKENS, encoding="o200k_base")
    for i, tokens in enumerate(history_tokens):
        session.add("user" if i % 2 == 0 else "assistant", f"message {i}", tokens)
    return session


class RecordingBackend:
    def __init__(self, sessions: list[Session] | None = None) -> None:
        self.loaded = sessions or []
        self.saved: list[Session] = []

    def load_sessions(self) -> list[Session]:
        return self.loaded

    def save_session(self, session: Session) -> None:
        self.saved.append(session)


def make_store(backend: RecordingBackend | None = None) -> tuple[SessionStore, list[int]]:
    """A store over `backend` whose factory records the user ids it created sessions for."""
    created: list[int] = []

    def factory(user_id: int) -> Session:
        created.append(user_id)
        return make_session(user_id)

    return SessionStore(backend or RecordingBackend(), factory), created


# --- Session -------------------------------------------------------------------------------------


def test_add_updates_history_and_prompt_tokens() -> None:
    session = make_session(1, 5, 7)
    assert [m.tokens for m in session.messages] == [5, 7]
    assert session.history_tokens == 12
    assert session.prompt_tokens() == SYSTEM_TOKENS + 12 + REPLY_PRIMING
    assert session.prompt_tokens(extra=4) == SYSTEM_TOKENS + 12 + 4 + REPLY_PRIMING


def test_history_tokens_computed_from_initial_messages() -> None:
    messages = [Message("user", "a", 4), Message("assistant", "b", 6)]
    session = Session(1, "m", "p", 2, "o200k_base", messages=messages)
    assert session.history_tokens == 10


@pytest.mark.parametrize(("message_tokens", "expected"), [
    (1, Fit.OK),
    (27, Fit.OK),  # 10 + 40 + 27 + 3 == 80, exactly the budget
    (28, Fit.RESET),  # one over with history; 10 + 28 + 3 fits alone
    (67, Fit.RESET),  # 10 + 67 + 3 == 80: fits exactly without history
    (68, Fit.TOO_LARGE),
])
def test_fit_boundaries_at_the_budget(message_tokens: int, expected: Fit) -> None:
    session = make_session(1, 20, 20)  # budget = window 100 - reserve 20 = 80
    assert session.fit(message_tokens, window=100, reserve=20) is expected


def test_crosses_warning_fires_once_and_again_after_clear() -> None:
    session = make_session(1)  # prompt = 13
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.add("user", "x", 36)  # prompt = 49 < 50
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.add("assistant", "y", 1)  # prompt = 50: reaches the ratio
    assert session.crosses_warning(window=100, ratio=0.5)
    session.add("user", "z", 30)
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.clear()
    session.add("user", "x", 40)
    assert session.crosses_warning(window=100, ratio=0.5)


def test_clear_drops_history_bumps_epoch_and_keeps_the_rest() -> None:
    session = make_session(1, 5, 7)
    session.usage.add(100, 20)
    session.preset = "coder"
    session.clear()
    assert (session.messages, session.history_tokens, session.epoch) == ([], 0, 1)
    assert (session.model, session.system_prompt, session.system_tokens) == ("gpt-test", "Be brief.", 10)
    assert session.preset == "coder"
    assert session.usage == Usage(prompt_tokens=100, completion_tokens=20, requests=1)
    assert session.prompt_tokens() == SYSTEM_TOKENS + REPLY_PRIMING


def test_set_system_prompt_replaces_prompt_and_clears() -> None:
    session = make_session(1, 5, 7)
    session.warned = True
    session.set_system_prompt("Translate.", 3, preset="translator")
    assert (session.system_prompt, session.system_tokens, session.preset) == ("Translate.", 3, "translator")
    assert (session.messages, session.history_tokens, session.warned, session.epoch) == ([], 0, False, 1)


def length_counter(role: str, content: str) -> int:
    return len(role) + len(content)


def test_recount_with_a_new_encoding() -> None:
    session = make_session(1, 5, 7)
    session.recount("cl100k_base", length_counter)
    assert session.encoding == "cl100k_base"
    assert session.system_tokens == len("system") + len("Be brief.")
    assert [m.tokens for m in session.messages] == [len("user") + 9, len("assistant") + 9]
    assert session.history_tokens == sum(m.tokens for m in session.messages)
    assert session.epoch == 1


def test_recount_with_the_same_encoding_does_nothing() -> None:
    session = make_session(1, 5, 7)
    session.recount("o200k_base", lambda role, content: pytest.fail("must not recount"))
    assert (session.history_tokens, session.system_tokens, session.epoch) == (12, SYSTEM_TOKENS, 0)


def test_request_messages_shape() -> None:
    session = make_session(1, 5, 7)
    assert session.request_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "message 0"},
        {"role": "assistant", "content": "message 1"},
    ]
    without_system = make_session(2, 5, system_prompt="")
    assert without_system.request_messages() == [{"role": "user", "content": "message 0"}]


def test_usage_sums_requests() -> None:
    usage = Usage()
    usage.add(10, 2)
    usage.add(30, 8)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.requests, usage.total) == (40, 10, 2, 50)


# --- SessionStore --------------------------------------------------------------------------------


def test_store_get_creates_once_and_returns_the_same_object() -> None:
    store, created = make_store()
    first = store.get(7)
    assert store.get(7) is first
    assert created == [7]
    assert len(store) == 1


def test_store_users_are_independent() -> None:
    store, created = make_store()
    alice, bob = store.get(1), store.get(2)
    alice.add("user", "hi", 5)
    assert alice is not bob
    assert (alice.user_id, bob.user_id) == (1, 2)
    assert (alice.history_tokens, bob.history_tokens) == (5, 0)
    assert created == [1, 2]
    assert {s.user_id for s in store.all()} == {1, 2}


def test_store_get_updates_the_name() -> None:
    store, _ = make_store()
    assert store.get(1, "Alice").name == "Alice"
    assert store.get(1).name == "Alice"  # an empty name keeps the old one
    assert store.get(1, "Alice (@alice)").name == "Alice (@alice)"


def test_store_serves_loaded_sessions_without_the_factory() -> None:
    loaded = make_session(5, 3)
    store, created = make_store(RecordingBackend([loaded]))
    assert store.get(5) is loaded
    assert created == []


def test_store_save_calls_the_backend() -> None:
    backend = RecordingBackend()
    store, _ = make_store(backend)
    session = store.get(3)
    store.save(session)
    assert backend.saved == [session]
    assert backend.saved[0] is session
