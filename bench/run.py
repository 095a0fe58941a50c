"""Run every benchmark, print one table, and write it with the machine and the method to BENCHMARKS.md.

    python bench/run.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import accounting
import burst
import first_token
import idle_cpu
import long_stream
import outage
import photo_turn
import restore
from _common import ROOT, Report, Row, met_label, quiet

Bench = Callable[[bool], Report]


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "CPU": cpu,
        "Cores": str(os.cpu_count()),
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "OS": f"{platform.system()} {platform.release()}",
        "Date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _safely(name: str, bench: Bench, quick: bool) -> Report:
    """A benchmark's report, or a report of its failure: one broken figure must not hide the others."""
    started = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
    try:
        report = bench(quick)
    except Exception as exc:
        traceback.print_exc()
        report = Report(name, [Row(name, f"failed: {exc!r}"[:200], "runs", False)], "")
    print(f"[{time.strftime('%H:%M:%S')}] {name} done in {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)
    return report


def run_all(quick: bool) -> list[Report]:
    """Every figure, in the table's order. Figure 6 (a child process, idle) runs alongside figure 4."""
    done: dict[str, Report] = {}
    # Pure CPU: first, alone.
    done["3"] = _safely("Figure 3: token accounting per strategy", accounting.run, quick)
    done["5"] = _safely("Figure 5: restore", restore.run, quick)
    done["1"] = _safely("Figure 1: burst", burst.run, quick)
    done["2"] = _safely("Figure 2: first text", first_token.run, quick)
    with ThreadPoolExecutor(max_workers=1) as pool:
        idle = pool.submit(_safely, "Figure 6: idle CPU", idle_cpu.run, quick)
        done["4"] = _safely("Figure 4: long streamed answer", long_stream.run, quick)
        done["6"] = idle.result()
    done["7"] = _safely("Figure 7: Telegram outage", outage.run, quick)
    done["8"] = _safely("Figure 8: photo turn overhead", photo_turn.run, quick)
    return [done[key] for key in sorted(done)]


def table(reports: list[Report]) -> str:
    lines = ["| figure | result | target | met? |", "|---|---|---|---|"]
    for report in reports:
        for row in report.rows:
            cells = (row.figure, row.result, row.target, met_label(row.met))
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def document(reports: list[Report], info: dict[str, str], quick: bool, seconds: float) -> str:
    parts = [HEADER.format(mode="`--quick`" if quick else "full", seconds=seconds)]
    parts.append("## Machine\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()))
    parts.append("## Results\n\n" + table(reports))
    parts.append("## Method and findings, per figure")
    for report in reports:
        section = [f"### {report.title}", f"**Method.** {report.method}"]
        if report.findings:
            section.append("**Findings.**\n\n" + "\n".join(f"- {f}" for f in report.findings))
        if report.missed and report.analysis:
            section.append(f"**Why the target is missed.** {report.analysis}")
        parts.append("\n\n".join(section))
    parts.append(NOTES)
    return "\n\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    quiet()
    started = time.monotonic()
    info = machine()
    reports = run_all(args.quick)
    seconds = time.monotonic() - started
    print()
    print(table(reports))
    print(f"\n{info['CPU']}, {info['Cores']} cores, Python {info['Python']}; {seconds:.0f} s in all")
    if not args.no_write:
        (ROOT / "BENCHMARKS.md").write_text(document(reports, info, args.quick, seconds), encoding="utf-8")
        print("written to BENCHMARKS.md")
    return 0


HEADER = """\
# Benchmarks

Written by `python bench/run.py` ({mode} run, {seconds:.0f} s). Do not edit by hand: the text comes
from the modules in `bench/` and is rewritten on every run.

## How to run

```sh
. .venv/bin/activate
export TIKTOKEN_CACHE_DIR=/work/shared/tiktoken   # the tokenizer cache; nothing is downloaded
python bench/run.py              # every figure; about 4–5 minutes on 2 cores; rewrites BENCHMARKS.md
python bench/run.py --quick      # fewer repetitions (about 3 minutes)
python bench/run.py --no-write   # print the table only
python bench/burst.py            # one figure alone: burst, first_token, accounting, long_stream,
                                 # restore, idle_cpu, outage, photo_turn (prints; does not write this file)
```

Everything runs on 127.0.0.1 against the strict fakes of the test suite (`tests/fakes`): FakeTelegram
with Telegram's flood limits (1 message/s per chat, burst 3; 30/s overall; 429 with retry_after) and
FakeOpenAI streaming scripted answers. The bot is the real one: in-process (`Bot(config).start()`) for
figures 1, 2, 4 and 7, and `python bot.py` as a child process for 5 and 6. Every loop is bounded and
every server stops by itself. Results are medians; the method of each figure says over what."""

NOTES = """\
## Notes on the set-up

- **Nagle and delayed ACKs in the fakes.** The fakes (`tests/fakes/_server.py`, `BaseHandler.reply`)
  write a response's headers and its body in two `send()` calls on sockets without `TCP_NODELAY`. On a
  kept-alive connection the body then waits for the client's delayed ACK: every Telegram call took
  44 ms instead of 0.9 ms (measured: 50 `sendMessage` calls through pyTelegramBotAPI, one
  connection). The real Bot API sits behind nginx, which sets `tcp_nodelay`, so the benchmarks accept
  connections through a handler that sets `TCP_NODELAY` (`bench/_common.py`, `BenchTelegram`,
  `BenchOpenAI`). The tests use the fakes as they are, so their timings include these 40 ms stalls.
- **One process, one GIL.** In-process figures run the bot and both fake servers in one Python
  interpreter on a 2-core machine: the fakes' CPU (JSON, HTML entity parsing, thread per connection)
  competes with the bot's. Throughput figures (1, 2 all at once) are therefore pessimistic.
- **Connections to the model are not reused after a streamed answer.** The `openai` SDK installed here
  (3.57, sync client) stops reading a stream at `data: [DONE]` and closes the response without reading
  the terminating chunk, so the connection cannot go back to the pool: figure 2's findings show one
  TCP connection per streamed request (a plain request reuses its connection). On loopback this costs
  nothing measurable; against a real provider every answer pays a fresh TCP + TLS handshake (one to
  three round trips) before its first token. The SDK's async `Stream` drains the response first
  (`openai/_streaming_cleanup.py`); the sync one does not."""


if __name__ == "__main__":
    sys.exit(main())
