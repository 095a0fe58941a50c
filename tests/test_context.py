"""Unit tests of context.py: what a request holds at the context window under each strategy, and how
the history changes once the answer is in (token counts exact, nothing re-encoded)."""

from __future__ import annotations

import pytest

import context
from context import Action, Plan, Strategy
from sessions import Conversation, Message, Place


def turns(*sizes: tuple[int, int]) -> list[Message]:
    """User/assistant pairs with the given token counts; contents name their turn."""
    messages = []
    for i, (question, answer) in enumerate(sizes):
        messages += [Message("user", f"q{i}", question), Message("assistant", f"a{i}", answer)]
    return messages


def conversation(messages: list[Message]) -> Conversation:
    return Conversation(1, Place(1, 1), "o200k_base", messages=list(messages))


HISTORY = turns((10, 20), (10, 20), (10, 20), (10, 20))  # 120 tokens, 4 turns


def test_everything_fits_keeps_everything() -> None:
    assert context.plan(Strategy.TRIM, HISTORY, 8, 120, fixed=30, budget=150) == Plan(Action.KEEP)


def test_a_message_too_large_alone_has_no_plan() -> None:
    for strategy in Strategy:
        assert context.plan(strategy, HISTORY, 8, 120, fixed=151, budget=150) is None


@pytest.mark.parametrize(("fixed", "action"), [
    (30, Action.KEEP),  # 30 + 120 == 150, exactly the budget
    (31, Action.RESET),  # one over with the history
    (150, Action.RESET),  # fits exactly without the history
])
def test_fit_boundaries_at_the_budget(fixed: int, action: Action) -> None:
    plan = context.plan(Strategy.RESET, HISTORY, 8, 120, fixed=fixed, budget=150)
    assert plan is not None and plan.action is action


def test_reset_leaves_out_the_whole_history() -> None:
    assert context.plan(Strategy.RESET, HISTORY, 8, 120, fixed=31, budget=150) == Plan(Action.RESET, 8, 120)


@pytest.mark.parametrize(("fixed", "keep_from", "dropped"), [
    (31, 2, 30),  # one token over: the whole first turn goes, never half of it
    (60, 2, 30),  # exactly one turn over
    (61, 4, 60),
    (140, 8, 120),  # only the new message fits: every turn goes
])
def test_trim_leaves_out_the_oldest_whole_turns(fixed: int, keep_from: int, dropped: int) -> None:
    plan = context.plan(Strategy.TRIM, HISTORY, 8, 120, fixed=fixed, budget=150)
    assert plan == Plan(Action.TRIM, keep_from, dropped)
    assert fixed + 120 - dropped <= 150


def test_trim_counts_only_the_history_before_the_retried_turn() -> None:
    # Retrying turn 3: history[:6] is the context, 90 tokens of it.
    plan = context.plan(Strategy.TRIM, HISTORY, 6, 90, fixed=80, budget=150)
    assert plan == Plan(Action.TRIM, 2, 30)


def test_a_summary_note_goes_first_and_alone() -> None:
    note = Message("system", context.note_text("earlier"), 15)
    history = [note, *HISTORY]
    assert context.turn_start(history, 9, 1) == (1, 15)  # the note alone is a turn of its own
    assert context.turn_start(history, 9, 16) == (3, 45)


def test_summarize_keeps_the_latest_turns_within_half_the_room() -> None:
    history = turns(*[(10, 40)] * 10)  # 500 tokens
    plan = context.plan(Strategy.SUMMARIZE, history, 20, 500, fixed=100, budget=560, note_overhead=10)
    assert plan is not None and plan.action is Action.SUMMARIZE
    room = 560 - 100
    assert plan.summary_tokens == room // 4
    kept = 500 - plan.dropped_tokens
    assert kept <= (room - plan.summary_tokens - 10) / 2
    assert plan.keep_from % 2 == 0 and history[plan.keep_from].role == "user"  # a turn boundary
    assert (plan.keep_from, plan.dropped_tokens) == (14, 350)
    # Should the summary fail, the turn trims only what it must.
    assert plan.trimmed() == Plan(Action.TRIM, 2, 50)


