"""Figure 3 — token accounting cost of one turn as the history grows (1k to 1M tokens).

One turn's accounting is what `chat.run_turn` does around the model call: count the user message, check
that it fits, add the user and assistant messages (counting the answer), check the warning ratio.
"""

from __future__ import annotations

import argparse
import itertools
import timeit
from collections.abc import Callable

from _common import Report, Row, median, print_report, quiet

from sessions import Conversation, Message, Place, Profile, Session
from tokens import FALLBACK_ENCODING, Counter, counter_for

SIZES = (1_000, 10_000, 100_000, 1_000_000)
WINDOW = 2_000_000  # large enough that a 1M-token history still fits: the turn takes the usual path
RESERVE = 8192
WARN_RATIO = 0.8
TARGET_MS, TARGET_GROWTH = 5.0, 2.0

USER_TEXT = ("Could you compare the two approaches we discussed, list the trade-offs of each, and say "
             "which one you would pick for a small team that ships every week? Keep it short, please.")
ANSWER = ("Short version: pick the second approach. " + "It keeps deployments simple, the tests fast and "
          "the on-call load low, while the first one only pays off at a scale you do not have yet. ") * 4
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
    profile = Profile(1, "gpt-5.4-mini", prompt, counter.message("system", prompt), counter.encoding_name)
    return Session(profile, Conversation(1, Place(1, 1), counter.encoding_name, messages=list(messages)))


def one_turn(session: Session, counter: Counter) -> None:
    """The accounting of one turn, as in chat.run_turn (the model call left out)."""
    message_tokens = counter.message("user", USER_TEXT)
    session.fit(message_tokens, WINDOW, RESERVE)
    session.add("user", USER_TEXT, message_tokens)
    session.add("assistant", ANSWER, counter.message("assistant", ANSWER))
    session.crosses_warning(WINDOW, WARN_RATIO)


def per_call_ms(make: Callable[[], Callable[[], object]], number: int, repeat: int) -> float:
    """Median over `repeat` fresh setups of the mean time of `number` calls, in ms."""
    results = []
    for _ in range(repeat):
        call = make()
        results.append(timeit.timeit(call, number=number) / number * 1000)
    return median(results)


def measure(tokens: int, counter: Counter, number: int, repeat: int) -> tuple[float, float, int]:
    """(turn accounting ms, request building ms, messages in the history)."""
    base = history(tokens, counter)

    def accounting() -> Callable[[], object]:
        session = session_with(base, counter)
        return lambda: one_turn(session, counter)

    def request() -> Callable[[], object]:
        return session_with(base, counter).request_messages

    building = per_call_ms(request, max(1, number // 20), repeat)
    return per_call_ms(accounting, number, repeat), building, len(base)


def run(quick: bool = False) -> Report:
    number, repeat = (200, 5) if quick else (500, 9)
    counter = counter_for(FALLBACK_ENCODING)
    counter.message("user", "warm up the tokenizer")
    results = {size: measure(size, counter, number, repeat) for size in SIZES}
    small = results[SIZES[0]][0]
    rows = []
    for size, (turn, _, _) in results.items():
        growth = turn / small
        met = turn < TARGET_MS and growth <= TARGET_GROWTH
        rows.append(Row(f"3. Token accounting per turn, {size:,}-token history",
                        f"{turn * 1000:.0f} µs ({growth:.2f}x the 1k case)",
                        f"< {TARGET_MS:.0f} ms and ≤ {TARGET_GROWTH:.0f}x the 1k case", met))
    findings = [f"{size:,} tokens = {n:,} messages: building the request's message list "
                f"(`Session.request_messages`, not accounting) takes {building:.2f} ms"
                for size, (_, building, n) in results.items()]
    findings.append(f"Tokenizer: {counter.encoding_name}, exact: {counter.exact}.")
    return Report("Figure 3: token accounting", rows, METHOD, findings)


METHOD = f"""\
Pure CPU, in-process, no servers. A `sessions.Session` gets a history of about 1k, 10k, 100k and 1M
tokens (alternating ~20- and ~60-token messages whose counts are computed once and reused, so building
even the 1M history is fast). One turn = `counter.message("user", text)` for a 200-character question,
`session.fit(...)`, `session.add` of the question, `counter.message("assistant", answer)` for a
~700-character answer, `session.add` of it, `session.crosses_warning(...)`, with the {FALLBACK_ENCODING}
tiktoken encoding and a {WINDOW:,}-token window. `timeit` runs 500 turns on a fresh session 9 times
(200 × 5 with --quick); the figure is the median of the per-turn means. For context, the findings also
time `Session.request_messages()`, which builds the whole history into the request every turn."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
