"""Unit tests of one turn (chat.run_turn) against an in-process fake model: what was asked, what is kept."""

from __future__ import annotations

from typing import Any

import pytest

import chat
import context
from context import Policy, Strategy
from llm import Completion, ContextTooLong, ProviderDown, Request
from models import ModelInfo
from quotas import Quotas
from sessions import Place, Profile, Session
from store import MemoryBackend, SessionStore
from tests.fake_model import FakeModel

MODEL = ModelInfo("tiny", "openai", context_window=400, max_output=50, encoding="o200k_base",
                  exact_tokens=True)
SENTENCE = "The quick brown fox jumps over the lazy dog again and again. " * 3


class SavingStore(SessionStore):
    def __init__(self) -> None:
        super().__init__(MemoryBackend(), lambda user: Profile(user, "tiny", "Be brief.", 0, "none"))
        self.saves = self.profile_saves = 0

    def save(self, session: Session) -> None:
        self.saves += 1

    def save_profile(self, profile: Profile) -> None:
        self.profile_saves += 1


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


@pytest.mark.parametrize("strategy", [Strategy.RESET, Strategy.TRIM])
def test_the_history_changes_only_when_the_answer_arrives(store: SavingStore, strategy: Strategy) -> None:
    model = FakeModel()
    fill(store, model)
    before = history(store)
    held = [] if strategy is Strategy.RESET else before[2:]  # trim: one whole turn less
    model.answer(ProviderDown("boom"))
    with pytest.raises(ProviderDown):
        turn(store, model, SENTENCE, policy=Policy(strategy))
    assert contents(model.requests[-1]) == ["Be brief.", *held, SENTENCE]  # the request went without...
    assert history(store) == before  # ...but the history stays until an answer replaces it
    outcome = turn(store, model, SENTENCE, policy=Policy(strategy))
    assert history(store) == [*held, SENTENCE, f"echo: {SENTENCE}"]
    assert (outcome.reset, outcome.trimmed) == (strategy is Strategy.RESET, strategy is Strategy.TRIM)


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


# -- at the context window: trim and summarize -------------------------------------------------------

TRIM = Policy(Strategy.TRIM)
SUMMARIZE = Policy(Strategy.SUMMARIZE)


def exact(store: SavingStore) -> bool:
    """The running count equals a fresh count of every message: accounting stayed exact."""
    session = store.get(Place(1, 1))
    fresh = sum(chat.counter(MODEL).message(m.role, m.content) for m in session.messages)
    return session.history_tokens == fresh == sum(m.tokens for m in session.messages)


def contents(request: Request) -> list[str]:
    return [str(m["content"]) for m in request.messages]


