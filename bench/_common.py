"""Shared plumbing of the benchmarks: paths, the bot wired to the test fakes, log capture, statistics.

Every benchmark module exposes `run(quick: bool) -> Report`; `run.py` collects them into one table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# tiktoken downloads encodings on first use; offline, use the ready cache beside the project.
_CACHE = ROOT.parent / "shared" / "tiktoken"
if _CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_CACHE))

from bot import Bot  # noqa: E402
from config import load_config  # noqa: E402
from tests.fakes._server import BaseHandler  # noqa: E402
from tests.fakes.openai import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.fakes.wiring import fake_env  # noqa: E402

ABSENT_ENV = BENCH / "absent.env"  # never created: the bot must not read a developer's .env
WARM_CHAT = 1  # every in-process bot answers one message here before it is measured


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table; `met` is None for a figure without a target."""

    figure: str
    result: str
    target: str
    met: bool | None


@dataclass
class Report:
    """What one benchmark module measured: table rows, how, and what it shows."""

    title: str
    rows: list[Row]
    method: str
    findings: list[str] = field(default_factory=list)
    analysis: str = ""  # why a target is missed; shown only when one is

    @property
    def missed(self) -> bool:
        return any(row.met is False for row in self.rows)


def met_label(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


# -- statistics ------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: list[float]) -> float:
    """95th percentile, nearest-rank (so with 50 samples it is the 48th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- log capture -----------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Keeps the bot's WARNING+ records (and uncaught thread exceptions) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.thread_crashes: list[str] = []
        self._records_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._records_lock:
            self.records.append(record)

    def errors(self) -> list[logging.LogRecord]:
        """ERROR and worse, or anything logged with a traceback."""
        with self._records_lock:
            return [r for r in self.records if r.levelno >= logging.ERROR or r.exc_info]

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        with self._records_lock:
            self.thread_crashes.append(f"{args.thread.name if args.thread else '?'}: {args.exc_value!r}")


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    """Route every log record of WARNING or worse into a LogCapture for the duration."""
    capture = LogCapture()
    root = logging.getLogger()
    saved_handlers, saved_level, saved_hook = root.handlers[:], root.level, threading.excepthook
    root.handlers[:] = [capture]
    root.setLevel(logging.WARNING)
    threading.excepthook = capture.excepthook
    try:
        yield capture
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        threading.excepthook = saved_hook


# -- the bot in-process --------------------------------------------------------------------------


class _BenchHandler(BaseHandler):
    """One instance per TCP connection of a fake: counts them, answers without Nagle delays.

    The fakes write a response's headers and body in two send() calls. Without TCP_NODELAY the body
    waits for the client's delayed ACK (40 ms on Linux) on every call over a kept-alive connection;
    nginx in front of the real Bot API sets tcp_nodelay, so the benchmarks do too.
    """

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fake = self.server.fake
        if isinstance(fake, BenchTelegram | BenchOpenAI):
            with fake.conns_lock:
                fake.connections += 1

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionResetError:  # the client closed a connection it had not read to the end
            self.close_connection = True


class BenchTelegram(FakeTelegram):
    """FakeTelegram with TCP_NODELAY and a count of the TCP connections it accepted."""

    handler_class = _BenchHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0


class BenchOpenAI(FakeOpenAI):
    """FakeOpenAI with TCP_NODELAY and a count of the TCP connections it accepted."""

    handler_class = _BenchHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0


def bench_env(tg: FakeTelegram, llm: FakeOpenAI, data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a bot pointed at the fakes, open to everyone, with production intervals."""
    return fake_env(tg, llm, data_dir, **{
        "ALLOWED_USER_IDS": "*",
        "SESSION_STORE": "memory",
        "POLL_TIMEOUT": "2",
        "REQUEST_TIMEOUT": "60",
        "LOG_LEVEL": "WARNING",
        **overrides,
    })


class Rig:
    """Fresh fakes and a fresh in-process bot; `with Rig(...) as rig:` stops everything at the end."""

    def __init__(self, data_dir: Path, *, telegram: dict[str, Any] | None = None,
                 default: Callable[[dict[str, Any]], Any] | None = None, **env: str) -> None:
        self.tg = BenchTelegram(**(telegram or {}))
        self.llm = BenchOpenAI(api_key="sk-bench", **({"default": default} if default else {}))
        self.data_dir = data_dir
        self.env = env
        self.bot: Bot | None = None

    def __enter__(self) -> Rig:
        self.tg.start()
        self.llm.start()
        config = load_config(bench_env(self.tg, self.llm, self.data_dir, **self.env), ABSENT_ENV)
        self.bot = Bot(config)
        self.bot.start()
        # Ready once the polling loop has asked for updates: what users send next is picked up at once.
        self.tg.wait_for(lambda: self.tg.calls_of("getUpdates"), timeout=20, what="first getUpdates")
        self._warm_up()
        return self

    def _warm_up(self) -> None:
        """One quick exchange in WARM_CHAT: loads the tokenizer, opens the HTTP clients."""
        self.llm.script(Reply(text="warm"))
        self.tg.send_text(WARM_CHAT, "warm up")
        self.tg.wait_messages(WARM_CHAT, 1, timeout=20)
        self.idle(10)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bot is not None:
            self.bot.shutdown(grace=5)
        self.tg.stop()  # cuts the long poll, so the polling thread sees stop_event and ends
        self.llm.stop()
        for thread in threading.enumerate():
            if thread.name in ("poll", "discover"):
                thread.join(timeout=5)

    @property
    def running(self) -> Bot:
        assert self.bot is not None
        return self.bot

    def idle(self, timeout: float) -> bool:
        return self.running.dispatcher.wait_idle(timeout)


def first_message_time(tg: FakeTelegram, chat: int) -> float | None:
    """When the first sendMessage to `chat` that Telegram accepted arrived (time.time())."""
    for call in tg.calls_of("sendMessage"):
        if call.status == 200 and str(call.params.get("chat_id")) == str(chat):
            return call.time
    return None


def last_message_time(tg: FakeTelegram, chat: int) -> float | None:
    times = [c.time for c in tg.calls_of("sendMessage")
             if c.status == 200 and str(c.params.get("chat_id")) == str(chat)]
    return max(times) if times else None


# -- the bot as a process ----------------------------------------------------------------------------


def child_env(env: dict[str, str]) -> dict[str, str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        base["TIKTOKEN_CACHE_DIR"] = os.environ["TIKTOKEN_CACHE_DIR"]
    return {**base, **env}


class BotProcess:
    """`python bot.py` in a child process, output kept in a log file; always killed on exit."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py")], env=child_env(env),
                                     cwd=log.parent, stdout=self._out, stderr=subprocess.STDOUT)

    def __enter__(self) -> BotProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, tg: FakeTelegram, timeout: float = 30) -> float:
        """Seconds from spawn to the first getUpdates call the fake saw."""
        tg.wait_for(lambda: tg.calls_of("getUpdates") or self.proc.poll() is not None, timeout=timeout)
        if self.proc.poll() is not None:
            raise RuntimeError(f"bot exited with {self.proc.returncode}:\n{self.output()}")
        return time.monotonic() - self.started

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status_value(self, field_name: str) -> int:
        """A numeric field of /proc/PID/status: VmRSS, VmHWM (kB), Threads."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def quiet() -> None:
    """Standalone runs: the bot's logging at WARNING, nothing from libraries below that."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def print_report(report: Report) -> None:
    print(f"\n{report.title}")
    for row in report.rows:
        print(f"  {row.figure}: {row.result}  (target {row.target}; met: {met_label(row.met)})")
    for finding in report.findings:
        print(f"  - {finding}")
