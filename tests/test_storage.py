"""Tests for storage.py: SQLite profiles and conversations (append, rewrite, failure recovery, the 2.0.0
migration), journal and meta."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import storage
from sessions import Conversation, Message, Place, Profile, Session, Usage
from storage import SqliteBackend
from store import SessionStore
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
    """A session whose conversation id is the user id (one conversation each in these tests)."""
    profile = Profile(user_id=user_id, model="gpt-5.4-mini", system_prompt="Be brief.", system_tokens=7,
                      encoding="o200k_base", name="Alice (@alice)", preset="default",
                      usage=Usage(prompt_tokens=120, completion_tokens=30, requests=2))
    session = Session(profile, Conversation(user_id, Place(user_id, user_id), "o200k_base", warned=True))
    for i in range(turns):
        add_turn(session, i)
    return session


def add_turn(session: Session, i: int) -> None:
    session.add("user", f"question {i} — «ünïcode» 👋", 10 + i)
    session.add("assistant", f"answer {i}\nwith two lines", 20 + i)


def reload(path: Path) -> dict[int, Session]:
    """The current conversations a fresh backend (a restarted bot) finds on disk, by user."""
    fresh = SqliteBackend(path)
    try:
        profiles, conversations = fresh.load()
    finally:
        fresh.close()
    by_user = {p.user_id: p for p in profiles}
    return {c.place.user_id: Session(by_user[c.place.user_id], c) for c, current in conversations if current}


def save(backend: SqliteBackend, session: Session) -> None:
    backend.save(session, current=True)


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


def tamper_first_message(path: Path, user_id: int) -> None:
    """Change a saved row behind the backend's back: it survives only if later saves append."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET content = 'tampered' WHERE conversation_id = ? AND seq = 0",
                   (user_id,))


def contents(path: Path, user_id: int) -> list[str]:
    sql = "SELECT content FROM messages WHERE conversation_id = ? ORDER BY seq"
    return [c for (c,) in query(path, sql, user_id)]


# --- sessions ------------------------------------------------------------------------------------


def test_save_then_load_in_a_new_backend_gives_equal_sessions(backend: SqliteBackend, db_path: Path) -> None:
    alice, bob = make_session(1, turns=2), make_session(2, turns=0)
    bob.profile.preset, bob.conversation.warned, bob.profile.name = None, False, ""
    save(backend, alice)
    save(backend, bob)
    loaded = reload(db_path)
    assert loaded == {1: alice, 2: bob}
    assert [(m.role, m.content, m.tokens) for m in loaded[1].messages] == \
        [(m.role, m.content, m.tokens) for m in alice.messages]
    assert loaded[1].history_tokens == alice.history_tokens == 10 + 20 + 11 + 21
    assert loaded[1].usage == Usage(120, 30, 2)


