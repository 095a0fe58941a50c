"""Test harness: fake Telegram and OpenAI servers on 127.0.0.1 and the real bot wired to them."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# tiktoken downloads encodings on first use; offline, use the ready cache beside the project.
_CACHE = ROOT.parent / "shared" / "tiktoken"
if _CACHE.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_CACHE)

from bot import Bot  # noqa: E402
from config import load_config  # noqa: E402
from sender import RateLimiter  # noqa: E402
from sessions import Place, Session  # noqa: E402
from storage import SqliteBackend  # noqa: E402
from tests.fakes.openai import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.fakes.wiring import fake_env  # noqa: E402

ADMIN = 1
ALICE = 100
BOB = 101
STRANGER = 666
GROUP = -1001
# A model with a 400-token window, for the context warning and reset.
TINY_MODELS = """
[[models]]
id = "tiny"
provider = "openai"
context_window = 400
max_output = 50
"""


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


def bot_env(tg: FakeTelegram, llm: FakeOpenAI, data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a bot pointed at the fakes; `overrides` may remove a key with ''."""
    return fake_env(tg, llm, data_dir, **{
        "ALLOWED_USER_IDS": f"{ALICE},{BOB}",
        "ADMIN_USER_IDS": str(ADMIN),
        "POLL_TIMEOUT": "2",
        "DRAFT_INTERVAL": "0.3",
        "GROUP_EDIT_INTERVAL": "1",
        "REQUEST_TIMEOUT": "10",
        **overrides,
    })


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """A fake-Telegram message's inline buttons: text -> callback data."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


@dataclass
class Harness:
    """A running bot and its fakes, with the user's side of the conversation."""

    tg: FakeTelegram
    llm: FakeOpenAI
    bot: Bot
    data_dir: Path

    def say(self, text: str, user: int = ALICE, chat: int | None = None, **fields: object) -> int:
        return self.tg.send_text(user, text, chat_id=chat, **fields)

    def replies(self, chat: int, n: int, timeout: float = 10) -> list[str]:
        """The chat's bot messages once there are at least `n` and the bot is idle."""
        self.tg.wait_messages(chat, n, timeout=timeout)
        self.idle()
        return self.tg.messages(chat)

    def ask(self, text: str, user: int = ALICE, chat: int | None = None) -> str:
        """Send a message and return the bot's one new message in answer."""
        where = chat if chat is not None else user
        before = len(self.tg.messages(where))
        self.say(text, user, chat)
        self.tg.wait_messages(where, before + 1)
        self.idle()
        return "\n".join(self.tg.messages(where)[before:])

    def chat_requests(self) -> list[dict[str, object]]:
        """Bodies of the chat requests the model server received, oldest first."""
        return [r.body for r in self.llm.requests if r.path.endswith("/chat/completions")]

    def idle(self, timeout: float = 15) -> None:
        assert self.bot.dispatcher.wait_idle(timeout), "the bot did not finish its work"

    def session(self, user: int = ALICE, chat: int | None = None, thread: int | None = None) -> Session:
        """The user's current conversation in a chat (default: their private chat)."""
        assert self.bot.app is not None
        return self.bot.app.store.get(Place(user if chat is None else chat, user, thread))


@pytest.fixture
def start_bot(tg: FakeTelegram, llm: FakeOpenAI, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Start the real bot against the fakes: `start_bot(MODELS_FILE=..., STREAM="false")`."""
    started: list[Bot] = []

    def start(**overrides: str) -> Harness:
        config = load_config(bot_env(tg, llm, tmp_path / "data", **overrides), tmp_path / "absent.env")
        bot = Bot(config)
        bot.start()
        started.append(bot)
        return Harness(tg, llm, bot, tmp_path / "data")

    yield start
    for bot in started:
        bot.shutdown(grace=3)


def unthrottled(h: Harness) -> Harness:
    """Flood control off on both sides, for tests about where messages go (not how fast)."""
    h.tg.rate_limit = False
    h.bot.sender.limiter = RateLimiter(private_rate=100, group_rate=100, burst=100, global_rate=1000)
    return h


class FailingConnection:
    """Wraps the backend's connection; statements starting with `fail_on` raise a disk error."""

    def __init__(self, db: sqlite3.Connection, fail_on: str) -> None:
        self.db, self.fail_on, self.failures = db, fail_on, 0

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(self.fail_on):
            self.failures += 1
            raise sqlite3.OperationalError("disk I/O error")

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def break_connection(backend: SqliteBackend, fail_on: str) -> FailingConnection:
    failing = FailingConnection(backend._db, fail_on)
    backend._db = failing  # type: ignore[assignment]
    return failing


def repair_connection(backend: SqliteBackend, failing: FailingConnection) -> None:
    backend._db = failing.db


def tiny_bot(start_bot: Callable[..., Harness], tmp_path: Path, **env: str) -> Harness:
    """A bot whose default model is the tiny one."""
    models = tmp_path / "models.toml"
    models.write_text(TINY_MODELS)
    return start_bot(MODELS_FILE=str(models), DEFAULT_MODEL="tiny", **env)


@pytest.fixture
def harness(start_bot: Callable[..., Harness]) -> Harness:
    return start_bot()


__all__ = ["ADMIN", "ALICE", "BOB", "GROUP", "STRANGER", "Harness", "Reply", "bot_env",
           "break_connection", "buttons", "repair_connection", "tiny_bot", "unthrottled"]
