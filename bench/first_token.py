"""Figure 2 — first-token latency: 50 private chats streaming at once.

Per chat: from the moment the fake model sends its first content chunk to the first draft or message
that the fake Telegram accepted for that chat.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Report,
    Rig,
    Row,
    captured_logs,
    first_message_time,
    median,
    ms,
    p95,
    print_report,
    quiet,
)

from tests.fakes.openai import Reply

CHATS = 50
STAGGER = 0.1  # seconds between two chats' messages in the realistic case
FIRST_TOKEN = 0.5  # the model's time to first token
CHUNKS = 40
CHUNK_DELAY = 0.05  # 20 pieces a second: a 2.5 s answer
TARGET_P95 = 0.150
_QUESTION = re.compile(r"first(\d+)")


class FirstChunkClock:
    """The fake model's answer, remembering when each chat's first content chunk leaves."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        match = _QUESTION.search(str(body["messages"][-1]["content"]))
        if match:
            # The fake sleeps `delay`, writes the role chunk, then the first content chunk at once.
            with self._lock:
                self.sent[int(match[1])] = time.time() + FIRST_TOKEN
        chunks = [f"token{i} " for i in range(CHUNKS)]
        return Reply(chunks=chunks, delay=FIRST_TOKEN, chunk_delay=CHUNK_DELAY)


def _first_visible(rig: Rig, chat: int) -> tuple[float | None, bool]:
    """When the chat first showed anything, and whether that was a draft (not the final message)."""
    drafts = rig.tg.drafts(chat)
    draft = drafts[0].time if drafts else None
    message = first_message_time(rig.tg, chat)
    times = [t for t in (draft, message) if t is not None]
    return (min(times) if times else None), draft is not None and (message is None or draft <= message)


@dataclass(frozen=True)
class RunResult:
    latencies: list[float]  # seconds, one per chat
    drafted: int  # chats whose first visible thing was a draft
    too_many: int  # 429s
    connections: int  # TCP connections the fake model accepted
    requests: int  # HTTP requests it received
    # Drafts that updated an already shown draft, sent before the last chat showed anything at all.
    repeats_before_last: int


def _one_run(data_dir: Path, stagger: float) -> RunResult:
    """Every chat's latency and what the fakes saw."""
    clock = FirstChunkClock()
    chats = list(range(2000, 2000 + CHATS))
    with Rig(data_dir, default=clock) as rig:
        start = time.monotonic()
        for i, chat in enumerate(chats):
            time.sleep(max(0.0, start + i * stagger - time.monotonic()))
            rig.tg.send_text(chat, f"first{chat}")
        rig.tg.wait_for(lambda: all(rig.tg.messages(c) for c in chats), 60, "every final answer")
        rig.idle(20)
        latencies, drafted, shown = [], 0, []
        for chat in chats:
            visible, was_draft = _first_visible(rig, chat)
            if visible is not None and chat in clock.sent:
                latencies.append(visible - clock.sent[chat])
                drafted += was_draft
                shown.append(visible)
        last = max(shown)
        repeats = sum(d.time < last for chat in chats for d in rig.tg.drafts(chat)[1:])
        return RunResult(latencies, drafted, rig.tg.stats["429"], rig.llm.connections,
                         len(rig.llm.requests), repeats)


def _case(label: str, stagger: float, reps: int, tmp: Path) -> tuple[Row, str, RunResult]:
    runs = [_one_run(tmp / f"{label}{i}", stagger) for i in range(reps)]
    samples = [x for r in runs for x in r.latencies]
    drafted, too_many = sum(r.drafted for r in runs), sum(r.too_many for r in runs)
    high = p95(samples)
    row = Row(f"2. First-token latency, {CHATS} chats {label}",
              f"p50 {ms(median(samples))}, p95 {ms(high)} (max {ms(max(samples))}; 429s: {too_many})",
              f"p95 < {ms(TARGET_P95)}", high < TARGET_P95)
    fast = sum(x < TARGET_P95 for x in samples)
    note = (f"{label}: {len(samples)} samples over {reps} runs; {fast} within {ms(TARGET_P95)}; "
            f"{drafted} chats showed a draft first, {len(samples) - drafted} nothing before their final "
            "message.")
    if not stagger:
        note += (" Before the last chat of a run showed anything, the bot had spent (median) "
                 f"{median([float(r.repeats_before_last) for r in runs]):.0f} message slots on drafts "
                 "that only updated a draft already shown in another chat.")
    return row, note, runs[-1]


def run(quick: bool = False) -> Report:
    reps = 1 if quick else 3
    rows, findings = [], []
    with captured_logs() as logs, tempfile.TemporaryDirectory() as tmp:
        for label, stagger in ((f"arriving {ms(STAGGER)} apart", STAGGER), ("all at once", 0.0)):
            row, note, last = _case(label, stagger, reps, Path(tmp))
            rows.append(row)
            findings.append(note)
        findings.append(
            f"The fake model accepted {last.connections} TCP connections for {last.requests} HTTP requests "
            "in the last run (a drained stream leaves its connection to the next request).")
        findings.append(f"Bot log: {len(logs.errors())} ERROR records or tracebacks.")
    return Report("Figure 2: first-token latency", rows, METHOD, findings, ANALYSIS)


METHOD = f"""\
A fresh in-process bot (defaults: STREAM on, DRAFT_INTERVAL 1 s) per run. {CHATS} private chats each
send one message, either {ms(STAGGER)} apart (10 new conversations a second) or all at once. The fake
model waits {FIRST_TOKEN} s, then streams {CHUNKS} pieces {ms(CHUNK_DELAY)} apart. Its `default` callable
notes, per chat, the time it was called plus the {FIRST_TOKEN} s delay: the moment the first content
chunk leaves (the role chunk and the first piece are written back to back after the delay). The latency
of a chat is from then to the earlier of its first accepted `sendMessageDraft` (DraftUpdate.time) and
its first accepted `sendMessage` (Call.time). All clocks are `time.time()` in one process. p50/p95 are
over the pooled samples of 3 runs (150 per case; 1 run with --quick), nearest-rank."""


ANALYSIS = """\
At a realistic arrival rate (10 new conversations a second) the first draft follows the model's
first chunk within a few ms. All at once, the miss is Telegram's global rate again: a draft is a
message-producing call, and 50 chats whose first chunks arrive in the same few ms would need 50
calls at once, while Telegram allows 30 a second. With p95 being the 48th fastest of 50, even a bot
that spent the whole budget on first drafts would be at ≈(48 − 30)/30 ≈ 0.6 s. The bot shows the
first ~28 drafts at once (its bucket of 28 and the rule that previews leave 30% of it to final
messages, `streaming.PREVIEW_SPARE`), then one more per ~36 ms as the budget refills: the slowest chats
see their first draft about 1 s after their first token, with 0 429s. This is the intended
trade-off (finals never wait for previews); a lower all-at-once p95 could only come from spending the
final messages' reserve on first drafts. One thing the bot could do better is the worst case:
previews are first come, first served, so a chat that shows nothing yet competes on equal terms with
chats refreshing a draft they already show (after DRAFT_INTERVAL, every delta retries). The findings
count the slots spent on such refreshes before the last chat showed anything: each is ~36 ms of
budget, which is why the slowest chat waits up to ~2.5 s, not the ~1.1 s that 50 − 19 first drafts
at 28/s would take. Letting a chat's first preview go before other chats' refreshes (e.g. skip a
refresh while any chat waits for its first preview) would bound the tail near that."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
