"""Start-up as a new owner meets it: the CLI, where settings come from, and each mistake as one line.

Process tests (exit status, what is printed, file modes) run `python bot.py`; the rest run in-process.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runner
from models import UnknownModel
from tests.conftest import ROOT, Harness
from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram
from tests.process import Spawner, as_ordinary_user, converse, run_bot, spawner

TOKEN = "123456:ABC-def"
KEY = "sk-secret-value"


@pytest.fixture
def spawn(tg: FakeTelegram, llm: FakeOpenAI, tmp_path: Path) -> Iterator[Spawner]:
    with spawner(tg, llm, tmp_path) as spawn:
        yield spawn


def test_help_prints_usage_and_exits_0(tmp_path: Path) -> None:
    result = run_bot(["--help"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bot.py [-h] [--healthcheck]")
    for setting in ("TELEGRAM_BOT_TOKEN", "OPENAI_API_KEY", "ALLOWED_USER_IDS", "DATA_DIR", "NAME_FILE"):
        assert setting in result.stdout
    assert result.stderr == ""


def test_healthcheck_reads_the_heartbeat_without_importing_the_app(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bot.py"), "--healthcheck"],
                            env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (1, f"unhealthy: no heartbeat at {tmp_path}/heartbeat\n")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "config" in imported
    assert not imported & {"runner", "telebot", "openai", "tiktoken", "requests", "sqlite3"}, imported


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def not_a_directory(tmp: Path) -> dict[str, str]:
    return {"DATA_DIR": str(Path(write(tmp / "file", "")) / "data")}


def read_only_directory(tmp: Path) -> dict[str, str]:
    (tmp / "ro").mkdir(mode=0o555)
    return {"DATA_DIR": str(tmp / "ro")}


# name -> (environment beyond the token and key, the problem's words in the one line)
MISTAKES: dict[str, tuple[Callable[[Path], dict[str, str]], list[str]]] = {
    "token and token file differ": (
        lambda tmp: {"TELEGRAM_BOT_TOKEN_FILE": write(tmp / "token", "654321:OTHER")},
        ["TELEGRAM_BOT_TOKEN:", "TELEGRAM_BOT_TOKEN_FILE", "different values"]),
    "typo in MODELS_FILE": (
        lambda tmp: {"MODELS_FILE": write(tmp / "models.toml", '[[models]]\nid = "my-model"\n'
                                                               'provder = "lab"\ncontext_window = 8192\n')},
        ["MODELS_FILE:", "models.toml: [[models]] model 'my-model': unknown key 'provder'",
         "did you mean 'provider'?"]),
    "typo in PRESETS_FILE": (
        lambda tmp: {"PRESETS_FILE": write(tmp / "presets.toml", '[presets.pirate]\nprompt = "Arr."\n'
                                                                 'title_ru = "Пират"\ntemprature = 0.9\n')},
        ["PRESETS_FILE:", "presets.toml: [presets.pirate]: unknown key 'temprature'",
         "did you mean 'temperature'?"]),
    "DATA_DIR under a file": (not_a_directory, ["DATA_DIR: cannot create", "Not a directory"]),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_exits_2_with_one_line(tmp_path: Path, mistake: str) -> None:
    extra, words = MISTAKES[mistake]
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": KEY, **extra(tmp_path)}
    result = run_bot([], env, tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("configuration error: ")
    assert all(word in line for word in words), line
    assert TOKEN not in line and KEY not in line and "654321:OTHER" not in line


@pytest.mark.parametrize("mistake", ["DATA_DIR not writable", ".env unreadable and needed"])
def test_permission_mistakes_exit_2_with_one_line(tmp_path: Path, mistake: str) -> None:
    prefix = as_ordinary_user()
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": KEY}
    if mistake == "DATA_DIR not writable":
        env |= read_only_directory(tmp_path)
        words = [f"DATA_DIR: cannot write in {tmp_path}/ro: Permission denied"]
    else:
        write(tmp_path / ".env", f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
        (tmp_path / ".env").chmod(0)
        del env["TELEGRAM_BOT_TOKEN"]
        words = [".env: cannot read .env (Permission denied), and without it: TELEGRAM_BOT_TOKEN: is "
                 "required"]
    result = run_bot([], env, tmp_path, prefix)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert all(word in line for word in words), line


def test_environment_wins_over_dotenv_and_the_same_secret_twice_is_fine(
        spawn: Spawner, tg: FakeTelegram, llm: FakeOpenAI, tmp_path: Path) -> None:
    # Compose after the quick start: .env (env_file) beside secret files; and a stale token in .env.
    write(tmp_path / ".env", f"TELEGRAM_BOT_TOKEN=999:stale\nOPENAI_API_KEY={llm.api_key}\nWORKERS=2\n")
    token_file = write(tmp_path / "token.txt", tg.token + "\n")
    key_file = write(tmp_path / "key.txt", f"{llm.api_key}\n")
    bot = spawn(TELEGRAM_BOT_TOKEN="", TELEGRAM_BOT_TOKEN_FILE=token_file, OPENAI_API_KEY_FILE=key_file)
    bot.wait_ready(tg)
    assert converse(tg, "hi") == "echo: hi"
    bot.stop_within_10s()
    out = bot.output()
    assert ("INFO bot: TELEGRAM_BOT_TOKEN in .env is not used: the environment sets TELEGRAM_BOT_TOKEN_FILE"
            in out)
    assert "999:stale" not in out and tg.token not in out


def test_unreadable_dotenv_is_skipped_and_files_are_private_whatever_the_umask(
        spawn: Spawner, tg: FakeTelegram, tmp_path: Path) -> None:
    write(tmp_path / ".env", "LOG_LEVEL=DEBUG\n")
    (tmp_path / ".env").chmod(0)
    loose = ["sh", "-c", 'umask 022 && exec "$@"', "sh"]
    data = tmp_path / "data"
    bot = spawn(prefix=as_ordinary_user() + loose)
    bot.wait_ready(tg)
    assert converse(tg, "hi") == "echo: hi"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert {"sessions.sqlite3", "sessions.sqlite3-wal", "sessions.sqlite3-shm"} <= set(files), files
    assert set(files.values()) == {0o600}, files
    bot.stop_within_10s()
    assert "WARNING bot: cannot read .env (Permission denied): skipped" in bot.output()

    again = spawn()
    again.wait_ready(tg)
    again.stop_within_10s()
    assert "ready: conversations restored: 1," in again.output()


def test_database_left_world_readable_by_an_older_version_is_made_private(
        start_bot: Callable[..., Harness], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("sessions.sqlite3", "sessions.sqlite3-wal", "sessions.sqlite3-shm"):
        (data / name).touch(mode=0o644)
        (data / name).chmod(0o644)
    h = start_bot()
    assert h.ask("hi") == "echo: hi"
    assert {stat.S_IMODE((data / n).stat().st_mode) for n in os.listdir(data) if "sqlite" in n} == {0o600}


def test_a_provider_without_its_key_is_named_at_start(start_bot: Callable[..., Harness], tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    models = write(tmp_path / "models.toml", '[providers.lab]\nbase_url = "http://127.0.0.1:9/v1"\n'
                                             'api_key_env = "LAB_API_KEY"\n\n[[models]]\nid = "my-model"\n'
                                             'provider = "lab"\ncontext_window = 8192\n')
    h = start_bot(MODELS_FILE=models)
    assert ("provider lab from MODELS_FILE is off: LAB_API_KEY is not set; its models are not offered"
            in caplog.text)
    assert h.bot.registry.providers["lab"].missing == "LAB_API_KEY is not set"
    with pytest.raises(UnknownModel) as info:
        h.bot.registry.get("my-model")
    assert info.value.reason == "its provider lab is off: LAB_API_KEY is not set"
    assert h.ask("/model my-model") == (
        "The model my-model is known but not offered here (its provider lab is off: LAB_API_KEY is not set); "
        "the bot's owner can turn it on. Nothing changed.")


CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"


def test_409_conflict_is_explained_once_and_backs_off(start_bot: Callable[..., Harness], tg: FakeTelegram,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runner, "CONFLICT_BACKOFF", (0.3, 0.5))
    tg.fail_next("getUpdates", 409, CONFLICT, count=3)
    h = start_bot()
    assert h.ask("hi") == "echo: hi"
    polls = tg.calls_of("getUpdates")
    assert [c.status for c in polls[:4]] == [409, 409, 409, 200]
    gaps = [later.time - earlier.time for earlier, later in itertools.pairwise(polls[:4])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.5 and gaps[2] >= 0.5, gaps
    said = [r.getMessage() for r in caplog.records if "409" in r.getMessage()]
    assert said == [f"Telegram at 127.0.0.1:{tg.port}: 409 {CONFLICT}; another process is polling with this "
                    "bot token: stop the other instance (only one may run per token); retrying in 0 s"]


def test_the_409_of_a_webhook_says_to_remove_it() -> None:
    advice = runner._conflict_advice("Conflict: can't use getUpdates method while webhook is active; use "
                                     "deleteWebhook to delete the webhook first", 10)
    assert "webhook is set" in advice and "deleteWebhook" in advice and advice.endswith("retrying in 10 s")


@pytest.fixture
def no_tiktoken(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tiktoken's encodings cannot be loaded (offline, no cache)."""
    import tokens

    def unavailable(name: str, timeout: float) -> object:
        raise ConnectionError("offline")

    monkeypatch.setattr(tokens, "_load", unavailable)
    tokens.counter_for.cache_clear()
    yield
    tokens.counter_for.cache_clear()


def test_counts_are_marked_estimates_when_the_encoding_is_not_loaded(
        no_tiktoken: None, start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    h.ask("hello")
    answer = h.ask("/t")
    assert "(gpt-5.4-mini, estimated)" in answer and "This conversation: ≈" in answer
    assert "(as the API reported, requests: 1)" in answer
