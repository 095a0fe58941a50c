"""All configuration, read once at start into a frozen `Config`.

Sources, in order: the process environment, then a `.env` file in the working
directory; the environment wins per variable. Every secret also accepts
`NAME_FILE`, a path to a file holding the value (Docker secrets, systemd
credentials). Nothing else in the bot reads `os.environ`.
"""

from __future__ import annotations

import difflib
import enum
import io
import logging
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

VERSION = "3.0.0"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a Telegram chat. Answer clearly and concisely. "
    "You may use Markdown: bold, italic, inline code, code blocks, links and lists."
)
_PROVIDER_VAR = re.compile(r"^[A-Z][A-Z0-9_]*_(API_KEY|BASE_URL)$")


class Strategy(enum.StrEnum):
    """What happens when a conversation reaches the model's context window (CONTEXT_STRATEGY; the
    strategies themselves are context.py's)."""

    RESET = "reset"
    TRIM = "trim"
    SUMMARIZE = "summarize"


class ConfigError(Exception):
    """A missing or invalid setting; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows itself in reprs, logs or errors."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class Config:
    telegram_token: Secret
    telegram_api_url: str = "https://api.telegram.org"
    # Every *_API_KEY (as Secret) and *_BASE_URL (as str) found in the environment,
    # so providers declared in catalogs find their credentials here.
    provider_env: Mapping[str, Secret | str] = field(default_factory=dict)
    default_model: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    allow_everyone: bool = False
    allowed_user_ids: frozenset[int] = frozenset()
    admin_user_ids: frozenset[int] = frozenset()
    models_file: Path | None = None
    presets_file: Path | None = None
    context_warn_ratio: float = 0.8
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    stream: bool = True
    workers: int = 128
    session_store: str = "sqlite"
    draft_interval: float = 1.0
    group_edit_interval: float = 3.0
    request_timeout: float = 120.0
    max_reply_tokens: int = 8192
    poll_timeout: int = 25
    # Voice notes: None picks the first configured provider that has a transcription model; "off" disables.
    transcribe_model: str | None = None
    transcribe_provider: str | None = None
    daily_token_limit: int = 0  # tokens per user per day; 0 = no limit
    monthly_cost_limit: float = 0.0  # USD per user per month; 0 = no limit
    timezone: str = "UTC"  # where a quota day starts at 00:00
    rich_messages: str = "off"  # rich messages: "off", "on" for everyone, "user" (each user in /settings)
    context_strategy: Strategy = Strategy.RESET  # what happens at the context window
    summary_model: str | None = None  # writes the summaries of CONTEXT_STRATEGY=summarize
    # How the sources were merged, for the log once logging is set up: (level, message).
    notices: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    # Why .env could not be read, when it could not: a later "X is required" may be because of it.
    dotenv_problem: str | None = None

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_user_ids

    def is_allowed(self, user_id: int) -> bool:
        return self.allow_everyone or user_id in self.allowed_user_ids or self.is_admin(user_id)

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that masks them."""
        values = [self.telegram_token.value]
        values += [v.value for v in self.provider_env.values() if isinstance(v, Secret)]
        return [v for v in values if v]


def load_config(environ: Mapping[str, str] | None = None, dotenv_path: str | Path = ".env") -> Config:
    """Build the Config from `environ` (default: the process environment) and `.env`.

    An unreadable `.env` is skipped with a warning when the environment alone is enough, and is the
    error otherwise (`Config.dotenv_problem` lets later checks say so too).
    """
    sources = _environment(environ, dotenv_path)
    try:
        config = _build(sources.env)
    except ConfigError as exc:
        raise sources.blame(exc) from None
    notices = list(sources.notices)
    if sources.dotenv_problem:
        notices.append((logging.WARNING, f"{sources.dotenv_problem}: skipped, the environment has the "
                                         "required settings"))
    return replace(config, notices=tuple(notices), dotenv_problem=sources.dotenv_problem)


