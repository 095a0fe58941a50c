"""Who may use the bot: ALLOWED_USER_IDS and ADMIN_USER_IDS, plus what admins decide from Telegram.

`Config.is_allowed` is the environment's answer; admins change it per user with the Allow
button, /allow and /deny, and those decisions win over the environment (a /deny takes access
away from a user of ALLOWED_USER_IDS too, until /allow). Admins are always allowed. The people
table also remembers each user's name and Telegram app language, so that admins' notices and
the welcome after an Allow speak the right language, even after a restart. Decisions are written
through to SQLite (`people`); with SESSION_STORE=memory they last until the bot stops.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

from config import Config
from storage import Tables

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    user_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT,
    access TEXT,
    changed_by INTEGER,
    changed REAL
);
"""
# None: nothing decided; "asked": admins were asked once; "ignored": an admin pressed Ignore.
State = Literal["asked", "ignored", "allowed", "denied"]


@dataclass
class Person:
    user_id: int
    name: str = ""
    language: str | None = None  # the Telegram app's language_code, as last seen
    access: State | None = None
    changed_by: int | None = None
    changed: float | None = None


class Access:
    """The access decision and the admins' grants; safe to call from any thread."""

    def __init__(self, config: Config, tables: Tables | None) -> None:
        self._config = config
        self._tables = tables
        self._lock = threading.Lock()
        self._people: dict[int, Person] = {}
        if tables is not None:
            tables.add_schema(SCHEMA)
            for row in tables.read("SELECT user_id, name, language, access, changed_by, changed FROM people"):
                self._people[row[0]] = Person(*row)

    def allowed(self, user_id: int) -> bool:
        if self._config.is_admin(user_id):
            return True
        state = self.state(user_id)
        if state in ("allowed", "denied"):
            return state == "allowed"
        return self._config.is_allowed(user_id)

    def is_admin(self, user_id: int) -> bool:
        return self._config.is_admin(user_id)

    def state(self, user_id: int) -> State | None:
        person = self._people.get(user_id)
        return person.access if person else None

    def name(self, user_id: int) -> str:
        person = self._people.get(user_id)
        return person.name if person else ""

    def app_language(self, user_id: int) -> str | None:
        person = self._people.get(user_id)
        return person.language if person else None

    def seen(self, user_id: int, name: str, language: str | None) -> None:
        """Remember how a user who just wrote is called and their app's language (written on change)."""
        with self._lock:
            person = self._people.setdefault(user_id, Person(user_id))
            if person.name == name and (language is None or person.language == language):
                return
            person.name = name
            person.language = language or person.language
            row = _row(person)
        self._save(row)

    def ask(self, user_id: int) -> bool:
        """True the first time a refused user writes (admins are asked once), False ever after."""
        with self._lock:
            person = self._people.setdefault(user_id, Person(user_id))
            if person.access is not None:
                return False
            person.access = "asked"
            row = _row(person)
        self._save(row)
        return True

    def grant(self, user_id: int, by: int) -> bool:
        """Let a user in; False when they could already use the bot."""
        was_allowed = self.allowed(user_id)
        self._decide(user_id, "allowed", by)
        return not was_allowed

    def deny(self, user_id: int, by: int) -> None:
        self._decide(user_id, "denied", by)

    def ignore(self, user_id: int, by: int) -> None:
        """An admin pressed Ignore: no more requests about this user, and no access."""
        if self.state(user_id) not in ("allowed", "denied"):
            self._decide(user_id, "ignored", by)

    def _decide(self, user_id: int, state: State, by: int) -> None:
        with self._lock:
            person = self._people.setdefault(user_id, Person(user_id))
            person.access, person.changed_by, person.changed = state, by, time.time()
            row = _row(person)
        log.info("user %s: access %s by %s", user_id, state, by)
        self._save(row)

    def _save(self, row: tuple[object, ...]) -> None:
        if self._tables is not None:
            self._tables.write(f"saving the access of user {row[0]}",
                               "INSERT OR REPLACE INTO people VALUES (?, ?, ?, ?, ?, ?)", row)


def _row(person: Person) -> tuple[object, ...]:
    return (person.user_id, person.name, person.language, person.access, person.changed_by, person.changed)
