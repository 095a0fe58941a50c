"""Daily token quotas and monthly spending limits per user, and the usage ledger behind them.

Every token a provider reports (chat turns, summaries, transcriptions) is recorded with
`Quotas.record`, the one function other code calls for that; `Quotas.check` says, before
anything is sent to a provider, whether a user is past a limit. A day starts at 00:00 in
TIMEZONE and a month is the calendar month there. Admins are exempt. The current month's
counters are kept in memory and written through to SQLite (`usage_days`), so a restart keeps
them; a failed write is logged (and alerted) and the counting goes on from memory.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from models import ModelInfo
from storage import Tables

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_days (
    user_id INTEGER NOT NULL,
    day TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    cost REAL NOT NULL,
    unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_limits (
    user_id INTEGER PRIMARY KEY,
    daily_tokens INTEGER NOT NULL
);
"""
# One statement adds a request to a day's row, so concurrent users never lose an update.
_ADD = """
INSERT INTO usage_days VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (user_id, day) DO UPDATE SET
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    requests = requests + 1,
    cost = cost + excluded.cost,
    unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens
"""
DAILY, MONTHLY = "daily", "monthly"


@dataclass
class Tally:
    """What a user spent over a period, as the API reported it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost: float = 0.0  # USD, of the tokens on models with a known price
    unpriced_tokens: int = 0  # tokens on models whose price is not known

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def priced(self) -> bool:
        """Whether some of these tokens have a known price (else no cost may be shown)."""
        return self.tokens > self.unpriced_tokens

    def add(self, other: Tally) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        self.cost += other.cost
        self.unpriced_tokens += other.unpriced_tokens


@dataclass(frozen=True)
class Refusal:
    """Why a user may not spend more now: which limit, the figures, and when it resets."""

    limit: str  # DAILY (tokens) or MONTHLY (USD)
    used: float
    allowed: float
    resets: dt.datetime  # aware, in TIMEZONE
    wait: float  # seconds until then


class Quotas:
    """The usage ledger and the limits; safe to call from any thread."""

    def __init__(self, tables: Tables | None, *, daily_tokens: int, monthly_cost: float, timezone: str,
                 exempt: Callable[[int], bool], clock: Callable[[], float] = time.time) -> None:
        self._tables = tables
        self.daily_tokens = daily_tokens
        self.monthly_cost = monthly_cost
        self.timezone = timezone
        self._tz: dt.tzinfo = dt.UTC if timezone == "UTC" else ZoneInfo(timezone)
        self._exempt = exempt
        self._clock = clock
        self._lock = threading.Lock()
        self._days: dict[tuple[int, str], Tally] = {}  # (user, YYYY-MM-DD) of the current month
        self._limits: dict[int, int] = {}  # set with /limit
        self._month = self._date().strftime("%Y-%m")
        if tables is not None:
            tables.add_schema(SCHEMA)
            self._load(tables)

    def _load(self, tables: Tables) -> None:
        for user_id, day, prompt, completion, requests, cost, unpriced in tables.read(
                "SELECT * FROM usage_days WHERE day >= ?", (f"{self._month}-01",)):
            self._days[(user_id, day)] = Tally(prompt, completion, requests, cost, unpriced)
        self._limits = dict(tables.read("SELECT user_id, daily_tokens FROM user_limits"))

    # -- recording -----------------------------------------------------------------------------

    def record(self, user_id: int, prompt_tokens: int, completion_tokens: int,
               model: ModelInfo | None = None, cached_tokens: int = 0) -> None:
        """Count tokens a provider reported for this user (any request: chat, summary, transcription)."""
        prompt, completion = max(prompt_tokens, 0), max(completion_tokens, 0)
        cost = model.cost(prompt, completion, cached_tokens) if model is not None else None
        used = Tally(prompt, completion, 1, cost or 0.0, prompt + completion if cost is None else 0)
        day = self._date().isoformat()
        with self._lock:
            if day[:7] != self._month:  # a new month: last month's days are no longer needed
                self._month = day[:7]
                self._days = {k: v for k, v in self._days.items() if k[1][:7] == self._month}
            self._days.setdefault((user_id, day), Tally()).add(used)
        if self._tables is not None:
            self._tables.write(f"recording the usage of user {user_id}", _ADD,
                               (user_id, day, prompt, completion, used.cost, used.unpriced_tokens))

    # -- reading -------------------------------------------------------------------------------

    def check(self, user_id: int) -> Refusal | None:
        """Why this user may not send anything to a provider now, or None when they may."""
        if self._exempt(user_id):
            return None
        limit = self.daily_limit(user_id)
        today = self.today(user_id)
        if limit and today.tokens >= limit:
            resets = self._next_midnight(months=0)
            return Refusal(DAILY, today.tokens, limit, resets, self._wait(resets))
        month = self.month(user_id)
        if self.monthly_cost and month.cost >= self.monthly_cost:
            resets = self._next_midnight(months=1)
            return Refusal(MONTHLY, month.cost, self.monthly_cost, resets, self._wait(resets))
        return None

    def today(self, user_id: int) -> Tally:
        with self._lock:
            found = self._days.get((user_id, self._date().isoformat()))
            return replace(found) if found else Tally()

    def month(self, user_id: int) -> Tally:
        month = self._date().strftime("%Y-%m")
        total = Tally()
        with self._lock:
            for (uid, day), tally in self._days.items():
                if uid == user_id and day.startswith(month):
                    total.add(tally)
        return total

    def users(self) -> list[int]:
        """Everyone who used something this month or has a limit of their own, by id."""
        month = self._date().strftime("%Y-%m")
        with self._lock:
            found = {uid for uid, day in self._days if day.startswith(month)} | set(self._limits)
        return sorted(found)

    def exempt(self, user_id: int) -> bool:
        return self._exempt(user_id)

    # -- limits --------------------------------------------------------------------------------

    def daily_limit(self, user_id: int) -> int:
        """Tokens a day this user may use; 0 = no limit."""
        return self._limits.get(user_id, self.daily_tokens)

    def own_limit(self, user_id: int) -> int | None:
        """The limit set for this user with /limit, if any."""
        return self._limits.get(user_id)

    def set_daily_limit(self, user_id: int, tokens: int | None) -> None:
        """Give one user their own daily limit (0 = none), or None to go back to DAILY_TOKEN_LIMIT."""
        with self._lock:
            if tokens is None:
                self._limits.pop(user_id, None)
            else:
                self._limits[user_id] = tokens
        if self._tables is None:
            return
        if tokens is None:
            self._tables.write(f"resetting the limit of user {user_id}",
                               "DELETE FROM user_limits WHERE user_id = ?", (user_id,))
        else:
            self._tables.write(f"saving the limit of user {user_id}",
                               "INSERT OR REPLACE INTO user_limits VALUES (?, ?)", (user_id, tokens))

    # -- time ----------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), self._tz)

    def _date(self) -> dt.date:
        return self._now().date()

    def _next_midnight(self, months: int) -> dt.datetime:
        """00:00 of tomorrow (months=0) or of the first day of next month (months=1), in TIMEZONE."""
        today = self._date()
        if months:
            day = dt.date(today.year + today.month // 12, today.month % 12 + 1, 1)
        else:
            day = today + dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(0), tzinfo=self._tz)

    def _wait(self, when: dt.datetime) -> float:
        return max(0.0, when.timestamp() - self._clock())


def money(usd: float) -> str:
    """A cost as people read it: cents, and four decimals for the small sums of a few requests."""
    if usd >= 0.1:
        return f"${usd:,.2f}"
    if usd >= 0.0001:
        return f"${usd:.4f}"
    return "$0" if usd <= 0 else "<$0.0001"
