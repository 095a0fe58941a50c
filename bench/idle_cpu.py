"""Figure 6 — idle CPU: `python bot.py` connected to Telegram with nothing to do."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import BenchOpenAI, BenchTelegram, BotProcess, Report, Row, bench_env, print_report, quiet

TARGET_PERCENT = 1.0
SETTLE = 1.0  # after ready: let the start-up threads (model discovery) finish


def run(quick: bool = False) -> Report:
    window = 20.0 if quick else 30.0
    with tempfile.TemporaryDirectory() as tmp, BenchTelegram() as tg, BenchOpenAI(api_key="sk-bench") as llm:
        env = bench_env(tg, llm, Path(tmp) / "data", SESSION_STORE="sqlite", POLL_TIMEOUT="")
        with BotProcess(env, Path(tmp) / "bot.log") as bot:
            bot.wait_ready(tg)
            time.sleep(SETTLE)
            polls_before = len(tg.calls_of("getUpdates"))
            cpu_before, start = bot.cpu_seconds(), time.monotonic()
            time.sleep(window)
            cpu, elapsed = bot.cpu_seconds() - cpu_before, time.monotonic() - start
            polls = len(tg.calls_of("getUpdates")) - polls_before
            threads = bot.status_value("Threads")
    percent = 100 * cpu / elapsed
    row = Row(f"6. Idle CPU of `python bot.py` (POLL_TIMEOUT 25 s), {window:.0f} s",
              f"{percent:.2f}% of one core ({cpu * 1000:.0f} ms CPU in {elapsed:.1f} s)",
              f"< {TARGET_PERCENT:.0f}%", percent < TARGET_PERCENT)
    findings = [f"{polls} getUpdates calls during the window; {threads} threads in the idle process "
                "(CPU time resolution: 10 ms clock ticks)."]
    return Report("Figure 6: idle CPU", [row], METHOD.format(window=window), findings)


METHOD = """\
`python bot.py` is spawned with the default POLL_TIMEOUT (25 s) and SESSION_STORE=sqlite against a
fake Telegram with no traffic. After the first getUpdates call (ready) and 1 s more, utime + stime are
read from /proc/PID/stat, again {window:.0f} s later (20 s with --quick); the figure is the CPU time
over the wall time, in % of one core. One run. In `run.py` this runs alongside figure 4, which is
mostly waiting; the figure is the bot process's own CPU time, which the other load does not add to."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quiet()
    print_report(run(parser.parse_args().quick))