def _build(env: Mapping[str, str]) -> Config:
    r = _Reader(env)
    provider_env: dict[str, Secret | str] = {}
    for name in sorted({n.removesuffix("_FILE") for n in env}):
        if _PROVIDER_VAR.match(name):
            value = r.secret(name) if name.endswith("_API_KEY") else r.url(name)
            if value:
                provider_env[name] = value

    allow_everyone, allowed = r.id_list("ALLOWED_USER_IDS", star_ok=True)
    _, admins = r.id_list("ADMIN_USER_IDS", star_ok=False)
    models_file = r.path("MODELS_FILE", must_exist=True) or _if_exists("models.toml")
    store = r.text("SESSION_STORE", "sqlite").lower()
    if store not in ("sqlite", "memory"):
        raise ConfigError("SESSION_STORE", f"must be 'sqlite' or 'memory', not {store!r}")
    strategy = r.text("CONTEXT_STRATEGY", "reset").lower()
    if strategy not in tuple(Strategy):
        raise ConfigError("CONTEXT_STRATEGY", f"must be {', '.join(Strategy)}, not {strategy!r}")
    token = r.secret("TELEGRAM_BOT_TOKEN")
    if not token:
        raise ConfigError("TELEGRAM_BOT_TOKEN", "is required (the token from @BotFather)")
    if not re.fullmatch(r"\d+:[\w-]+", token.value):
        raise ConfigError("TELEGRAM_BOT_TOKEN", "does not look like a bot token (expected 123456:ABC...)")
    return Config(
        telegram_token=token,
        telegram_api_url=r.url("TELEGRAM_API_URL") or "https://api.telegram.org",
        provider_env=provider_env,
        default_model=r.text("DEFAULT_MODEL", "") or None,
        system_prompt=r.text("SYSTEM_PROMPT", "") or DEFAULT_SYSTEM_PROMPT,
        allow_everyone=allow_everyone,
        allowed_user_ids=allowed,
        admin_user_ids=admins,
        models_file=models_file,
        presets_file=r.path("PRESETS_FILE", must_exist=True),
        context_warn_ratio=r.number("CONTEXT_WARN_RATIO", 0.8, low=0.05, high=1.0),
        data_dir=r.path("DATA_DIR") or Path("data"),
        log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        stream=r.boolean("STREAM", True),
        workers=int(r.number("WORKERS", 128, low=1, high=2048, integer=True)),
        session_store=store,
        draft_interval=r.number("DRAFT_INTERVAL", 1.0, low=0.2, high=60),
        group_edit_interval=r.number("GROUP_EDIT_INTERVAL", 3.0, low=0.5, high=60),
        request_timeout=r.number("REQUEST_TIMEOUT", 120.0, low=1, high=3600),
        max_reply_tokens=int(r.number("MAX_REPLY_TOKENS", 8192, low=16, high=1_000_000, integer=True)),
        poll_timeout=int(r.number("POLL_TIMEOUT", 25, low=1, high=50, integer=True)),
        transcribe_model=r.text("TRANSCRIBE_MODEL", "") or None,
        transcribe_provider=r.text("TRANSCRIBE_PROVIDER", "").lower() or None,
        daily_token_limit=int(r.number("DAILY_TOKEN_LIMIT", 0, low=0, high=10**12, integer=True)),
        monthly_cost_limit=r.number("MONTHLY_COST_LIMIT", 0.0, low=0, high=10**9),
        timezone=r.timezone("TIMEZONE"),
        rich_messages=r.choice("RICH_MESSAGES", "OFF", ("OFF", "ON", "USER")).lower(),
        context_strategy=Strategy(strategy),
        summary_model=r.text("SUMMARY_MODEL", "") or None,
    )


def data_dir_from_env(environ: Mapping[str, str] | None = None, dotenv_path: str | Path = ".env") -> Path:
    """DATA_DIR alone, for the health check, which must work without secrets."""
    return Path(_environment(environ, dotenv_path).env.get("DATA_DIR") or "data").expanduser()


def is_secret(name: str) -> bool:
    """Variables that hold secrets: each also accepts NAME_FILE and is masked in logs."""
    return name == "TELEGRAM_BOT_TOKEN" or name.endswith("_API_KEY")


@dataclass
class _Sources:
    """The environment over .env, and what merging them decided (for the log)."""

    env: dict[str, str]
    notices: list[tuple[int, str]]
    dotenv_problem: str | None = None

    def blame(self, exc: ConfigError) -> ConfigError:
        """The error to report: an unreadable .env is the likely reason a setting is missing."""
        if not self.dotenv_problem:
            return exc
        return ConfigError(".env", f"{self.dotenv_problem}, and without it: {exc}")


