"""SQLite persistence: profiles and conversations written through after every change, the update journal.

WAL mode with synchronous=NORMAL survives `kill -9` of the bot (only an OS crash
could lose the last commits). History is appended, not rewritten: a turn costs
two row inserts whatever the length of the history, and a trimmed turn one
delete of the rows it dropped. Disk errors are logged
loudly and never stop the chat: the bot goes on from memory and rewrites the
session in full at the next save that succeeds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sessions import Conversation, Message, Place, Profile, Session, Usage

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    user_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    system_tokens INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    preset TEXT,
    language TEXT,
    rich INTEGER,
    usage TEXT NOT NULL,
    last_active REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    thread_id INTEGER,
    is_current INTEGER NOT NULL,
    title TEXT NOT NULL,
    encoding TEXT NOT NULL,
    warned INTEGER NOT NULL,
    created REAL NOT NULL,
    last_active REAL NOT NULL,
    trimmed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations (user_id, chat_id);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    images TEXT,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_updates (
    update_id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# 2.0.0 kept one session per user, used in private and in groups alike. It becomes that user's
# profile and the current conversation of their private chat: private, whatever was said there.
MIGRATE_FROM_1 = """
ALTER TABLE messages RENAME TO messages_v1;
ALTER TABLE sessions RENAME TO sessions_v1;
""" + SCHEMA + """
INSERT INTO profiles SELECT user_id, name, model, system_prompt, system_tokens, encoding, preset, NULL, NULL,
    usage, last_active FROM sessions_v1;
INSERT INTO conversations SELECT user_id, user_id, user_id, NULL, 1,
    COALESCE((SELECT substr(content, 1, 48) FROM messages_v1 m
              WHERE m.user_id = s.user_id AND role = 'user' ORDER BY seq LIMIT 1), ''),
    encoding, warned, last_active, last_active, 0 FROM sessions_v1 s;
