"""Figure 1 — burst: 100 chats send one message at once; every answer streams for 2 s.

Burst time = from the first pushed update to the last final answer accepted by the fake Telegram.
Baseline = the same for one chat alone, in the same bot, just before the burst.
"""

from __future__ import annotations

import argparse
import tempfile
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
    print_report,
    quiet,
)

from sender import RateLimiter
from tests.fakes.openai import Reply

CHATS = 100
FIRST_TOKEN = 0.2  # the model's time to first token
CHUNKS = 10
CHUNK_DELAY = (2.0 - FIRST_TOKEN) / (CHUNKS - 1)  # first token + 9 gaps = 2.0 s per answer
TARGET_RATIO = 1.5
SINGLE_CHAT = 7


def answer(body: dict[str, Any]) -> Reply:
    """A plain-words answer naming the question, streamed in 10 pieces over 2 s."""
    question = body["messages"][-1]["content"]
    chunks = [f"{question} part{i} " for i in range(CHUNKS)]
    return Reply(chunks=chunks, delay=FIRST_TOKEN, chunk_delay=CHUNK_DELAY)


@dataclass(frozen=True)
class Variant:
    label: str
    fake_global_rate: float
    bot_global_rate: float | None  # None: the bot's own limiter as shipped


VARIANTS = (
    Variant("fake Telegram limits on (30 msg/s)", 30, None),
    Variant("fake global limit 1000 msg/s", 1000, None),
    Variant("fake 1000/s and bot limiter 1000/s (in-process override)", 1000, 1000.0),
)


@dataclass(frozen=True)
class Timing:
    """Seconds after the first pushed update: last model request in, last final answer out."""

    last_request: float
    last_final: float
    drafts: int
    cpu_to_last_request: float  # CPU seconds of this process (bot and both fakes) until then


@dataclass(frozen=True)
class RunResult:
    single: Timing
    burst: Timing
    too_many: int  # 429s from the fake Telegram


def _time_to_answers(rig: Rig, chats: list[int], timeout: float = 60) -> Timing:
    """Push one message per chat at once; wait until each chat has its final answer."""
    tg, llm = rig.tg, rig.llm
    seen = len(llm.chat_requests())
    start, cpu = time.time(), time.process_time()
    for chat in chats:
        tg.send_text(chat, f"question{chat}")
    llm.wait_for(lambda: len(llm.chat_requests()) >= seen + len(chats), timeout, "every model request")
    cpu = time.process_time() - cpu
    tg.wait_for(lambda: all(tg.messages(c) for c in chats), timeout, "every final answer")
    finals = [first_message_time(tg, c) for c in chats]
    requests = llm.chat_requests()[seen:]
    return Timing(max(r.time for r in requests) - start, max(t for t in finals if t is not None) - start,
                  sum(len(tg.drafts(c)) for c in chats), cpu)


def _one_run(variant: Variant, data_dir: Path) -> RunResult:
    """The single answer, then the burst, in one fresh bot."""
    with Rig(data_dir, telegram={"global_rate": variant.fake_global_rate}, default=answer) as rig:
        if variant.bot_global_rate is not None:
            rig.running.sender.limiter = RateLimiter(global_rate=variant.bot_global_rate)
        single = _time_to_answers(rig, [SINGLE_CHAT])
        rig.idle(10)
        time.sleep(1.5)  # let the global budget refill after the single answer
        burst = _time_to_answers(rig, list(range(1000, 1000 + CHATS)))
        rig.idle(30)
        return RunResult(single, burst, rig.tg.stats["429"])


def _row(variant: Variant, runs: list[RunResult]) -> Row:
    single = median([r.single.last_final for r in runs])
    burst = median([r.burst.last_final for r in runs])
    ratio = round(burst / single, 2)  # judged as shown
    too_many = sum(r.too_many for r in runs)
    return Row(f"1. Burst of {CHATS} chats, {variant.label}",
               f"{burst:.2f} s vs {single:.2f} s alone = {ratio:.2f}x (429s: {too_many})",
               f"≤ {TARGET_RATIO}x", ratio <= TARGET_RATIO)


