"""Admin alerts: one per cause per hour, for a refused key, a used-up provider quota and a failing disk."""

from __future__ import annotations

from collections.abc import Callable

import llm
from alerts import Alerts
from tests.conftest import ADMIN, Harness, Reply, break_connection

SECOND_ADMIN = 2


class Recorder:
    """Stands in for the Notifier: what each admin was told, as catalog key and values."""

    def __init__(self) -> None:
        self.told: list[tuple[int, str]] = []

    def text(self, user_id: int, key: str, /, **values: object) -> str:
        return f"{key} {sorted(values.items())}"

    def tell(self, user_id: int, text: str, markup: object = None) -> bool:
        self.told.append((user_id, text))
        return True


def alerts(clock: list[float]) -> tuple[Alerts, Recorder]:
    recorder = Recorder()
    sent = Alerts(frozenset({ADMIN, SECOND_ADMIN}), recorder, clock=lambda: clock[0],  # type: ignore[arg-type]
                  run=lambda fn: fn())
    return sent, recorder


def test_one_alert_per_cause_per_hour() -> None:
    clock = [1000.0]
    sender, recorder = alerts(clock)
    for _ in range(5):
        sender.llm_failed(llm.AuthFailed("401"), "OpenAI")
    sender.llm_failed(llm.QuotaExhausted("429"), "OpenAI")
    sender.llm_failed(llm.AuthFailed("401"), "Groq")  # another provider is another cause
    sender.llm_failed(llm.RateLimited(), "OpenAI")  # a passing hiccup: no alert
    sender.llm_failed(llm.ProviderDown("502"), "OpenAI")
    assert [text for admin, text in recorder.told if admin == ADMIN] == [
        "alerts.auth [('provider', 'OpenAI')]", "alerts.quota [('provider', 'OpenAI')]",
        "alerts.auth [('provider', 'Groq')]"]
    assert {admin for admin, _ in recorder.told} == {ADMIN, SECOND_ADMIN}
    clock[0] += 3599
    sender.llm_failed(llm.AuthFailed("401"), "OpenAI")
    assert len(recorder.told) == 6
    clock[0] += 1  # an hour after the first
    sender.llm_failed(llm.AuthFailed("401"), "OpenAI")
    assert len(recorder.told) == 8


def test_without_admins_nothing_is_sent() -> None:
    recorder = Recorder()
    sender = Alerts(frozenset(), recorder, run=lambda fn: fn())  # type: ignore[arg-type]
    assert not sender.report("storage", "alerts.storage", detail="disk full")
    assert recorder.told == []


def test_repeated_401s_alert_the_admin_once(harness: Harness) -> None:
    for text in ("one", "two", "three"):
        harness.llm.script(Reply.auth_error())
        assert "refused the bot's API key" in harness.ask(text)
    harness.tg.wait_messages(ADMIN, 1)
    harness.idle()
    assert len(harness.llm.chat_requests()) == 3
    alert, = harness.tg.messages(ADMIN)
    assert alert.startswith("⚠️ OpenAI refuses the bot's API key (401/403)")
    assert "restart the bot" in alert


def test_used_up_quota_apologises_and_alerts(harness: Harness) -> None:
    harness.llm.script(Reply.insufficient_quota())
    answer = harness.ask("hello")
    assert answer == "OpenAI says the bot's account is out of credit. The bot's owner has been told."
    alert, = harness.tg.wait_messages(ADMIN, 1)
    assert "OpenAI says the bot's account has run out of quota or credit" in alert


def test_storage_failure_alerts_the_admin_once_in_their_language(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false")
    h.tg.send_text(ADMIN, "/help", language_code="ru")  # the admin's app speaks Russian
    h.tg.wait_messages(ADMIN, 1)
    h.idle()
    assert h.bot.backend is not None
    break_connection(h.bot.backend, "INSERT")
    assert h.ask("first") == "echo: first"  # the chat goes on from memory
    assert h.ask("second") == "echo: second"
    h.tg.wait_messages(ADMIN, 2)
    h.idle()
    alerts_seen = [m for m in h.tg.messages(ADMIN) if m.startswith("⚠️")]
    assert len(alerts_seen) == 1 and alerts_seen[0].startswith("⚠️ Бот не может записывать в свою базу данных")
    assert "disk I/O error" in alerts_seen[0]
