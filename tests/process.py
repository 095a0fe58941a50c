"""The bot as a child process (`python bot.py ...`) for tests that need the real process:
exit codes, what it prints, signals, file modes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ALICE, ROOT, bot_env
from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` plus what any child needs (PATH, the offline tiktoken cache), nothing else of ours."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        base["TIKTOKEN_CACHE_DIR"] = os.environ["TIKTOKEN_CACHE_DIR"]
    return {**base, **env}


def as_ordinary_user() -> list[str]:
    """A command prefix so that file permissions apply to the child even when the tests run as root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


class BotProcess:
    """`python bot.py` in a child process, its output kept in a log file."""

    def __init__(self, env: dict[str, str], log: Path, prefix: list[str] | None = None) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, str(ROOT / "bot.py")],
                                     env=child_env(env), cwd=log.parent, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, tg: FakeTelegram) -> None:
        """Wait for this process's first poll (earlier processes polled the same fake)."""
        tg.wait_for(lambda: any(c.time >= self.started for c in tg.calls_of("getUpdates"))
                    or self.proc.poll() is not None, timeout=20)
        assert self.proc.poll() is None, self.output()

    def exit_code(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout=timeout)
        self.out.close()
        return code

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.exit_code(timeout=30)

    def stop_within_10s(self) -> None:
        """SIGTERM ends the process with status 0 within 10 s: compose's default grace before SIGKILL."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.exit_code(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 10 s after SIGTERM\n{self.output()}") from None
        assert code == 0, self.output()
        assert time.monotonic() - started < 10
        assert "Traceback" not in self.output()


class Spawner:
    """Starts bots pointed at the fakes, each in `workdir` (where a .env would be read)."""

    def __init__(self, tg: FakeTelegram, llm: FakeOpenAI, workdir: Path) -> None:
        self.tg, self.llm, self.workdir = tg, llm, workdir
        self.procs: list[BotProcess] = []

    def __call__(self, prefix: list[str] | None = None, **overrides: str) -> BotProcess:
        env = bot_env(self.tg, self.llm, self.workdir / "data", **overrides)
        proc = BotProcess(env, self.workdir / f"bot{len(self.procs)}.log", prefix)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()


@contextmanager
def spawner(tg: FakeTelegram, llm: FakeOpenAI, workdir: Path) -> Iterator[Spawner]:
    spawn = Spawner(tg, llm, workdir)
    try:
        yield spawn
    finally:
        spawn.kill_all()


def converse(tg: FakeTelegram, text: str, user: int = ALICE) -> str:
    before = len(tg.messages(user))
    tg.send_text(user, text)
    return tg.wait_messages(user, before + 1, timeout=15)[-1]


def run_bot(args: list[str], env: dict[str, str], cwd: Path,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python bot.py args` to its end (config errors, --help, --healthcheck)."""
    return subprocess.run([*(prefix or []), sys.executable, str(ROOT / "bot.py"), *args], env=child_env(env),
                          cwd=cwd, capture_output=True, text=True, timeout=30)
