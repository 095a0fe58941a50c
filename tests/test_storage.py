"""Tests for storage.py: SQLite sessions (append, rewrite, failure recovery), journal and meta."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import storage
from sessions import Session, Usage
from storage import SqliteBackend
from tests.conftest import break_connection, repair_connection


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "s.db"


@pytest.fixture
def backend(db_path: Path) -> Iterator[SqliteBackend]:
    backend = SqliteBackend(db_path)
    yield backend
    backend.close()


def make_session(user_id: int = 1, turns: int = 1) -> Session:
    session = Session(user_id=user_id, model="gpt-5.4-mini", system_prompt="Be brief.", system_tokens=7,
                      encoding="o200k_base", name="Alice (@alice)", preset="default",
                      usage=Usage(prompt_tokens=120, completion_tokens=30, requests=2), warned=True)
    for i in range(turns):
        add_turn(session, i)
    return session


def add_turn(session: Session, i: int) -> None:
    session.add("user", f"question {i} — «ünïcode» 👋", 10 + i)
    session.add("assistant", f"answer {i}\nwith two lines", 20 + i)


def reload(path: Path) -> dict[int, Session]:
    """The sessions a fresh backend (a restarted bot) finds on disk."""
    fresh = SqliteBackend(path)
    try:
        return {s.user_id: s for s in fresh.load_sessions()}
    finally:
        fresh.close()


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


def tamper_first_message(path: Path, user_id: int) -> None:
    """Change a saved row behind the backend's back: it survives only if later saves append."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET content = 'tampered' WHERE user_id = ? AND seq = 0", (user_id,))


def contents(path: Path, user_id: int) -> list[str]:
    return [c for (c,) in query(path, "SELECT content FROM messages WHERE user_id = ? ORDER BY seq", user_id)]


# --- sessions ------------------------------------------------------------------------------------


def test_save_then_load_in_a_new_backend_gives_equal_sessions(backend: SqliteBackend, db_path: Path) -> None:
    alice, bob = make_session(1, turns=2), make_session(2, turns=0)
    bob.preset, bob.warned, bob.name = None, False, ""
    backend.save_session(alice)
    backend.save_session(bob)
    loaded = reload(db_path)
    assert loaded == {1: alice, 2: bob}
    assert [(m.role, m.content, m.tokens) for m in loaded[1].messages] == \
        [(m.role, m.content, m.tokens) for m in alice.messages]
    assert loaded[1].history_tokens == alice.history_tokens == 10 + 20 + 11 + 21
    assert loaded[1].usage == Usage(120, 30, 2)


