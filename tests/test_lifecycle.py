"""The bot as a process: restarts, SIGKILL, SIGTERM, outages, secrets from files, health check."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from i18n import load_catalog
from storage import SqliteBackend
from tests.conftest import ALICE, Harness, Reply, break_connection, repair_connection
from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram
from tests.process import BotProcess, Spawner, converse, run_bot, spawner


@pytest.fixture
def spawn(tg: FakeTelegram, llm: FakeOpenAI, tmp_path: Path) -> Iterator[Spawner]:
    with spawner(tg, llm, tmp_path) as spawn:
        yield spawn


def test_sigkill_mid_answer_loses_nothing_completed(spawn: Spawner, tg: FakeTelegram,
                                                    llm: FakeOpenAI) -> None:
    bot = spawn()
    bot.wait_ready(tg)
    assert "switched to gpt-5.4 " in converse(tg, "/model gpt-5.4")
    assert "System prompt set" in converse(tg, "/system Speak like a pirate.")
    assert converse(tg, "ahoy") == "echo: ahoy"
    llm.script(Reply(chunks=["slow ", "answer"], delay=10))
    tg.send_text(ALICE, "tell me a long story")
    llm.wait_for(lambda: len(llm.chat_requests()) == 2, timeout=10)
    bot.proc.kill()
    bot.proc.wait()

    restarted = spawn()
    restarted.wait_ready(tg)
    # The message in flight at the kill is answered after the restart, with the restored history.
    tg.wait_messages(ALICE, 4, timeout=20)
    replay = llm.chat_requests()[-1].body
    assert replay["model"] == "gpt-5.4"
    assert [m["content"] for m in replay["messages"]] == [
        "Speak like a pirate.", "ahoy", "echo: ahoy", "tell me a long story"]
    assert converse(tg, "and then?") == "echo: and then?"
    assert len(llm.chat_requests()[-1].body["messages"]) == 6
    assert restarted.signal(signal.SIGTERM) == 0


def streaming_bot(spawn: Spawner, tg: FakeTelegram, llm: FakeOpenAI, text: str) -> BotProcess:
    """A bot in the middle of a 20 s streamed answer to Alice."""
    bot = spawn()
    bot.wait_ready(tg)
    llm.script(Reply(chunks=[f"part{i} " for i in range(100)], chunk_delay=0.2))
    tg.send_text(ALICE, text)
    tg.wait_for(lambda: tg.drafts(ALICE), timeout=10)
    return bot


def test_sigterm_during_stream_cuts_tells_the_user_and_is_not_replayed(
        spawn: Spawner, tg: FakeTelegram, llm: FakeOpenAI) -> None:
    bot = streaming_bot(spawn, tg, llm, "stream for 20 seconds")
    bot.stop_within_10s()
    answer, notice = tg.messages(ALICE)
    assert answer.startswith("part0 part1") and answer.endswith("(stopped)") and "part99" not in answer
    assert notice == load_catalog().text("en", "chat.restarting")

    restarted = spawn()
    restarted.wait_ready(tg)
    assert converse(tg, "next") == "echo: next"
    assert len(tg.messages(ALICE)) == 3 and len(llm.chat_requests()) == 2  # the cut one is not replayed
    restarted.stop_within_10s()


def test_sigterm_while_a_non_streamed_answer_is_awaited(spawn: Spawner, tg: FakeTelegram,
                                                       llm: FakeOpenAI) -> None:
    bot = spawn(STREAM="false")
    bot.wait_ready(tg)
    llm.script(Reply(text="too late", delay=60))
    tg.send_text(ALICE, "think slowly")
    llm.wait_for(lambda: llm.chat_requests(), timeout=10)
    bot.stop_within_10s()
    assert tg.messages(ALICE) == ["(stopped)", load_catalog().text("en", "chat.restarting")]

    restarted = spawn(STREAM="false")
    restarted.wait_ready(tg)
    assert converse(tg, "next") == "echo: next"  # and the cut message is not answered again
    assert len(tg.messages(ALICE)) == 3 and len(llm.chat_requests()) == 2
    restarted.stop_within_10s()


def test_sigterm_while_telegram_is_down(spawn: Spawner, tg: FakeTelegram,
                                        llm: FakeOpenAI) -> None:
    bot = streaming_bot(spawn, tg, llm, "stream while Telegram fails")
    tg.go_down()
    bot.stop_within_10s()
    assert tg.messages(ALICE) == []

    tg.come_back()
    restarted = spawn()
    restarted.wait_ready(tg)
    # The answer never arrived: the next run gives it, once.
    assert tg.wait_messages(ALICE, 1, timeout=20) == ["echo: stream while Telegram fails"]
    assert converse(tg, "next") == "echo: next"
    assert len(tg.messages(ALICE)) == 2
    restarted.stop_within_10s()


def test_telegram_outage_heals_and_answers_each_message_once(start_bot: Callable[..., Harness],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    h = start_bot()
    assert h.ask("before") == "echo: before"
    h.tg.go_down()
    during = [h.say(f"during {i}") for i in range(3)]
    # Several failed polls, with growing back-off, before Telegram returns.
    assert h.bot.outage.wait(lambda: h.bot.poll_failures >= 3, timeout=20)
    h.tg.come_back()
    texts = h.replies(ALICE, 4, timeout=40)
    assert texts == ["echo: before", "echo: during 0", "echo: during 1", "echo: during 2"]
    assert len(during) == 3
    assert [m.content for m in h.session().messages][-2:] == ["during 2", "echo: during 2"]
    # The log names the address and the cause, once per cause however many polls fail, then the recovery.
    said = [r.getMessage() for r in caplog.records if r.name == "bot" and "Telegram at" in r.getMessage()]
    address = f"Telegram at 127.0.0.1:{h.tg.port}: "
    assert said[-1].startswith(f"{address}answers again, after ")
    assert said[-2].startswith(f"{address}unreachable (connection refused); retrying"), said
    assert len(said) <= 3 and len(set(said)) == len(said), said


def test_secrets_from_files_and_fresh_nested_data_dir(spawn: Spawner, tg: FakeTelegram,
                                                      tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text(tg.token + "\n")
    (secrets / "key").write_text("sk-test\n")
    data = tmp_path / "fresh" / "nested" / "data"
    bot = spawn(TELEGRAM_BOT_TOKEN="", OPENAI_API_KEY="", TELEGRAM_BOT_TOKEN_FILE=str(secrets / "token"),
                OPENAI_API_KEY_FILE=str(secrets / "key"), DATA_DIR=str(data))
    bot.wait_ready(tg)
    assert converse(tg, "hi") == "echo: hi"
    assert (data / "sessions.sqlite3").exists()
    assert bot.signal(signal.SIGTERM) == 0
    assert tg.token not in bot.output() and "sk-test" not in bot.output()


def test_bad_token_exits_1_with_a_clear_line(spawn: Spawner, tg: FakeTelegram) -> None:
    bot = spawn(TELEGRAM_BOT_TOKEN="42:WRONG")
    assert bot.proc.wait(timeout=20) == 1
    assert "refused TELEGRAM_BOT_TOKEN" in bot.output()
    assert "Traceback" not in bot.output() and "42:WRONG" not in bot.output()


def healthcheck(data_dir: Path) -> int:
    return run_bot(["--healthcheck"], {"DATA_DIR": str(data_dir)}, data_dir.parent).returncode


def test_healthcheck_follows_the_heartbeat(spawn: Spawner, tg: FakeTelegram,
                                           tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert healthcheck(data) == 1
    bot = spawn()
    bot.wait_ready(tg)
    assert healthcheck(data) == 0
    assert bot.signal(signal.SIGTERM) == 0
    stale = time.time() - 600
    os.utime(data / "heartbeat", (stale, stale))
    assert healthcheck(data) == 1


def test_full_disk_is_logged_and_chat_goes_on(start_bot: Callable[..., Harness],
                                              caplog: pytest.LogCaptureFixture) -> None:
    h = start_bot()
    assert h.bot.backend is not None
    failing = break_connection(h.bot.backend, "INSERT")  # every write of a row fails, as on a full disk
    assert h.ask("still there?") == "echo: still there?"
    assert "STORAGE FAILURE" in caplog.text and failing.failures >= 1
    repair_connection(h.bot.backend, failing)
    assert h.ask("disk is back") == "echo: disk is back"
    h.bot.shutdown(grace=1)
    _, conversations = type(h.bot.backend)(h.data_dir / "sessions.sqlite3").load()
    restored = {c.place.user_id: c for c, current in conversations if current}
    assert [m.content for m in restored[ALICE].messages] == [
        "still there?", "echo: still there?", "disk is back", "echo: disk is back"]


def test_update_replayed_from_the_journal_and_redelivered_is_answered_once(
        start_bot: Callable[..., Harness], tg: FakeTelegram, tmp_path: Path) -> None:
    # The last run journaled this update and died before saving its offset: Telegram still has it.
    update_id = tg.send_text(ALICE, "left over")
    backend = SqliteBackend(tmp_path / "data" / "sessions.sqlite3")
    backend.journal_add(update_id, tg.pending_updates()[0])
    backend.close()
    h = start_bot()
    assert h.replies(ALICE, 1) == ["echo: left over"]
    assert h.ask("next") == "echo: next"  # polled after the redelivered copy
    assert h.tg.messages(ALICE) == ["echo: left over", "echo: next"]
    assert len(h.chat_requests()) == 2