def test_summarize_caps_the_summary_and_trims_when_there_is_no_room_for_one() -> None:
    history = turns(*[(1000, 3000)] * 100)
    plan = context.plan(Strategy.SUMMARIZE, history, 200, 400_000, fixed=100, budget=200_000)
    assert plan is not None and plan.summary_tokens == context.MAX_SUMMARY_TOKENS
    cramped = context.plan(Strategy.SUMMARIZE, HISTORY, 8, 120, fixed=60, budget=150)
    assert cramped == Plan(Action.TRIM, 2, 30)  # 90 tokens of room: a summary could say nothing


def test_summary_source_reads_the_older_part_and_the_earlier_summary() -> None:
    note = Message("system", context.note_text("Alice likes tea."), 12)
    history = [note, *turns((10, 20), (10, 20), (10, 20))]
    plan = Plan(Action.SUMMARIZE, keep_from=5, dropped_tokens=72)
    source, tokens = context.summary_source(history, plan, limit=1000)
    assert [m.content for m in source] == [note.content, "q0", "a0", "q1", "a1"] and tokens == 72
    # Too much for the summary model: the oldest turns go, the earlier summary stays.
    source, tokens = context.summary_source(history, plan, limit=45)
    assert [m.content for m in source] == [note.content, "q1", "a1"] and tokens == 42


def test_summary_request_is_an_instruction_and_a_transcript() -> None:
    note = Message("system", context.note_text("Alice likes tea."), 12)
    source = [note, Message("user", "And coffee?", 5, images=("x.jpg",)), Message("assistant", "Also.", 4)]
    system, user = context.summary_messages(source, cap=100)
    assert system["role"] == "system" and "at most 60 words" in str(system["content"])
    assert user == {"role": "user", "content": "Earlier summary: Alice likes tea.\n\n"
                                               "User: And coffee? [1 image(s) attached]\n\nAssistant: Also."}


def test_apply_trim_drops_the_turns_and_keeps_the_count_exact() -> None:
    talk = conversation(HISTORY)
    context.apply(talk, Plan(Action.TRIM, 4, 60))
    assert [m.content for m in talk.messages] == ["q2", "a2", "q3", "a3"]
    assert talk.history_tokens == 60 == sum(m.tokens for m in talk.messages)
    assert (talk.first_seq, talk.epoch) == (4, 0)  # the store deletes four rows, rewrites nothing


def test_apply_summary_puts_the_note_in_place_of_the_older_part() -> None:
    talk = conversation(HISTORY)
    note = Message("system", context.note_text("q0..q2 in short"), 9)
    context.apply(talk, Plan(Action.SUMMARIZE, 6, 90, 50), note)
    assert [m.content for m in talk.messages] == [note.content, "q3", "a3"]
    assert talk.history_tokens == 39 == sum(m.tokens for m in talk.messages)
    assert context.is_summary(talk.messages[0])
    assert context.summary_body(talk.messages[0]) == "q0..q2 in short"
    assert talk.epoch == 1  # the store rewrites it


def test_apply_reset_empties_the_history_and_rearms_the_warning() -> None:
    talk = conversation(HISTORY)
    talk.warned = talk.trimmed = True
    context.apply(talk, Plan(Action.RESET, 8, 120))
    assert (talk.messages, talk.history_tokens, talk.warned, talk.trimmed) == ([], 0, False, False)


def test_apply_keep_and_a_failed_summary_change_nothing() -> None:
    talk = conversation(HISTORY)
    context.apply(talk, Plan(Action.KEEP))
    context.apply(talk, Plan(Action.SUMMARIZE, 6, 90, 50), None)
    assert talk.messages == HISTORY and talk.history_tokens == 120


def test_last_user_index() -> None:
    assert context.last_user_index(HISTORY) == 6
    assert context.last_user_index(HISTORY[:7]) == 6
    assert context.last_user_index([]) is None
    assert context.last_user_index([Message("system", context.note_text("x"), 3)]) is None
