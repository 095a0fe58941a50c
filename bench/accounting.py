"""Figure 3 — token accounting cost of one turn as the history grows (1k to 1M tokens), per strategy.

One turn's accounting is what `chat.run_turn` does around the model calls, through the same
`chat.Turn` steps: count the user message, plan what the request holds (`context.plan`), count a
summary note when one is made, apply the plan, add the user and assistant messages (counting the
answer), check the warning ratio. The window is sized so that the history is at the window's room:
the strategy acts whenever the history is full, as it would in a long conversation.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
import timeit

from _common import Report, Row, median, print_report, quiet

import context
from chat import Outcome, Turn
from context import Action, Strategy
from models import ModelInfo
from sessions import Conversation, Message, Place, Profile, Session
from tokens import FALLBACK_ENCODING, Counter, counter_for

SIZES = (1_000, 10_000, 100_000, 1_000_000)
RESERVE = 8192
WARN_RATIO = 0.8
TARGET_MS, TARGET_GROWTH = 5.0, 2.0

USER_TEXT = ("Could you compare the two approaches we discussed, list the trade-offs of each, and say "
             "which one you would pick for a small team that ships every week? Keep it short, please.")
ANSWER = ("Short version: pick the second approach. " + "It keeps deployments simple, the tests fast and "
          "the on-call load low, while the first one only pays off at a scale you do not have yet. ") * 4
SUMMARY = ("The user compares two approaches for a small team that ships weekly; the assistant "
           "recommends the second (simple deployments, fast tests, low on-call load). ") * 3
_HISTORY_TEXTS = [
    ("user", "What did we decide about the caching layer and the cache invalidation on writes?"),
    ("assistant", "We decided to invalidate on every write and keep a short TTL as a safety net; "
                  "the write path publishes an event that every reader subscribes to." * 2),
]


def history(tokens: int, counter: Counter) -> list[Message]:
    """Messages alternating user/assistant, about `tokens` tokens in all (counted once, then reused)."""
    counted = [Message(role, text, counter.message(role, text)) for role, text in _HISTORY_TEXTS]
    messages: list[Message] = []
    total = 0
    for template in itertools.cycle(counted):
        if total >= tokens:
            return messages
        messages.append(Message(template.role, template.content, template.tokens))
        total += template.tokens
    raise AssertionError("unreachable")


def session_with(messages: list[Message], counter: Counter) -> Session:
    prompt = "You are a helpful assistant."
    profile = Profile(1, "bench", prompt, counter.message("system", prompt), counter.encoding_name)
    return Session(profile, Conversation(1, Place(1, 1), counter.encoding_name, messages=list(messages)))


def model_for(room: int, counter: Counter) -> ModelInfo:
    """A model whose window leaves `room` tokens of history beside the system prompt and a question."""
    fixed = counter.message("system", "You are a helpful assistant.") + counter.message("user", USER_TEXT) + 3
    reserve = min(RESERVE, room + fixed)  # a reserve is at most half the window
    return ModelInfo("bench", "openai", context_window=room + fixed + reserve, max_output=reserve,
                     encoding=counter.encoding_name, exact_tokens=counter.exact)


def one_turn(session: Session, model: ModelInfo, strategy: Strategy) -> Action:
    """The accounting of one turn, as in chat.run_turn (the model calls and request building left out)."""
    turn = Turn.begin(session, model, USER_TEXT, RESERVE)
    assert turn is not None
    plan = turn.plan(strategy)
    assert plan is not None
    note = turn.note(SUMMARY) if plan.action is Action.SUMMARIZE else None
    if note is not None and turn.request_tokens(plan, note) > turn.budget:
        plan, note = plan.trimmed(), None
    turn.record(plan, note, ANSWER, Outcome(model, turn.pending.tokens), WARN_RATIO)
    return plan.action


def steady_state(strategy: Strategy, size: int, counter: Counter, min_turns: int) -> tuple[float, int, float]:
    """(mean µs per turn over whole cycles, turns measured, median µs of the turns where it acted).

    Starts with a full history; a cycle runs from one turn where the strategy acts to the next
    (every turn for trim). At least two cycles and `min_turns` turns are measured.
    """
    model = model_for(size, counter)
    session = session_with(history(size, counter), counter)
    times: list[int] = []
    acted: list[int] = []  # indices of the turns where the strategy acted
    gc.disable()  # as timeit does: a collection would land on one turn at random
    try:
        while len(acted) < 3 or len(times) - acted[0] < min_turns or acted[-1] != len(times) - 1:
            start = time.perf_counter_ns()
            action = one_turn(session, model, strategy)
            times.append(time.perf_counter_ns() - start)
            if action is not Action.KEEP:
                acted.append(len(times) - 1)
            if len(times) > 50 * (size // 100 + min_turns):
                raise AssertionError(f"{strategy} at {size} never settled")
    finally:
        gc.enable()
    whole = times[acted[0]:acted[-1]]  # whole cycles: the last acting turn starts the next one
    return sum(whole) / len(whole) / 1000, len(whole), statistics.median(times[i] for i in acted) / 1000


def summary_building_ms(size: int, counter: Counter) -> float:
    """Building the summary request at a full history (request building, not accounting)."""
    model = model_for(size // 2, counter)  # `size` tokens of history in half the room: it summarises
    session = session_with(history(size, counter), counter)
    turn = Turn.begin(session, model, USER_TEXT, RESERVE)
    assert turn is not None
    plan = turn.plan(Strategy.SUMMARIZE)
    assert plan is not None and plan.action is Action.SUMMARIZE

    def build() -> object:
        source, _ = context.summary_source(session.messages, plan, model.context_window)
        return context.summary_messages(source, plan.summary_tokens)

    return timeit.timeit(build, number=5) / 5 * 1000


def request_building_ms(size: int, counter: Counter) -> tuple[float, int]:
    """Building the request's message list at a full history, and the messages in it."""
    session = session_with(history(size, counter), counter)
    return timeit.timeit(session.request_messages, number=5) / 5 * 1000, len(session.messages)


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def run(quick: bool = False) -> Report:
    min_turns, repeat = (200, 3) if quick else (500, 5)
    counter = counter_for(FALLBACK_ENCODING)
    counter.message("user", "warm up the tokenizer")
    rows, findings = [], []
    for strategy in Strategy:
        per_turn: dict[int, float] = {}
        detail = []
        for size in SIZES:
            runs = [steady_state(strategy, size, counter, min_turns) for _ in range(repeat)]
            per_turn[size] = median([r[0] for r in runs])
            acting = median([r[2] for r in runs])
            detail.append(f"{label(size)}: {runs[0][1]:,} turns, the acting turn {acting:.0f} µs")
        small = per_turn[SIZES[0]]
        growth = max(per_turn.values()) / small
        met = max(per_turn.values()) < TARGET_MS * 1000 and growth <= TARGET_GROWTH
        result = " · ".join(f"{label(s)} {us:.0f} µs" for s, us in per_turn.items())
        rows.append(Row(f"3. Token accounting per turn, CONTEXT_STRATEGY={strategy}, 1k–1M-token history",
                        f"{result} (at most {growth:.2f}x the 1k case)",
                        f"< {TARGET_MS:.0f} ms and ≤ {TARGET_GROWTH:.0f}x the 1k case", met))
        findings.append(f"{strategy}, per size (first run): " + "; ".join(detail) + ".")
    for size in SIZES:
        building, count = request_building_ms(size, counter)
        findings.append(f"{label(size)} tokens = {count:,} messages: building the request's message list "
                        f"(`Session.request_messages`, not accounting) takes {building:.2f} ms; building "
                        f"a summary request {summary_building_ms(size, counter):.2f} ms")
    findings.append(f"Tokenizer: {counter.encoding_name}, exact: {counter.exact}.")
    return Report("Figure 3: token accounting per strategy", rows, METHOD, findings)


METHOD = f"""\
Pure CPU, in-process, no servers. For each `CONTEXT_STRATEGY` and a history of about 1k, 10k, 100k and
1M tokens (alternating ~20- and ~60-token messages whose counts are computed once and reused), a
model's window is sized to leave exactly that much room for history beside the system prompt, a
200-character question and the reply reserve (up to {RESERVE:,} tokens); the history starts full. One turn is
what `chat.run_turn` does around the model calls, through the same `chat.Turn` steps: count the
question, `context.plan`, count a summary note (a fixed ~90-token summary stands in for the model's)
when summarising, apply the plan, add the question and a ~700-character answer (counted), check the
warning ratio; with the {FALLBACK_ENCODING} tiktoken encoding. Turns run until the strategy has acted
at least three times and 500 turns have passed (200 with --quick); each turn is timed with
`perf_counter_ns` (GC off, as in `timeit`) and the figure is the mean over whole cycles, from one turn
where the strategy acts to the next: trim acts on every turn (it drops one or two turns), reset and
summarize once per cycle (a reset drops everything, a summary the older half), so the mean includes
their rare expensive turns. Median of 5 runs (3 with --quick). The findings give the median acting
turn, and, for context, the time to build the request's message list and a summary request, which
grow with the history because they hold it."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