def test_saving_after_appending_only_inserts_new_rows(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    backend.save_session(session)
    tamper_first_message(db_path, 1)
    add_turn(session, 1)
    backend.save_session(session)
    assert query(db_path, "SELECT COUNT(*) FROM messages WHERE user_id = 1") == [(4,)]
    assert contents(db_path, 1) == ["tampered", "answer 0\nwith two lines",
                                    session.messages[2].content, session.messages[3].content]


def test_saving_after_clear_rewrites_the_history(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=2)
    backend.save_session(session)
    session.clear()
    backend.save_session(session)
    assert query(db_path, "SELECT COUNT(*) FROM messages WHERE user_id = 1") == [(0,)]
    session.add("user", "fresh start", 3)
    backend.save_session(session)
    assert contents(db_path, 1) == ["fresh start"]
    assert reload(db_path)[1].history_tokens == 3


def test_saving_after_recount_rewrites_token_counts(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    backend.save_session(session)
    session.recount("cl100k_base", lambda role, content: 99)
    backend.save_session(session)
    loaded = reload(db_path)[1]
    assert (loaded.encoding, loaded.system_tokens) == ("cl100k_base", 99)
    assert [m.tokens for m in loaded.messages] == [99, 99]


def test_sessions_of_other_users_are_untouched_by_a_rewrite(backend: SqliteBackend, db_path: Path) -> None:
    alice, bob = make_session(1, turns=1), make_session(2, turns=2)
    backend.save_session(alice)
    backend.save_session(bob)
    alice.clear()
    backend.save_session(alice)
    assert query(db_path, "SELECT user_id, COUNT(*) FROM messages GROUP BY user_id") == [(2, 4)]


def test_a_loaded_session_is_appended_to_not_rewritten(backend: SqliteBackend, db_path: Path) -> None:
    backend.save_session(make_session(1, turns=1))
    tamper_first_message(db_path, 1)
    fresh = SqliteBackend(db_path)
    try:
        (session,) = fresh.load_sessions()
        add_turn(session, 1)
        fresh.save_session(session)
    finally:
        fresh.close()
    assert contents(db_path, 1)[0] == "tampered"
    assert len(contents(db_path, 1)) == 4


# --- disk failures -------------------------------------------------------------------------------


def test_failed_save_logs_does_not_raise_and_next_save_rewrites_in_full(
        backend: SqliteBackend, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    session = make_session(1, turns=1)
    backend.save_session(session)
    tamper_first_message(db_path, 1)
    add_turn(session, 1)

    failing = break_connection(backend, "INSERT OR REPLACE INTO SESSIONS")
    with caplog.at_level(logging.ERROR, logger="storage"):
        backend.save_session(session)  # must not raise
    assert failing.failures == 1
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "STORAGE FAILURE" in caplog.text and "disk I/O error" in caplog.text
    assert len(contents(db_path, 1)) == 2  # the failed transaction was rolled back

    repair_connection(backend, failing)
    backend.save_session(session)
    assert contents(db_path, 1) == [m.content for m in session.messages]  # "tampered" is gone: rewritten
    assert reload(db_path)[1] == session


def test_failed_message_insert_rolls_back_the_session_row(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    failing = break_connection(backend, "INSERT OR REPLACE INTO MESSAGES")
    backend.save_session(session)
    assert failing.failures == 1
    assert query(db_path, "SELECT COUNT(*) FROM sessions") == [(0,)]
    repair_connection(backend, failing)
    backend.save_session(session)
    assert reload(db_path)[1] == session


def test_failed_commit_does_not_break_later_saves(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    failing = break_connection(backend, "COMMIT")
    backend.save_session(session)
    assert failing.failures == 1
    repair_connection(backend, failing)
    assert not backend._db.in_transaction
    add_turn(session, 1)
    backend.save_session(session)
    assert reload(db_path).get(1) == session


def test_first_failure_is_logged_soon_after_boot(backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(storage.time, "monotonic", lambda: 30.0)  # the machine booted 30 s ago
    break_connection(backend, "INSERT")
    with caplog.at_level(logging.ERROR, logger="storage"):
        backend.save_session(make_session())
    assert "STORAGE FAILURE" in caplog.text


def test_journal_and_meta_failures_do_not_raise(backend: SqliteBackend,
                                                caplog: pytest.LogCaptureFixture) -> None:
    break_connection(backend, "")
    with caplog.at_level(logging.ERROR, logger="storage"):
        backend.journal_add(1, {"update_id": 1})
        backend.journal_done(1)
        backend.set_meta("offset", "5")
    assert "STORAGE FAILURE" in caplog.text


# --- journal and meta ----------------------------------------------------------------------------


def update(update_id: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"text": f"hi {update_id}", "chat": {"id": 1}}}


def test_journal_replays_pending_updates_in_order(backend: SqliteBackend) -> None:
    for update_id in (7, 5, 6):
        backend.journal_add(update_id, update(update_id))
    backend.journal_done(6)
    assert backend.journal_replay() == [update(5), update(7)]


def test_journal_drops_an_update_after_max_attempts(backend: SqliteBackend) -> None:
    backend.journal_add(1, update(1))
    assert backend.journal_replay(max_attempts=2) == [update(1)]
    backend.journal_add(1, update(1))  # the replayed update is journaled again: ignored, attempts kept
    assert backend.journal_replay(max_attempts=2) == [update(1)]
    assert backend.journal_replay(max_attempts=2) == []
    assert backend.journal_replay(max_attempts=2) == []


def test_journal_survives_a_restart(backend: SqliteBackend, db_path: Path) -> None:
    backend.journal_add(3, update(3))
    fresh = SqliteBackend(db_path)
    try:
        assert fresh.journal_replay() == [update(3)]
    finally:
        fresh.close()


def test_meta_get_and_set(backend: SqliteBackend, db_path: Path) -> None:
    assert backend.get_meta("offset") is None
    backend.set_meta("offset", "41")
    backend.set_meta("offset", "42")
    assert backend.get_meta("offset") == "42"
    fresh = SqliteBackend(db_path)
    try:
        assert fresh.get_meta("offset") == "42"
    finally:
        fresh.close()


def test_database_uses_wal(backend: SqliteBackend, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