def test_trim_leaves_out_the_oldest_turns_and_says_so_once(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    before = history(store)
    assert len(before) == 8  # four turns, and the next one does not fit beside them
    outcome = turn(store, model, SENTENCE, policy=TRIM)
    assert contents(model.requests[-1]) == ["Be brief.", *before[2:], SENTENCE]  # one whole turn less
    assert history(store) == [*before[2:], SENTENCE, f"echo: {SENTENCE}"]
    assert outcome.trimmed and not outcome.reset and exact(store)
    again = turn(store, model, SENTENCE, policy=TRIM)
    assert contents(model.requests[-1])[0] == "Be brief." and not again.trimmed  # told once per conversation
    assert store.get(Place(1, 1)).conversation.trimmed and exact(store)


def test_summarize_replaces_the_older_turns_by_a_summary_note(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    before, requests = history(store), len(model.requests)
    model.answer(Completion("Alice asked about foxes three times.", prompt_tokens=90, completion_tokens=9),
                 "main answer")
    outcome = turn(store, model, SENTENCE, policy=SUMMARIZE)
    summary, main = model.requests[-2:]
    assert len(model.requests) == requests + 2
    # The bot's own request: not streamed, capped, an instruction and the transcript of turns 1-3, of
    # which the tiny model can read only turns 2 and 3 beside the instruction and the summary.
    assert not summary.stream and summary.max_tokens == min((350 - main_fixed(store)) // 4, MODEL.max_output)
    assert contents(summary)[0].startswith("You condense conversations")
    assert contents(summary)[1] == "\n\n".join(
        f"{'User' if i % 2 == 0 else 'Assistant'}: {text}" for i, text in enumerate(before[2:6]))
    # The answer's request: the system prompt, the note, the latest turn verbatim, the new message.
    note = context.note_text("Alice asked about foxes three times.")
    assert contents(main) == ["Be brief.", note, *before[6:], SENTENCE]
    assert model.roles() == ["system", "system", "user", "assistant", "user"]
    assert history(store) == [note, *before[6:], SENTENCE, "main answer"]
    assert outcome.summarized and not outcome.trimmed and exact(store)
    usage = store.get(Place(1, 1)).usage
    assert usage.requests == 1 and (usage.prompt_tokens, usage.completion_tokens) == (90, 9)  # the summary's


def main_fixed(store: SavingStore) -> int:
    """System prompt + SENTENCE + priming: what a request holds besides the history."""
    session = store.get(Place(1, 1))
    return session.system_tokens + chat.counter(MODEL).message("user", SENTENCE) + 3


class Summarizing(FakeModel):
    """Answers summary requests with "Summary <n>." and everything else with an echo."""

    def __init__(self) -> None:
        super().__init__()
        self.summaries: list[Request] = []

    def complete(self, request: Request, on_delta: Any = None, cancel: Any = None, **_: object) -> Completion:
        if not str(request.messages[0]["content"]).startswith("You condense"):
            return super().complete(request, on_delta, cancel)
        self.summaries.append(request)
        return Completion(f"Summary {len(self.summaries)}.")


def test_a_later_summary_folds_in_the_earlier_one(store: SavingStore) -> None:
    model = Summarizing()
    fill(store, model)
    for _ in range(20):  # chat on until the second summary
        turn(store, model, SENTENCE, policy=SUMMARIZE)
        if len(model.summaries) == 2:
            break
    assert len(model.summaries) == 2
    assert contents(model.summaries[1])[1].startswith("Earlier summary: Summary 1.\n\nUser: ")
    messages = store.get(Place(1, 1)).messages
    assert messages[0].content == context.note_text("Summary 2.")
    assert sum(context.is_summary(m) for m in messages) == 1 and exact(store)


def test_a_failed_summary_falls_back_to_trim_for_that_turn(store: SavingStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    model = FakeModel()
    fill(store, model)
    before = history(store)
    model.answer(ProviderDown("summary refused"))
    outcome = turn(store, model, SENTENCE, policy=SUMMARIZE)
    assert contents(model.requests[-1]) == ["Be brief.", *before[2:], SENTENCE]
    assert history(store) == [*before[2:], SENTENCE, f"echo: {SENTENCE}"]
    assert outcome.trimmed and not outcome.summarized and exact(store)
    assert "summary of conversation" in caplog.text and "trimming instead" in caplog.text


def test_a_summary_too_long_for_the_window_falls_back_to_trim(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    model.answer(Completion("word " * 400))  # a provider that ignored max_tokens
    outcome = turn(store, model, SENTENCE, policy=SUMMARIZE)
    assert outcome.trimmed and not any(context.is_summary(m) for m in store.get(Place(1, 1)).messages)


def test_the_summary_model_writes_the_summary(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    other = ModelInfo("summarizer", "openai", context_window=100_000, max_output=4000, encoding="o200k_base")
    turn(store, model, SENTENCE, policy=Policy(Strategy.SUMMARIZE, summary_model=other))
    assert [r.model.id for r in model.requests[-2:]] == ["summarizer", "tiny"]


# -- /retry ---------------------------------------------------------------------------------------------

def test_retry_asks_again_without_the_old_answer_and_replaces_it(store: SavingStore) -> None:
    model = FakeModel()
    turn(store, model, "one")
    model.answer("a poor answer")
    turn(store, model, "two")
    model.answer("a better answer")
    outcome = turn(store, model, "", retry=True)
    assert contents(model.requests[-1]) == ["Be brief.", "one", "echo: one", "two"]
    assert history(store) == ["one", "echo: one", "two", "a better answer"]
    assert outcome.completion is not None and not outcome.nothing_to_retry and exact(store)


def test_a_failed_or_empty_retry_keeps_the_old_answer(store: SavingStore) -> None:
    model = FakeModel()
    turn(store, model, "one")
    model.answer(ProviderDown("boom"))
    with pytest.raises(ProviderDown):
        turn(store, model, "", retry=True)
    model.answer(" ")
    assert turn(store, model, "", retry=True).empty
    assert history(store) == ["one", "echo: one"]


def test_nothing_to_retry_asks_nothing(store: SavingStore) -> None:
    model = FakeModel()
    outcome = turn(store, model, "", retry=True)
    assert outcome.nothing_to_retry and model.requests == []


def test_the_summary_counts_toward_the_users_quota(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    quotas = Quotas(None, daily_tokens=0, monthly_cost=0.0, timezone="UTC", exempt=lambda user: False)
    model.answer(Completion("Summary.", prompt_tokens=200, completion_tokens=5),
                 Completion("answer", prompt_tokens=150, completion_tokens=2))
    outcome = turn(store, model, SENTENCE, policy=SUMMARIZE, quotas=quotas)
    assert outcome.summarized
    today = quotas.today(1)
    assert (today.prompt_tokens, today.completion_tokens, today.requests) == (350, 7, 2)


@pytest.mark.parametrize("answer", [Completion("", cancelled=True), Completion("", finish_reason="length"),
                                    Completion("   ")])
def test_a_reset_turn_without_an_answer_keeps_the_history(store: SavingStore, answer: Completion) -> None:
    model = FakeModel()
    fill(store, model)
    before = history(store)
    model.answer(answer)  # stopped before the first word, a reasoning model's empty cut, nothing
    outcome = turn(store, model, SENTENCE)
    assert model.roles() == ["system", "user"]  # asked without the history...
    assert history(store) == before and not outcome.reset  # ...which stays, and no "started anew" notice


def test_a_turn_without_reported_usage_still_counts_toward_the_quota(store: SavingStore) -> None:
    quotas = Quotas(None, daily_tokens=1000, monthly_cost=0.0, timezone="UTC", exempt=lambda user: False)
    model = FakeModel()
    model.answer(Completion("an answer the server sent no usage for"))
    turn(store, model, "hello", quotas=quotas)
    today = quotas.today(1)
    assert today.tokens >= 10 and today.requests == 1  # our own count, where the provider gave none
    assert store.get(Place(1, 1)).usage.requests == 0  # /t's "as the API reported" stays the API's


def test_a_discarded_summarys_usage_is_saved_when_the_turn_then_fails(store: SavingStore) -> None:
    model = FakeModel()
    fill(store, model)
    model.answer(Completion("", prompt_tokens=300, completion_tokens=0), ProviderDown("down"))
    with pytest.raises(ProviderDown):
        turn(store, model, SENTENCE, policy=Policy(Strategy.SUMMARIZE))
    assert store.get(Place(1, 1)).usage.prompt_tokens >= 300
    assert store.profile_saves == 1  # what the summary cost is on disk too