def _breakdown(variant: Variant, runs: list[RunResult]) -> str:
    last_request = median([r.burst.last_request for r in runs])
    last_final = median([r.burst.last_final for r in runs])
    drafts = median([float(r.burst.drafts) for r in runs])
    cpu = median([r.burst.cpu_to_last_request for r in runs])
    return (f"{variant.label}: the last of the {CHATS} model requests reached the fake model "
            f"{ms(last_request)} after the burst (this process — bot and both fakes, one GIL — used "
            f"{cpu:.2f} s of CPU by then), so the last stream ended at about "
            f"{last_request + 2.0:.2f} s; the last final answer arrived at {last_final:.2f} s; "
            f"{drafts:.0f} drafts were shown during the burst (medians).")


def run(quick: bool = False) -> Report:
    reps = 1 if quick else 3
    rows, findings = [], []
    with captured_logs() as logs, tempfile.TemporaryDirectory() as tmp:
        for n, variant in enumerate(VARIANTS):
            runs = [_one_run(variant, Path(tmp) / f"v{n}r{i}") for i in range(reps)]
            rows.append(_row(variant, runs))
            findings.append(_breakdown(variant, runs))
        errors = len(logs.errors())
    floor = FIRST_TOKEN + CHUNK_DELAY * (CHUNKS - 1) + (CHATS - 30) / 30
    findings.append(f"Lower bound under Telegram's 30 msg/s: 2.0 s of model time + {CHATS - 30} final "
                    f"messages beyond a full 30-message bucket at 30/s = {floor:.2f} s, i.e. "
                    f"{floor / 2.0:.2f}x a 2 s answer: the 1.5x target cannot be met with 100 final "
                    "messages at once while Telegram's global limit holds.")
    findings.append(f"Bot log: {errors} ERROR records or tracebacks over all burst runs.")
    return Report("Figure 1: burst", rows, METHOD, findings, ANALYSIS)


METHOD = f"""\
A fresh bot (WORKERS=128 default, STREAM on, DRAFT_INTERVAL 1 s, SESSION_STORE=memory, ALLOWED_USER_IDS=*)
against a fresh FakeTelegram and FakeOpenAI. The fake model streams every answer in {CHUNKS} pieces:
first piece after {FIRST_TOKEN} s, then one every {CHUNK_DELAY:.2f} s, so an answer takes 2.0 s. In each
run one chat first asks alone (the baseline), then, after 1.5 s for the rate budgets to refill,
{CHATS} other private chats each send one message at once. Time is measured from just before the
first `send_text` to the arrival at the fake of the last final `sendMessage` that it accepted
(drafts are previews, not answers). Median of 3 runs (1 with --quick). Three variants: the fake's
real limits; the fake's global limit raised to 1000/s; and additionally the bot's own global
`RateLimiter` (28/s, in `sender.py`) replaced in-process by one of 1000/s, to isolate the bot's own
overhead from deliberate throttling."""


ANALYSIS = """\
The burst is bound by Telegram's global rate, not by the bot's work. 100 answers are 100 final
`sendMessage` calls; Telegram (and the fake) allow 30 a second, and the bot deliberately stays under
that with its own limiter (`sender.RateLimiter`: 28/s, bucket of 28). The streams end 2.0–3 s after
the burst, then the final messages leave at 28/s, so the last one lands ~5.3 s after the burst, about
2.6x a lone answer; no bot can go below the lower bound in the findings (≈2.2x) while sending 100
messages. Raising only the fake's limit (row 2) changes nothing, which shows the bot's own limiter is
the binding one, as designed: it produced 0 429s. With the bot's limiter also raised (row 3, an
in-process override for measurement only, not a recommended setting) the burst takes ~1.5x. What
remains is starting 100 model streams: the last model request reaches the fake model 0.6–1.1 s after
the burst while this process is CPU-bound (see the CPU seconds in the findings: about one core, the
GIL, shared by the bot and both fake servers on a 2-core machine). For scale, 100 concurrent streamed
requests from bare `openai` SDK threads against the fake alone took 0.32 s to all reach it, at
~2.6 ms of CPU per request (SDK + fake). So the remaining overhead is interpreter throughput, not a
blocking bug; the fakes' own CPU inflates it here. Meeting 1.5x would need the target restated (e.g.
time to first visible token, figure 2) or fewer final messages than Telegram's rate allows."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
