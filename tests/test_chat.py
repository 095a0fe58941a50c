"""Unit tests of one turn (chat.run_turn) against an in-process fake model: what was asked, what is kept."""

from __future__ import annotations

from typing import Any

import pytest

import chat
from llm import Completion, ContextTooLong, ProviderDown
from models import ModelInfo
from sessions import MemoryBackend, Place, Profile, Session, SessionStore
from tests.fake_model import FakeModel

MODEL = ModelInfo("tiny", "openai", context_window=400, max_output=50, encoding="o200k_base",
                  exact_tokens=True)
SENTENCE = "The quick brown fox jumps over the lazy dog again and again. " * 3


class SavingStore(SessionStore):
    def __init__(self) -> None:
        super().__init__(MemoryBackend(), lambda user: Profile(user, "tiny", "Be brief.", 0, "none"))
        self.saves = 0

    def save(self, session: Session) -> None:
        self.saves += 1


@pytest.fixture
def store() -> SavingStore:
    return SavingStore()


def turn(store: SavingStore, model: FakeModel, text: str, **kwargs: Any) -> chat.Outcome:
    session = store.get(Place(1, 1))
    return chat.run_turn(session=session, store=store, llm=model, model=MODEL, text=text,  # type: ignore[arg-type]
                         reply_cap=8192, warn_ratio=0.8, stream=True, **kwargs)


def history(store: SavingStore) -> list[str]:
    return [m.content for m in store.get(Place(1, 1)).messages]


def fill(store: SavingStore, model: FakeModel) -> None:
    """Chat until the next SENTENCE no longer fits beside the history."""
    session = store.get(Place(1, 1))
    while session.prompt_tokens(extra=60) <= MODEL.context_window - MODEL.max_output:
        turn(store, model, SENTENCE)


def test_a_turn_asks_with_the_history_and_keeps_both_messages(store: SavingStore) -> None:
    model = FakeModel()
    model.answer("first answer")
    turn(store, model, "hello")
    outcome = turn(store, model, "again")
    assert model.roles() == ["system", "user", "assistant", "user"]
    assert model.requests[-1].max_tokens == 50 and model.requests[-1].stream
    assert history(store) == ["hello", "first answer", "again", "echo: again"]
    assert not outcome.reset and store.saves == 2
    session = store.get(Place(1, 1))
    assert session.profile.encoding == session.conversation.encoding == "o200k_base"  # recounted once


def test_a_reset_is_applied_only_when_the_answer_arrives(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    before = history(store)
    model.answer(ProviderDown("boom"))
    with pytest.raises(ProviderDown):
        turn(store, model, SENTENCE)
    assert model.roles() == ["system", "user"]  # the request went without the history...
    assert history(store) == before  # ...but the history stays until an answer replaces it
    outcome = turn(store, model, SENTENCE)
    assert outcome.reset and history(store) == [SENTENCE, f"echo: {SENTENCE}"]


def test_provider_overflow_retries_once_without_history(store: SavingStore) -> None:
    model = FakeModel()
    turn(store, model, "remember me")
    model.answer(ContextTooLong("too long"), "short answer")
    outcome = turn(store, model, "next")
    assert [len(r.messages) for r in model.requests[-2:]] == [4, 2]
    assert outcome.reset and history(store) == ["next", "short answer"]


def test_overflow_twice_propagates_with_history_intact(store: SavingStore) -> None:
    model = FakeModel()
    turn(store, model, "remember me")
    model.answer(ContextTooLong("too long"), ContextTooLong("still too long"))
    with pytest.raises(ContextTooLong):
        turn(store, model, "next")
    assert history(store) == ["remember me", "echo: remember me"]


def test_too_large_message_asks_nothing(store: SavingStore) -> None:
    model = FakeModel()
    outcome = turn(store, model, "word " * 600)
    assert outcome.too_large and model.requests == [] and history(store) == []


def test_empty_answer_keeps_nothing_but_records_usage(store: SavingStore) -> None:
    model = FakeModel()
    model.answer(Completion("  ", prompt_tokens=12, completion_tokens=0))
    outcome = turn(store, model, "hello")
    assert outcome.empty and history(store) == []
    assert store.get(Place(1, 1)).usage.requests == 1


def test_deltas_reach_the_caller(store: SavingStore) -> None:
    model = FakeModel()
    seen: list[str] = []
    turn(store, model, "stream me", on_delta=seen.append)
    assert seen == ["echo: stream me"]
