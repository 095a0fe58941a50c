"""SQLite persistence: sessions written through after every change, and the update journal.

WAL mode with synchronous=NORMAL survives `kill -9` of the bot (only an OS crash
could lose the last commits). History is appended, not rewritten: a turn costs
two row inserts whatever the length of the history. Disk errors are logged
loudly and never stop the chat: the bot goes on from memory and rewrites the
session in full at the next save that succeeds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sessions import Message, Session, Usage

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    user_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    system_tokens INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    preset TEXT,
    usage TEXT NOT NULL,
    warned INTEGER NOT NULL,
    last_active REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    user_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_updates (
    update_id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteBackend:
    """Sessions and pending updates in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        # What each session looks like on disk: (epoch, rows saved), to append only the new rows.
        self._saved: dict[int, tuple[int, int]] = {}
        self._last_error_log: float | None = None
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def load_sessions(self) -> list[Session]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM sessions").fetchall()
            history: dict[int, list[Message]] = {}
            for user_id, role, content, tokens in self._db.execute(
                    "SELECT user_id, role, content, tokens FROM messages ORDER BY user_id, seq"):
                history.setdefault(user_id, []).append(Message(role, content, tokens))
        sessions = []
        for (user_id, name, model, prompt, prompt_tokens, encoding, preset, usage, warned,
             last_active) in rows:
            messages = history.get(user_id, [])
            sessions.append(Session(
                user_id=user_id, name=name, model=model, system_prompt=prompt,
                system_tokens=prompt_tokens, encoding=encoding, preset=preset, messages=messages,
                usage=Usage(**json.loads(usage)), warned=bool(warned), last_active=last_active))
            self._saved[user_id] = (0, len(messages))
        return sessions

    def save_session(self, session: Session) -> None:
        epoch, saved = self._saved.get(session.user_id, (None, 0))
        rewrite = epoch != session.epoch or saved > len(session.messages)
        start = 0 if rewrite else saved
        usage = json.dumps({"prompt_tokens": session.usage.prompt_tokens,
                            "completion_tokens": session.usage.completion_tokens,
                            "requests": session.usage.requests})
        try:
            with self._lock, self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (session.user_id, session.name, session.model, session.system_prompt,
                     session.system_tokens, session.encoding, session.preset, usage,
                     int(session.warned), session.last_active))
                if rewrite:
                    self._db.execute("DELETE FROM messages WHERE user_id = ?", (session.user_id,))
                self._db.executemany(
                    "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?)",
                    [(session.user_id, seq, m.role, m.content, m.tokens)
                     for seq, m in enumerate(session.messages[start:], start)])
            self._saved[session.user_id] = (session.epoch, len(session.messages))
        except sqlite3.Error as exc:
            self._saved.pop(session.user_id, None)  # rewrite in full next time
            self._log_error(f"saving session {session.user_id}", exc)

    def journal_add(self, update_id: int, body: dict[str, Any]) -> None:
        """Remember an update before it is handled, so a crash replays it."""
        try:
            with self._lock:
                self._db.execute("INSERT OR IGNORE INTO pending_updates (update_id, body) VALUES (?, ?)",
                                 (update_id, json.dumps(body)))
        except sqlite3.Error as exc:
            self._log_error("journaling an update", exc)

    def journal_done(self, update_id: int) -> None:
        try:
            with self._lock:
                self._db.execute("DELETE FROM pending_updates WHERE update_id = ?", (update_id,))
        except sqlite3.Error as exc:
            self._log_error("closing an update", exc)

    def journal_replay(self, max_attempts: int = 2) -> list[dict[str, Any]]:
        """Updates left unhandled by the last run; one that failed `max_attempts` times is dropped."""
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM pending_updates WHERE attempts >= ?", (max_attempts,))
            self._db.execute("UPDATE pending_updates SET attempts = attempts + 1")
            rows = self._db.execute("SELECT body FROM pending_updates ORDER BY update_id").fetchall()
        return [json.loads(body) for (body,) in rows]

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            self._log_error(f"saving {key}", exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _log_error(self, what: str, exc: sqlite3.Error) -> None:
        # Loud, but at most once a minute: a full disk fails every save.
        now = time.monotonic()
        if self._last_error_log is None or now - self._last_error_log > 60:
            self._last_error_log = now
            log.error("STORAGE FAILURE %s in %s: %s; the bot goes on from memory", what, self.path, exc)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type:
            self.db.execute("ROLLBACK")
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:
            # After a failed COMMIT the transaction may still be open: later statements would join it.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