def _environment(environ: Mapping[str, str] | None, dotenv_path: str | Path) -> _Sources:
    """The process environment (or `environ`) over the values of the .env file, per variable.

    A secret set in the environment, as NAME or as NAME_FILE, hides both forms in .env: compose's
    `env_file: .env` beside secret files, or a systemd EnvironmentFile beside credentials, must not
    turn into "both set".
    """
    base = dict(os.environ) if environ is None else dict(environ)
    sources = _Sources(base, [])
    try:
        file_values = _read_dotenv(Path(dotenv_path))
    except _Unreadable as exc:
        sources.dotenv_problem = str(exc)
        return sources
    # Only a value .env really holds is overridden: the template's empty NAME= lines are not news.
    overridden = sorted(name for name, value in file_values.items()
                        if value.strip() and name in base and base[name] != value)
    for name in list(file_values):
        secret = name.removesuffix("_FILE")
        other = f"{name}_FILE" if name == secret else secret
        if is_secret(secret) and name not in base and other in base:
            sources.notices.append((logging.INFO, f"{name} in .env is not used: the environment sets "
                                                  f"{other}"))
            del file_values[name]
    if overridden:
        sources.notices.append((logging.INFO, f"the environment overrides .env for {', '.join(overridden)}"))
    sources.env = {**file_values, **base}
    return sources


class _Unreadable(Exception):
    """The .env file exists but cannot be read."""


def _read_dotenv(path: Path) -> dict[str, str]:
    if not os.path.lexists(path):
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Unreadable(f"cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise _Unreadable(f"cannot read {path} (not UTF-8 text)") from None
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def check_keys(label: str, where: str, spec: Mapping[str, object], known: Collection[str]) -> None:
    """Refuse keys nobody reads: a misspelt key must not silently change what the bot does."""
    unknown = sorted(set(spec) - set(known))
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
    raise ConfigError(label, f"{where}: unknown key {unknown[0]!r} ({hint})")


def _if_exists(name: str) -> Path | None:
    path = Path(name)
    return path if path.is_file() else None


class _Reader:
    """Typed access to one merged environment; every failure names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, default).strip()

    def secret(self, name: str) -> Secret | None:
        direct, path = self.env.get(name, "").strip(), self.env.get(f"{name}_FILE", "").strip()
        if not path:
            return Secret(direct) if direct else None
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}_FILE", f"{path} is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"{name}_FILE", f"{path} is empty")
        # The same secret twice (compose's env_file beside its secret files) is fine; two differ: which?
        if direct and direct != value:
            raise ConfigError(name, f"{name} and {name}_FILE ({path}) hold different values; keep one")
        return Secret(value)

    def url(self, name: str) -> str | None:
        value = self.text(name, "")
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ConfigError(name, f"must be an http(s) URL, not {value!r}")
        return value.rstrip("/") or None

    def number(self, name: str, default: float, low: float, high: float, integer: bool = False) -> float:
        raw = self.text(name, "")
        if not raw:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ConfigError(name, f"must be {kind}, not {raw!r}") from None
        if not (low <= value <= high) or math.isnan(value):
            raise ConfigError(name, f"must be between {low:g} and {high:g}, not {raw}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name, "").lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, not {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).upper()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def id_list(self, name: str, star_ok: bool) -> tuple[bool, frozenset[int]]:
        raw = self.text(name, "")
        if star_ok and raw == "*":
            return True, frozenset()
        ids = set()
        for item in filter(None, (part.strip() for part in raw.split(","))):
            if not re.fullmatch(r"-?\d+", item):
                raise ConfigError(name, f"expected comma-separated numeric user ids, got {item!r}")
            ids.add(int(item))
        return False, frozenset(ids)

    def timezone(self, name: str) -> str:
        raw = self.text(name, "") or "UTC"
        if raw == "UTC":
            return raw  # needs no time zone database (slim images may have none)
        try:
            ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(name, f"unknown time zone {raw!r} (an IANA name like Europe/Moscow)") from None
        return raw

    def path(self, name: str, must_exist: bool = False) -> Path | None:
        raw = self.text(name, "")
        if not raw:
            return None
        path = Path(raw).expanduser()
        if must_exist and not path.is_file():
            raise ConfigError(name, f"file {raw} does not exist")
        return path
