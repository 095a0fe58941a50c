"""Figure 5 — restoring 10,000 sessions of 20 messages: load time, start-up to ready, memory.

`python bench/restore.py --probe DB` is the child process that loads the store and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BenchOpenAI,
    BenchTelegram,
    BotProcess,
    Report,
    Row,
    bench_env,
    child_env,
    median,
    print_report,
    quiet,
)

from sessions import Conversation, Place, Profile, Session
from storage import SqliteBackend
from store import SessionStore

SESSIONS = 10_000
MESSAGES = 20
TARGET_START, TARGET_RSS_MB = 5.0, 300.0
_WORDS = ("the", "a", "model", "answer", "question", "token", "session", "chat", "window", "prompt",
          "history", "context", "user", "bot", "reply", "stream", "draft", "limit", "rate", "budget",
          "server", "client", "cache", "write", "read", "test", "bench")


def _text(rng: random.Random, chars: int = 200) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:chars]


def build_store(path: Path) -> float:
    """10,000 users' conversations × 20 messages of ~200 characters, written with SqliteBackend.save."""
    rng = random.Random(42)
    texts = [_text(rng) for _ in range(500)]  # varied but cheap to produce
    backend = SqliteBackend(path)
    start = time.perf_counter()
    for user_id in range(10_000, 10_000 + SESSIONS):
        profile = Profile(user_id, "gpt-5.4-mini", "You are a helpful assistant.", 9, "o200k_base",
                          name=f"User {user_id}")
        session = Session(profile, Conversation(user_id, Place(user_id, user_id), "o200k_base"))
        for i in range(MESSAGES):
            session.add("user" if i % 2 == 0 else "assistant", rng.choice(texts), 45)
        backend.save(session, current=True)
    backend.close()
    return time.perf_counter() - start


def _vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def probe(path: Path) -> dict[str, float]:
    """In a fresh process: open the store, load every session into a SessionStore."""
    before = _vm_rss_kb()
    start = time.perf_counter()
    store = SessionStore(SqliteBackend(path), lambda user_id: Profile(user_id, "m", "", 0, "o200k_base"))
    seconds = time.perf_counter() - start
    messages = sum(len(s.messages) for s in store.all())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {"seconds": seconds, "sessions": len(store), "messages": messages,
            "rss_before_kb": before, "peak_rss_kb": peak}


def _run_probe(path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--probe", str(path)], env=child_env({}),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bot_start(data_dir: Path, log: Path) -> tuple[float, int, int, str]:
    """Spawn `python bot.py` on the store: (seconds to first getUpdates, VmRSS kB, VmHWM kB, log)."""
    with BenchTelegram() as tg, BenchOpenAI(api_key="sk-bench") as llm:
        env = bench_env(tg, llm, data_dir, SESSION_STORE="sqlite", LOG_LEVEL="INFO", POLL_TIMEOUT="25")
        with BotProcess(env, log) as bot:
            ready = bot.wait_ready(tg)
            rss, hwm = bot.status_value("VmRSS"), bot.status_value("VmHWM")
        return ready, rss, hwm, bot.output()


def _restored(output: str) -> int:
    match = re.search(r"ready: conversations restored: (\d+)", output)
    return int(match[1]) if match else -1


def run(quick: bool = False) -> Report:
    reps = 3
    with tempfile.TemporaryDirectory() as tmp:
        data, empty = Path(tmp) / "data", Path(tmp) / "empty"
        db = data / "sessions.sqlite3"
        built = build_store(db)
        size_mb = db.stat().st_size / 1e6
        probes = [_run_probe(db) for _ in range(reps)]
        starts = [_bot_start(data, Path(tmp) / f"bot{i}.log") for i in range(reps)]
        bare = [_bot_start(empty, Path(tmp) / f"bare{i}.log") for i in range(1 if quick else reps)]
    load = median([p["seconds"] for p in probes])
    peak = median([p["peak_rss_kb"] for p in probes]) / 1024
    before = median([p["rss_before_kb"] for p in probes]) / 1024
    ready = median([s[0] for s in starts])
    rss, hwm = median([s[1] for s in starts]) / 1024, median([s[2] for s in starts]) / 1024
    target = f"< {TARGET_START:.0f} s, < {TARGET_RSS_MB:.0f} MB"
    rows = [
        Row(f"5a. Restore {SESSIONS:,} sessions × {MESSAGES} messages (load + SessionStore)",
            f"{load:.2f} s, peak RSS {peak:.0f} MB ({before:.0f} MB before loading)",
            target, load < TARGET_START and peak < TARGET_RSS_MB),
        Row("5b. `python bot.py` start-up to ready on that store",
            f"{ready:.2f} s, VmRSS {rss:.0f} MB (VmHWM {hwm:.0f} MB)",
            target, ready < TARGET_START and rss < TARGET_RSS_MB),
    ]
    findings = [
        f"Store: {size_mb:.0f} MB on disk, written in {built:.1f} s by {SESSIONS:,} `save` calls; "
        f"each probe restored {probes[0]['sessions']:,.0f} sessions / {probes[0]['messages']:,.0f} messages; "
        f"the bot logged {_restored(starts[0][3]):,} conversations restored.",
        f"Same start-up with an empty DATA_DIR: {median([s[0] for s in bare]):.2f} s, VmRSS "
        f"{median([s[1] for s in bare]) / 1024:.0f} MB — the difference is the restore.",
    ]
    return Report("Figure 5: restore", rows, METHOD, findings)


METHOD = f"""\
A SQLite store of {SESSIONS:,} sessions × {MESSAGES} messages (~200 characters each, drawn from 500
pre-made texts) is written through `SqliteBackend.save`, one conversation at a time. (a) A fresh
`python bench/restore.py --probe` process (which has imported the bot's modules, as the bot has) times
`SessionStore(SqliteBackend(path), ...)` — it calls `load_sessions()` — and reports
`resource.getrusage(RUSAGE_SELF).ru_maxrss`. (b) `python bot.py` is spawned with DATA_DIR on that store
(SESSION_STORE=sqlite) against a fake Telegram and model; ready = the first getUpdates call the fake
sees; the time is from `Popen` (so it includes interpreter start and imports) and the memory is VmRSS
(and VmHWM, the peak) from /proc/PID/status at that moment. Medians of 3 runs each. The store was
just written, so it is in the page cache: a cold disk would add read time."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--probe", type=Path, help="internal: load this store and print JSON")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
    else:
        quiet()
        print_report(run(args.quick))
