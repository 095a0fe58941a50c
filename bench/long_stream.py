"""Figure 4 — one 60 s streamed answer in one private chat, against Telegram's rate limits.

Counts 429s, errors in the bot's log, and checks that the chat ends up showing exactly the model's text.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import Report, Rig, Row, captured_logs, last_message_time, print_report, quiet

from tests.fakes.openai import Reply

CHAT = 3000
CHUNKS = 600
CHUNK_DELAY = 0.1  # 600 pieces 0.1 s apart: a 60 s answer
FIRST_TOKEN = 0.5
MAX_429 = 2


def model_text() -> list[str]:
    """Plain words only, so rendering Markdown to HTML leaves them as they are."""
    return [f"w{i:03d}a w{i:03d}b w{i:03d}c " for i in range(CHUNKS)]


def _same_words(shown: list[str], source: str) -> bool:
    return " ".join(shown).split() == source.split()


def run(quick: bool = False) -> Report:
    chunks = model_text()
    source = "".join(chunks)
    with captured_logs() as logs, tempfile.TemporaryDirectory() as tmp, Rig(Path(tmp)) as rig:
        rig.llm.script(Reply(chunks=chunks, delay=FIRST_TOKEN, chunk_delay=CHUNK_DELAY))
        start = time.time()
        rig.tg.send_text(CHAT, "tell me a very long story")
        rig.tg.wait_for(lambda: rig.llm.stats["streams"] >= 2, 10, "the model request")
        stream_end = rig.llm.chat_requests()[-1].time + FIRST_TOKEN + CHUNK_DELAY * (CHUNKS - 1)
        dispatcher = rig.running.dispatcher
        rig.tg.wait_for(lambda: _same_words(rig.tg.messages(CHAT), source) or not dispatcher.pending,
                        CHUNKS * CHUNK_DELAY + 60, "the whole answer")
        rig.idle(30)
        shown = rig.tg.messages(CHAT)
        last = last_message_time(rig.tg, CHAT) or float("nan")
        too_many, drafts = rig.tg.stats["429"], len(rig.tg.drafts(CHAT))
        errors = [r.getMessage() for r in logs.errors()] + logs.thread_crashes + rig.tg.internal_errors
    exact = _same_words(shown, source)
    met = not errors and too_many <= MAX_429 and exact
    result = (f"429s: {too_many}, errors: {len(errors)}, text exact: {'yes' if exact else 'NO'} "
              f"({len(shown)} messages, {drafts} drafts)")
    findings = [f"Stream took {stream_end - start:.1f} s from the user's message; the last final message "
                f"arrived {last - stream_end:.1f} s after the last chunk ({len(source):,} characters, "
                f"{len(shown)} messages: each waits for the chat's 1 msg/s budget, spent on drafts). "
                "Parts before the one being written no longer change; sending each as its final message "
                "while the stream goes on would leave only the last part to wait at the end."]
    findings += [f"Error: {e[:200]}" for e in errors[:5]]
    row = Row(f"4. {CHUNKS * CHUNK_DELAY:.0f} s streamed answer, one private chat",
              result, f"0 errors, ≤ {MAX_429} 429s, exact text", met)
    return Report("Figure 4: long streamed answer", [row], METHOD, findings)


METHOD = f"""\
A fresh in-process bot with the fake Telegram's default limits (1 msg/s per chat, burst 3; 30/s
overall). The fake model streams {CHUNKS} pieces of three plain words each, {CHUNK_DELAY} s apart
(first after {FIRST_TOKEN} s): a {CHUNKS * CHUNK_DELAY:.0f} s answer of about
{len("".join(model_text())):,} characters, so it needs several 4096-character messages. 429s are the
fake's `stats["429"]`; errors are ERROR (or worse) log records, records with a traceback, uncaught thread
exceptions and the fake's internal errors; "exact" compares the words of the chat's final messages
joined by spaces with the words of the model's text. One run (it is long)."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