INSERT INTO messages SELECT user_id, seq, role, content, tokens, NULL FROM messages_v1;
DROP TABLE messages_v1;
DROP TABLE sessions_v1;
"""
# 2.1 layout (schema 2): conversations did not remember that the user was told about trimming.
MIGRATE_FROM_2 = "ALTER TABLE conversations ADD COLUMN trimmed INTEGER NOT NULL DEFAULT 0;"


class Tables(Protocol):
    """What other modules' persistence (quotas, access) needs: the backend's own file and lock."""

    def add_schema(self, schema: str) -> None: ...

    def write(self, what: str, sql: str, params: Sequence[object] = ()) -> bool: ...

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


class SqliteBackend:
    """Profiles, conversations and pending updates in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        # What each conversation looks like on disk: (epoch, first seq, end seq), to append only the
        # new rows and delete only the dropped ones.
        self._saved: dict[int, tuple[int, int, int]] = {}
        self._last_error_log: float | None = None
        # Told of every storage failure (the admin alerts listen here); must not raise.
        self.on_failure: Callable[[str], None] | None = None
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone()
        if version < SCHEMA_VERSION and old:
            log.info("migrating %s from the 2.0.0 layout (one session per user)", self.path)
            self._db.executescript(f"BEGIN IMMEDIATE; {MIGRATE_FROM_1} "
                                   f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version == 2:
            self._db.executescript(f"BEGIN IMMEDIATE; {MIGRATE_FROM_2} {SCHEMA} "
                                   f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        else:
            self._db.executescript(SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")

    def last_conversation_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'last_conversation_id'").fetchone()
        return int(row[0]) if row else 0

    def load(self) -> tuple[list[Profile], list[tuple[Conversation, bool]]]:
        with self._lock:
            profile_rows = self._db.execute("SELECT * FROM profiles").fetchall()
            conversation_rows = self._db.execute("SELECT * FROM conversations").fetchall()
            history: dict[int, list[Message]] = {}
            first_seq: dict[int, int] = {}
            for cid, seq, role, content, tokens, images in self._db.execute(
                    "SELECT conversation_id, seq, role, content, tokens, images FROM messages "
                    "ORDER BY conversation_id, seq"):
                refs = tuple(json.loads(images)) if images else ()
                history.setdefault(cid, []).append(Message(role, content, tokens, refs))
                first_seq.setdefault(cid, seq)
        profiles = [
            Profile(user_id=user_id, name=name, model=model, system_prompt=prompt,
                    system_tokens=prompt_tokens, encoding=encoding, preset=preset, language=language,
                    rich=None if rich is None else bool(rich), usage=Usage(**json.loads(usage)),
                    last_active=last_active)
            for (user_id, name, model, prompt, prompt_tokens, encoding, preset, language, rich, usage,
                 last_active) in profile_rows]
        conversations = []
        for (cid, user_id, chat_id, thread_id, current, title, encoding, warned, created,
             last_active, trimmed) in conversation_rows:
            messages, first = history.get(cid, []), first_seq.get(cid, 0)
            conversations.append((Conversation(
                id=cid, place=Place(chat_id, user_id, thread_id), encoding=encoding, messages=messages,
                title=title, warned=bool(warned), trimmed=bool(trimmed), created=created,
                last_active=last_active, first_seq=first), bool(current)))
            self._saved[cid] = (0, first, first + len(messages))
        return profiles, conversations

    def save(self, session: Session, current: bool) -> None:
        """Write the profile and the conversation: new messages are appended, the oldest ones dropped
        by trimming deleted, and a history replaced otherwise (cleared, summarised...) rewritten."""
        conversation = session.conversation
        first, end = conversation.first_seq, conversation.first_seq + len(conversation.messages)
        epoch, saved_first, saved_end = self._saved.get(conversation.id, (None, 0, 0))
        rewrite = epoch != conversation.epoch or saved_end > end or first < saved_first
        start = first if rewrite else max(saved_end, first)
        place = conversation.place
        try:
            with self._lock, self._transaction():
                self._write_profile(session.profile)
                self._db.execute(
                    "INSERT OR REPLACE INTO conversations VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (conversation.id, place.user_id, place.chat_id, place.thread_id, int(current),
                     conversation.title, conversation.encoding, int(conversation.warned),
                     conversation.created, conversation.last_active, int(conversation.trimmed)))
                self._db.execute(
                    "INSERT INTO meta VALUES ('last_conversation_id', ?) ON CONFLICT (key) DO UPDATE "
                    "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (str(conversation.id),))
                if current:  # one current conversation per place
                    self._db.execute(
                        "UPDATE conversations SET is_current = 0 WHERE user_id = ? AND chat_id = ? "
                        "AND thread_id IS ? AND id != ?",
                        (place.user_id, place.chat_id, place.thread_id, conversation.id))
                if rewrite:
                    self._db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation.id,))
                elif first > saved_first:
                    self._db.execute("DELETE FROM messages WHERE conversation_id = ? AND seq < ?",
                                     (conversation.id, first))
                self._db.executemany(
                    "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?)",
                    [(conversation.id, seq, m.role, m.content, m.tokens,
                      json.dumps(m.images) if m.images else None)
                     for seq, m in enumerate(conversation.messages[start - first:], start)])
            self._saved[conversation.id] = (conversation.epoch, first, end)
        except sqlite3.Error as exc:
            self._saved.pop(conversation.id, None)  # rewrite in full next time
            self._log_error(f"saving conversation {conversation.id} of user {place.user_id}", exc)

    def save_profile(self, profile: Profile) -> None:
        try:
            with self._lock, self._transaction():
                self._write_profile(profile)
        except sqlite3.Error as exc:
            self._log_error(f"saving the settings of user {profile.user_id}", exc)

    def delete_conversation(self, conversation_id: int) -> None:
        try:
            with self._lock, self._transaction():
                self._db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
                self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            self._saved.pop(conversation_id, None)
        except sqlite3.Error as exc:
            self._log_error(f"deleting conversation {conversation_id}", exc)

    def _write_profile(self, profile: Profile) -> None:
        usage = json.dumps({"prompt_tokens": profile.usage.prompt_tokens,
                            "completion_tokens": profile.usage.completion_tokens,
                            "requests": profile.usage.requests})
        self._db.execute(
            "INSERT OR REPLACE INTO profiles VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (profile.user_id, profile.name, profile.model, profile.system_prompt, profile.system_tokens,
             profile.encoding, profile.preset, profile.language,
             None if profile.rich is None else int(profile.rich), usage, profile.last_active))

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

    # -- other modules' tables in the same file (quotas, access) ---------------------------------

    def add_schema(self, schema: str) -> None:
        """Create another module's tables (CREATE TABLE IF NOT EXISTS ...)."""
        with self._lock:
            self._db.executescript(schema)

    def write(self, what: str, sql: str, params: Sequence[object] = ()) -> bool:
        """Run one statement on another module's table; a disk error is logged and reported, not raised."""
        try:
            with self._lock:
                self._db.execute(sql, params)
            return True
        except sqlite3.Error as exc:
            self._log_error(what, exc)
            return False

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _log_error(self, what: str, exc: sqlite3.Error) -> None:
        if self.on_failure is not None:
            try:
                self.on_failure(f"{what}: {exc}")
            except Exception:
                log.exception("the storage failure listener failed")
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