def test_saving_after_appending_only_inserts_new_rows(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    save(backend, session)
    tamper_first_message(db_path, 1)
    add_turn(session, 1)
    save(backend, session)
    assert query(db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = 1") == [(4,)]
    assert contents(db_path, 1) == ["tampered", "answer 0\nwith two lines",
                                    session.messages[2].content, session.messages[3].content]


def test_saving_after_clear_rewrites_the_history(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=2)
    save(backend, session)
    session.clear()
    save(backend, session)
    assert query(db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = 1") == [(0,)]
    session.add("user", "fresh start", 3)
    save(backend, session)
    assert contents(db_path, 1) == ["fresh start"]
    assert reload(db_path)[1].history_tokens == 3


def test_saving_after_recount_rewrites_token_counts(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    save(backend, session)
    session.recount("cl100k_base", lambda role, content: 99)
    save(backend, session)
    loaded = reload(db_path)[1]
    assert (loaded.conversation.encoding, loaded.profile.encoding, loaded.system_tokens) == (
        "cl100k_base", "cl100k_base", 99)
    assert [m.tokens for m in loaded.messages] == [99, 99]


def test_sessions_of_other_users_are_untouched_by_a_rewrite(backend: SqliteBackend, db_path: Path) -> None:
    alice, bob = make_session(1, turns=1), make_session(2, turns=2)
    save(backend, alice)
    save(backend, bob)
    alice.clear()
    save(backend, alice)
    sql = "SELECT conversation_id, COUNT(*) FROM messages GROUP BY conversation_id"
    assert query(db_path, sql) == [(2, 4)]


def test_a_loaded_session_is_appended_to_not_rewritten(backend: SqliteBackend, db_path: Path) -> None:
    save(backend, make_session(1, turns=1))
    tamper_first_message(db_path, 1)
    fresh = SqliteBackend(db_path)
    try:
        [profile], [(conversation, _)] = fresh.load()
        session = Session(profile, conversation)
        add_turn(session, 1)
        save(fresh, session)
    finally:
        fresh.close()
    assert contents(db_path, 1)[0] == "tampered"
    assert len(contents(db_path, 1)) == 4


def test_conversations_of_one_user_in_several_places(backend: SqliteBackend, db_path: Path) -> None:
    home = make_session(1, turns=1)
    group = Session(home.profile, Conversation(50, Place(-100, 1, thread_id=7), "o200k_base"))
    group.add("user", "in the topic", 4)
    save(backend, home)
    save(backend, group)
    fresh = SqliteBackend(db_path)
    profiles, conversations = fresh.load()
    fresh.close()
    assert len(profiles) == 1
    assert {c.place: [m.content for m in c.messages] for c, _ in conversations} == {
        Place(1, 1): [m.content for m in home.messages], Place(-100, 1, 7): ["in the topic"]}


def test_only_one_current_conversation_per_place(backend: SqliteBackend, db_path: Path) -> None:
    old = make_session(1, turns=1)
    save(backend, old)
    new = Session(old.profile, Conversation(2, Place(1, 1), "o200k_base"))
    save(backend, new)
    assert query(db_path, "SELECT id, is_current FROM conversations ORDER BY id") == [(1, 0), (2, 1)]
    backend.delete_conversation(1)
    assert query(db_path, "SELECT id FROM conversations") == [(2,)]
    assert query(db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = 1") == [(0,)]


def tamper(path: Path, user_id: int, seq: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET content = 'tampered' WHERE conversation_id = ? AND seq = ?",
                   (user_id, seq))


def test_trimming_deletes_the_dropped_rows_and_rewrites_nothing(backend: SqliteBackend,
                                                                db_path: Path) -> None:
    session = make_session(1, turns=3)
    save(backend, session)
    tamper(db_path, 1, 4)  # a kept row: it survives only if the save does not rewrite
    session.conversation.drop_first(2)
    add_turn(session, 3)
    session.conversation.trimmed = True
    save(backend, session)
    assert query(db_path, "SELECT seq FROM messages WHERE conversation_id = 1 ORDER BY seq") == [
        (2,), (3,), (4,), (5,), (6,), (7,)]
    assert contents(db_path, 1)[2] == "tampered"
    loaded = reload(db_path)[1].conversation
    assert (loaded.first_seq, loaded.trimmed, loaded.history_tokens) == (2, True, session.history_tokens)
    assert [m.content for m in loaded.messages][3:] == [m.content for m in session.messages][3:]


def test_a_trimmed_conversation_goes_on_appending_after_a_restart(backend: SqliteBackend,
                                                                 db_path: Path) -> None:
    session = make_session(1, turns=2)
    session.conversation.drop_first(2)
    save(backend, session)
    fresh = SqliteBackend(db_path)
    try:
        [profile], [(conversation, _)] = fresh.load()
        again = Session(profile, conversation)
        again.conversation.drop_first(2)
        add_turn(again, 5)
        save(fresh, again)
    finally:
        fresh.close()
    assert query(db_path, "SELECT seq FROM messages ORDER BY seq") == [(4,), (5,)]
    assert [m.content for m in reload(db_path)[1].messages] == [m.content for m in again.messages]


def test_a_summary_or_a_retried_turn_rewrites_the_history(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=3)
    save(backend, session)
    session.conversation.replace_first(4, Message("system", "[Summary] two turns", 9))
    save(backend, session)
    assert contents(db_path, 1) == ["[Summary] two turns", *[m.content for m in session.messages[1:]]]
    session.conversation.truncate(1)
    session.add("user", "question 2 — «ünïcode» 👋", 12)
    session.add("assistant", "a better answer", 5)
    save(backend, session)
    assert contents(db_path, 1) == [m.content for m in session.messages]
    assert reload(db_path)[1].history_tokens == 9 + 12 + 5


V2_CONVERSATIONS = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, chat_id INTEGER NOT NULL,
    thread_id INTEGER, is_current INTEGER NOT NULL, title TEXT NOT NULL, encoding TEXT NOT NULL,
    warned INTEGER NOT NULL, created REAL NOT NULL, last_active REAL NOT NULL);
INSERT INTO conversations VALUES (3, 100, 100, NULL, 1, 'hello', 'o200k_base', 0, 1.0, 2.0);
PRAGMA user_version = 2;
"""


@contextlib.contextmanager
def opened_after(db_path: Path, script: str) -> Iterator[SqliteBackend]:
    """A backend on a database an older version left (made by `script`)."""
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(script)
    backend = SqliteBackend(db_path)
    try:
        yield backend
    finally:
        backend.close()


def test_a_schema_2_database_learns_which_conversations_were_trimmed(db_path: Path) -> None:
    with opened_after(db_path, V2_CONVERSATIONS) as backend:
        _, [(conversation, current)] = backend.load()
    assert (conversation.id, conversation.title, conversation.trimmed, current) == (3, "hello", False, True)
    assert query(db_path, "PRAGMA user_version") == [(storage.SCHEMA_VERSION,)]


V1_SCHEMA = """
CREATE TABLE sessions (user_id INTEGER PRIMARY KEY, name TEXT NOT NULL, model TEXT NOT NULL,
    system_prompt TEXT NOT NULL, system_tokens INTEGER NOT NULL, encoding TEXT NOT NULL, preset TEXT,
    usage TEXT NOT NULL, warned INTEGER NOT NULL, last_active REAL NOT NULL);
CREATE TABLE messages (user_id INTEGER NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
CREATE TABLE pending_updates (update_id INTEGER PRIMARY KEY, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO sessions VALUES (100, 'Alice', 'gpt-5.4', 'Be brief.', 7, 'o200k_base', 'coder',
    '{"prompt_tokens": 50, "completion_tokens": 9, "requests": 3}', 1, 1700000000.0);
INSERT INTO messages VALUES (100, 0, 'user', 'remember 42', 6), (100, 1, 'assistant', 'ok, 42', 5);
INSERT INTO pending_updates (update_id, body) VALUES (77, '{"update_id": 77}');
INSERT INTO meta VALUES ('offset', '78');
"""


def test_a_2_0_0_database_migrates_to_the_users_private_chat(db_path: Path) -> None:
    with opened_after(db_path, V1_SCHEMA) as backend:
        [profile], [(conversation, current)] = backend.load()
        assert backend.get_meta("offset") == "78"
        assert [u["update_id"] for u in backend.journal_replay()] == [77]
    assert (profile.user_id, profile.name, profile.model, profile.system_prompt, profile.preset) == (
        100, "Alice", "gpt-5.4", "Be brief.", "coder")
    assert profile.usage == Usage(50, 9, 3) and profile.system_tokens == 7
    assert current and conversation.place == Place(100, 100) and conversation.warned
    assert [(m.role, m.content, m.tokens) for m in conversation.messages] == [
        ("user", "remember 42", 6), ("assistant", "ok, 42", 5)]
    assert conversation.title == "remember 42"
    assert reload(db_path)[100].messages == conversation.messages  # and it opens again as the new layout


# --- disk failures -------------------------------------------------------------------------------


def test_failed_save_logs_does_not_raise_and_next_save_rewrites_in_full(
        backend: SqliteBackend, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    session = make_session(1, turns=1)
    save(backend, session)
    tamper_first_message(db_path, 1)
    add_turn(session, 1)

    failing = break_connection(backend, "INSERT OR REPLACE INTO PROFILES")
    with caplog.at_level(logging.ERROR, logger="storage"):
        save(backend, session)  # must not raise
    assert failing.failures == 1
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "STORAGE FAILURE" in caplog.text and "disk I/O error" in caplog.text
    assert len(contents(db_path, 1)) == 2  # the failed transaction was rolled back

    repair_connection(backend, failing)
    save(backend, session)
    assert contents(db_path, 1) == [m.content for m in session.messages]  # "tampered" is gone: rewritten
    assert reload(db_path)[1] == session


def test_failed_message_insert_rolls_back_the_session_rows(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    failing = break_connection(backend, "INSERT OR REPLACE INTO MESSAGES")
    save(backend, session)
    assert failing.failures == 1
    assert query(db_path, "SELECT COUNT(*) FROM profiles") == [(0,)]
    assert query(db_path, "SELECT COUNT(*) FROM conversations") == [(0,)]
    repair_connection(backend, failing)
    save(backend, session)
    assert reload(db_path)[1] == session


def test_failed_commit_does_not_break_later_saves(backend: SqliteBackend, db_path: Path) -> None:
    session = make_session(1, turns=1)
    failing = break_connection(backend, "COMMIT")
    save(backend, session)
    assert failing.failures == 1
    repair_connection(backend, failing)
    assert not backend._db.in_transaction
    add_turn(session, 1)
    save(backend, session)
    assert reload(db_path).get(1) == session


def test_first_failure_is_logged_soon_after_boot(backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(storage.time, "monotonic", lambda: 30.0)  # the machine booted 30 s ago
    break_connection(backend, "INSERT")
    with caplog.at_level(logging.ERROR, logger="storage"):
        save(backend, make_session())
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


def test_conversation_ids_are_never_given_out_twice_across_restarts(db_path: Path) -> None:
    backend = SqliteBackend(db_path)
    store = SessionStore(backend, lambda user: make_session(user).profile)
    first = store.get(Place(1, 1))
    first.add("user", "soon deleted", 3)
    store.save(first)
    assert store.delete(Place(1, 1), first.conversation.id)
    backend.close()
    again = SqliteBackend(db_path)
    try:
        fresh = SessionStore(again, lambda user: make_session(user).profile)
        assert fresh.get(Place(1, 1)).conversation.id > first.conversation.id  # an old button finds nothing
    finally:
        again.close()
