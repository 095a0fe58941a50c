"""Quotas and costs: the ledger (unit tests with a clock), and the bot refusing, counting and showing them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import ConfigError
from models import ModelInfo
from quotas import DAILY, MONTHLY, Quotas, money
from storage import SqliteBackend
from tests.conftest import ADMIN, ALICE, BOB, Harness, Reply
from tests.test_config import load_error

PRICED = ModelInfo("priced", "openai", 8192, 1024, price_in=2.0, price_out=10.0, price_cached_in=0.5)
UNPRICED = ModelInfo("unpriced", "openai", 8192, 1024)
MOSCOW = dt.timezone(dt.timedelta(hours=3))  # Europe/Moscow has had no DST since 2014


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: dt.datetime) -> None:
        self.now = when.timestamp()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqliteBackend]:
    backend = SqliteBackend(tmp_path / "s.db")
    yield backend
    backend.close()


def ledger(backend: SqliteBackend | None, clock: Clock, daily: int = 1000, monthly: float = 0.0,
           timezone: str = "Europe/Moscow") -> Quotas:
    return Quotas(backend, daily_tokens=daily, monthly_cost=monthly, timezone=timezone,
                  exempt=lambda user: user == ADMIN, clock=clock)


# -- costs --------------------------------------------------------------------------------------------

def test_cost_uses_the_prices_and_the_cached_rate() -> None:
    # 1,000 prompt tokens of which 400 cached, 200 completion: 600*2 + 400*0.5 + 200*10 per million.
    assert PRICED.cost(1000, 200, cached_tokens=400) == pytest.approx(0.0034)
    assert UNPRICED.cost(1000, 200) is None
    no_cached_price = ModelInfo("m", "openai", 8192, 1024, price_in=1.0, price_out=1.0)
    assert no_cached_price.cost(1000, 0, cached_tokens=1000) == pytest.approx(0.001)


def test_money_is_readable() -> None:
    assert [money(x) for x in (0, 0.00004, 0.0034, 0.25, 1234.5)] == ["$0", "<$0.0001", "$0.0034", "$0.25",
                                                                         "$1,234.50"]


def test_timezone_setting_is_checked(tmp_path: Path) -> None:
    assert "Mars/Olympus" in str(load_error(tmp_path, TIMEZONE="Mars/Olympus"))
    assert isinstance(load_error(tmp_path, DAILY_TOKEN_LIMIT="-5"), ConfigError)


# -- the ledger ---------------------------------------------------------------------------------------

def test_daily_limit_refuses_until_midnight_in_the_timezone(backend: SqliteBackend) -> None:
    clock = Clock(dt.datetime(2026, 12, 2, 23, 50, tzinfo=MOSCOW))
    quotas = ledger(backend, clock)
    quotas.record(ALICE, 700, 200, PRICED)
    assert quotas.check(ALICE) is None  # 900 of 1000
    quotas.record(ALICE, 100, 50, PRICED)
    refusal = quotas.check(ALICE)
    assert refusal is not None and refusal.limit == DAILY and (refusal.used, refusal.allowed) == (1050, 1000)
    assert refusal.resets == dt.datetime(2026, 12, 3, 0, 0, tzinfo=MOSCOW) and refusal.wait == 600
    clock.set(dt.datetime(2026, 12, 2, 23, 59, 59, tzinfo=MOSCOW))
    assert quotas.check(ALICE) is not None
    clock.set(dt.datetime(2026, 12, 3, 0, 0, tzinfo=MOSCOW))  # 21:00 UTC: a new day in Moscow
    assert quotas.check(ALICE) is None and quotas.today(ALICE).tokens == 0
    assert quotas.month(ALICE).tokens == 1050


def test_admins_are_exempt_and_other_users_count_apart(backend: SqliteBackend) -> None:
    quotas = ledger(backend, Clock(dt.datetime(2026, 12, 2, 12, 0, tzinfo=MOSCOW)))
    quotas.record(ADMIN, 5000, 5000, PRICED)
    quotas.record(ALICE, 600, 500, PRICED)
    assert quotas.check(ADMIN) is None and quotas.today(ADMIN).tokens == 10_000
    assert quotas.check(ALICE) is not None and quotas.check(BOB) is None


def test_counters_and_limits_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2026, 12, 2, 12, 0, tzinfo=MOSCOW))
    first = SqliteBackend(tmp_path / "s.db")
    quotas = ledger(first, clock)
    quotas.record(ALICE, 300, 100, PRICED, cached_tokens=100)
    quotas.record(ALICE, 50, 50, UNPRICED)
    quotas.set_daily_limit(BOB, 5000)
    first.close()
    again = ledger(SqliteBackend(tmp_path / "s.db"), clock)
    today = again.today(ALICE)
    assert (today.prompt_tokens, today.completion_tokens, today.requests) == (350, 150, 2)
    assert today.unpriced_tokens == 100
    assert today.cost == pytest.approx(PRICED.cost(300, 100, 100))
    assert again.daily_limit(BOB) == 5000 and again.daily_limit(ALICE) == 1000
    assert again.users() == [ALICE, BOB]


def test_a_new_month_starts_from_zero_and_last_months_days_are_not_loaded(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2026, 11, 30, 23, 30, tzinfo=MOSCOW))
    backend = SqliteBackend(tmp_path / "s.db")
    quotas = ledger(backend, clock, daily=0, monthly=0.01)
    quotas.record(ALICE, 1000, 1000, PRICED)  # $0.012
    refusal = quotas.check(ALICE)
    assert refusal is not None and refusal.limit == MONTHLY
    assert refusal.resets == dt.datetime(2026, 12, 1, 0, 0, tzinfo=MOSCOW)
    clock.set(dt.datetime(2026, 12, 1, 0, 0, 1, tzinfo=MOSCOW))
    assert quotas.check(ALICE) is None and quotas.month(ALICE).tokens == 0
    backend.close()
    assert ledger(SqliteBackend(tmp_path / "s.db"), clock).users() == []


def test_december_rolls_into_january() -> None:
    clock = Clock(dt.datetime(2026, 12, 31, 22, 0, tzinfo=dt.UTC))
    quotas = ledger(None, clock, daily=0, monthly=0.001, timezone="UTC")
    quotas.record(ALICE, 1000, 0, PRICED)
    refusal = quotas.check(ALICE)
    assert refusal is not None and refusal.resets == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_own_limit_zero_means_none_and_default_goes_back(backend: SqliteBackend) -> None:
    quotas = ledger(backend, Clock(dt.datetime(2026, 12, 2, 12, 0, tzinfo=MOSCOW)))
    quotas.record(ALICE, 2000, 0, UNPRICED)
    quotas.set_daily_limit(ALICE, 0)
    assert quotas.check(ALICE) is None and quotas.own_limit(ALICE) == 0
    quotas.set_daily_limit(ALICE, None)
    assert quotas.check(ALICE) is not None and quotas.own_limit(ALICE) is None


def test_unpriced_usage_has_no_cost(backend: SqliteBackend) -> None:
    quotas = ledger(backend, Clock(dt.datetime(2026, 12, 2, 12, 0, tzinfo=MOSCOW)), monthly=0.0001)
    quotas.record(ALICE, 500, 400, UNPRICED)
    month = quotas.month(ALICE)
    assert month.cost == 0 and not month.priced and month.unpriced_tokens == 900
    assert quotas.check(ALICE) is None  # the spending limit counts known prices only


# -- the bot ------------------------------------------------------------------------------------------

def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def test_user_past_the_daily_limit_is_refused_without_a_provider_request(
        start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DAILY_TOKEN_LIMIT="1000", TIMEZONE="Europe/Moscow")
    h.llm.script(Reply("first answer", usage=usage(700, 400)))
    assert h.ask("hello") == "first answer"
    assert len(h.chat_requests()) == 1
    refusal = h.ask("and again")
    assert refusal.startswith("You have used your daily limit of 1,000 tokens (1,100 today), so I sent")
    assert "midnight (Europe/Moscow), in " in refusal
    assert len(h.chat_requests()) == 1  # nothing went to the provider
    # An admin is exempt however much they use.
    h.llm.script(Reply("a", usage=usage(5000, 5000)), Reply("b", usage=usage(5000, 5000)))
    assert h.ask("one", user=ADMIN) == "a" and h.ask("two", user=ADMIN) == "b"
    # Restarted, the bot still knows what Alice used today.
    h.bot.shutdown(grace=2)
    again = start_bot(DAILY_TOKEN_LIMIT="1000", TIMEZONE="Europe/Moscow")
    assert again.ask("after the restart").startswith("You have used your daily limit")
    assert len(again.chat_requests()) == 3


def test_refusal_in_russian(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DAILY_TOKEN_LIMIT="100")
    h.llm.script(Reply("ok", usage=usage(100, 10)))
    h.ask("hi")
    before = len(h.tg.messages(ALICE))
    h.tg.send_text(ALICE, "ещё", language_code="ru")
    h.tg.wait_messages(ALICE, before + 1)
    h.idle()
    assert h.tg.messages(ALICE)[-1].startswith("Вы исчерпали дневной лимит в 100 токенов (сегодня 110)")


def test_usage_and_limit_commands(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DAILY_TOKEN_LIMIT="10000", STREAM="false")
    h.llm.script(Reply("ok", usage=usage(2000, 1000)))
    h.ask("hi")  # gpt-5.4-mini: 2,000 * $0.75 + 1,000 * $4.50 per million = $0.006
    own = h.ask("/usage")
    assert "Today: 3,000 tokens, requests: 1, ≈$0.0060\nThis month: 3,000 tokens, requests: 1, ≈$0.0060" \
        in own
    assert "Daily limit: 10,000 tokens, 7,000 left today" in own
    assert h.ask("/usage all", user=BOB) == "Only the bot's admins can use this command."
    assert h.ask(f"/limit {BOB} 5", user=BOB) == "Only the bot's admins can use this command."
    # The admin gives Alice 1,000 tokens a day: she is over it at once, and it is kept across a restart.
    assert h.ask(f"/limit {ALICE} 1_000", user=ADMIN) == f"User {ALICE} may now use 1,000 tokens a day."
    assert h.ask("more").startswith("You have used your daily limit of 1,000 tokens (3,000 today)")
    everyone = h.ask("/usage all", user=ADMIN)
    assert f"{ALICE} User: 3,000 / 3,000 tokens, ≈$0.0060, own limit 1,000 a day" in everyone
    assert "no limits" in h.ask("/usage", user=ADMIN)
    assert "not a user id" in h.ask("/limit alice 5", user=ADMIN)
    assert "not a number of tokens" in h.ask(f"/limit {ALICE} lots", user=ADMIN)
    h.bot.shutdown(grace=2)
    again = start_bot(DAILY_TOKEN_LIMIT="10000")
    shown = again.ask(f"/limit {ALICE}", user=ADMIN)
    assert shown == f"User {ALICE}: daily limit 1,000, used today: 3,000 tokens."
    assert again.ask(f"/limit {ALICE} default", user=ADMIN).endswith("on the bot's daily limit (10,000).")
    again.llm.script(Reply("fine", usage=usage(10, 10)))
    assert again.ask("allowed again") == "fine"


def test_cost_is_shown_only_where_the_price_is_known(start_bot: Callable[..., Harness],
                                                     tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nid = "house"\nprovider = "openai"\ncontext_window = 8192\n'
                      '[[models]]\nid = "gpt-5.4-mini"\nprovider = "openai"\ncontext_window = 400000\n'
                      'max_output = 8192\nprice_in = 1.0\nprice_out = 2.0\nprice_cached_in = 0.5\n')
    h = start_bot(MODELS_FILE=str(models), DEFAULT_MODEL="house", STREAM="false")
    h.llm.script(Reply("ok", usage=usage(1000, 1000)), Reply("ok", usage=usage(1000, 1000)))
    h.ask("hi", user=BOB)
    h.ask("hi")
    assert "≈" not in h.ask("/usage", user=BOB) and "cost" not in h.ask("/t", user=BOB).lower()
    h.ask("/model gpt-5.4-mini")
    # The MODELS_FILE price, the prompt from the provider's cache: 1,000 * $0.5 + 1,000 * $2 per million.
    h.llm.script(Reply("ok", usage={**usage(1000, 1000), "prompt_tokens_details": {"cached_tokens": 1000}}))
    h.ask("hi again")
    assert "Today: 4,000 tokens, requests: 2, ≈$0.0025 (not counting 2,000 tokens" in h.ask("/usage")
    assert "Estimated cost: ≈$0.0025 today, ≈$0.0025 this month (not counting 2,000" in h.ask("/t")


def test_a_cost_too_small_to_show_keeps_the_message_formatted(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false")  # gpt-5.4-mini has a price
    h.llm.script(Reply("ok", usage=usage(3, 1)))
    h.ask("hi")
    answer = h.ask("/t")
    assert "≈<$0.0001" in answer
    assert h.tg.message_objects(ALICE)[-1]["parse_mode"] == "HTML"  # not resent as plain text
    assert h.bot.sender.stats["plain_fallbacks"] == 0
