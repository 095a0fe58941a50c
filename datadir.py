"""DATA_DIR: created private, checked writable at start, its database files kept owner-only.

Conversations are private: the directory is created 0700 and the SQLite files
(the database and its -wal/-shm companions) are 0600 whatever the umask of
whoever started the bot. A directory the bot cannot create or write is a
configuration error naming DATA_DIR, not a traceback later.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from config import ConfigError

DB_NAME = "sessions.sqlite3"
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def prepare(data_dir: Path) -> None:
    """Create DATA_DIR (0700) if needed and prove it is writable; ConfigError("DATA_DIR") otherwise."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("DATA_DIR", f"cannot create {data_dir}: {exc.strerror or exc}"
                                      f"{_hint(data_dir)}") from None
    probe = data_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("DATA_DIR", f"cannot write in {data_dir}: {exc.strerror or exc}"
                                      f"{_hint(data_dir)}") from None


def private_database(path: Path) -> None:
    """Make the database and its companions owner-only, creating the database file 0600 if missing.

    SQLite gives the -wal and -shm files the mode of the database, so a 0600 database keeps them
    0600 too; files left 0644 by an older version are tightened here.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            if companion.stat().st_mode & 0o077:
                companion.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError("DATA_DIR", f"cannot make {companion} private: {exc.strerror or exc}") from None


def _hint(data_dir: Path) -> str:
    """What to do about it: usually a directory owned by someone else (a root-owned bind mount)."""
    owner = _owner(data_dir)
    if owner is None or owner == os.geteuid():
        return ""
    return f" (it belongs to uid {owner}, the bot runs as uid {os.geteuid()}: chown it to the bot's user)"


def _owner(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return candidate.stat().st_uid
    return None
