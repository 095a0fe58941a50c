"""Access from Telegram: admins asked once per stranger, Allow / Ignore, /allow and /deny, forged presses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from access import Access
from config import Config, Secret
from storage import SqliteBackend
from tests.conftest import ADMIN, ALICE, BOB, STRANGER, Harness, buttons

SECOND_ADMIN = 2


def config(**fields: Any) -> Config:
    return Config(telegram_token=Secret("1:x"), allowed_user_ids=frozenset({ALICE}),
                  admin_user_ids=frozenset({ADMIN}), **fields)


def test_decisions_win_over_the_environment_and_survive_a_restart(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "s.db")
    access = Access(config(), backend)
    assert access.allowed(ALICE) and access.allowed(ADMIN) and not access.allowed(STRANGER)
    access.seen(STRANGER, "Eve (@eve)", "ru")
    assert access.ask(STRANGER) and not access.ask(STRANGER)  # admins are asked once
    assert access.grant(STRANGER, by=ADMIN) and not access.grant(STRANGER, by=ADMIN)
    access.deny(ALICE, by=ADMIN)
    assert not access.allowed(ALICE)
    backend.close()
    again = Access(config(), SqliteBackend(tmp_path / "s.db"))
    assert again.allowed(STRANGER) and not again.allowed(ALICE)
    assert again.name(STRANGER) == "Eve (@eve)" and again.app_language(STRANGER) == "ru"
    assert not again.ask(STRANGER)
    again.grant(ALICE, by=ADMIN)
    assert again.allowed(ALICE)


def test_everyone_star_can_still_be_denied_and_admins_stay_in() -> None:
    access = Access(config(allow_everyone=True), None)
    assert access.allowed(BOB)
    access.deny(BOB, by=ADMIN)
    access.deny(ADMIN, by=ADMIN)
    assert not access.allowed(BOB) and access.allowed(ADMIN)


def test_ignore_does_not_undo_a_decision() -> None:
    access = Access(config(), None)
    access.grant(BOB, by=ADMIN)
    access.ignore(BOB, by=ADMIN)
    assert access.allowed(BOB) and access.state(BOB) == "allowed"


def request_for(h: Harness, admin: int = ADMIN) -> dict[str, Any]:
    """The access request the admin's chat shows (the last message with buttons)."""
    found = [m for m in h.tg.message_objects(admin) if m["reply_markup"]]
    assert found, h.tg.messages(admin)
    return found[-1]


def test_allow_button_lets_a_stranger_in_at_once_and_for_good(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(ADMIN_USER_IDS=f"{ADMIN},{SECOND_ADMIN}")
    h.tg.send_text(STRANGER, "hello?", first_name="Eve", username="eve")
    h.tg.send_text(STRANGER, "anyone?", first_name="Eve", username="eve")
    h.tg.wait_messages(ADMIN, 1)
    h.tg.wait_messages(SECOND_ADMIN, 1)
    refusal = h.replies(STRANGER, 2)[0]
    assert refusal.startswith("Sorry, you are not allowed") and f"id is {STRANGER}:" in refusal
    # One request per admin, not one per message.
    assert h.tg.messages(ADMIN) == [f"🔔 Eve (@eve) ({STRANGER}) wants to use the bot. Let them in?"]
    assert len(h.tg.messages(SECOND_ADMIN)) == 1
    request = request_for(h)
    assert buttons(request) == {"✅ Allow": f"access:allow:{STRANGER}", "Ignore": f"access:ignore:{STRANGER}"}

    h.tg.press_button(ADMIN, request["message_id"], ADMIN, f"access:allow:{STRANGER}")
    h.tg.wait_messages(STRANGER, 3)
    h.idle()
    assert h.tg.messages(STRANGER)[-1].startswith("Good news: an admin has let you in.")
    assert h.tg.messages(ADMIN) == [f"✅ Eve (@eve) ({STRANGER}) may use the bot now."]
    assert request_for_none(h)
    assert h.ask("now?", user=STRANGER) == "echo: now?"
    h.bot.shutdown(grace=2)
    again = start_bot()
    assert again.ask("still in?", user=STRANGER) == "echo: still in?"


def request_for_none(h: Harness) -> bool:
    return all(not m["reply_markup"] for m in h.tg.message_objects(ADMIN))


def test_ignore_button_keeps_them_out_and_stops_the_requests(start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    h.tg.send_text(STRANGER, "hi", first_name="Eve")
    h.tg.wait_messages(ADMIN, 1)
    h.tg.press_button(ADMIN, request_for(h)["message_id"], ADMIN, f"access:ignore:{STRANGER}")
    h.idle()
    h.tg.wait_for(lambda: "is ignored" in h.tg.messages(ADMIN)[-1], 5, "the request edited")
    assert "/allow 666 lets them in later" in h.tg.messages(ADMIN)[-1]
    h.bot.shutdown(grace=2)
    again = start_bot()
    assert again.ask("please", user=STRANGER).startswith("Sorry, you are not allowed")
    assert len(again.tg.messages(ADMIN)) == 1  # not asked again, even after a restart


def test_forged_presses_by_anyone_but_an_admin_change_nothing(start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    h.tg.send_text(STRANGER, "hi")
    h.tg.wait_messages(ADMIN, 1)
    h.idle()
    # Alice (allowed, not an admin) and the stranger himself forge the Allow button's data.
    h.ask("hello")
    for count, presser in enumerate((ALICE, STRANGER), 1):
        h.tg.press_button(presser, 1, presser, f"access:allow:{STRANGER}", check=False)
        h.tg.wait_for(lambda n=count: len(h.tg.callback_answers) == n, 5, "the press answered")
        h.idle()
    answers = [a["text"] for a in h.tg.callback_answers.values()]
    assert answers == ["Only the bot's admins can use this button.", "You are not allowed to use this bot."]
    assert h.ask("let me in", user=STRANGER).startswith("Sorry, you are not allowed")
    assert h.tg.messages(ALICE) == ["echo: hello"]  # nothing was edited or sent for the forgery


def test_allow_and_deny_commands(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false")
    assert h.ask(f"/deny {BOB}", user=ALICE) == "Only the bot's admins can use this command."
    assert h.ask(f"/deny {BOB}", user=ADMIN) == f"⛔ {BOB} may no longer use the bot (until /allow {BOB})."
    assert h.ask("hi", user=BOB).startswith("Sorry, you are not allowed")  # though in ALLOWED_USER_IDS
    assert h.ask(f"/deny {ADMIN}", user=ADMIN).endswith("admins cannot be denied.")
    assert "not a user id" in h.ask("/allow bob", user=ADMIN)
    assert h.ask("/allow", user=ADMIN) == "Send /allow <user id>, e.g. /allow 123456789."
    h.bot.shutdown(grace=2)
    again = start_bot(STREAM="false")
    assert again.ask("hi", user=BOB).startswith("Sorry, you are not allowed")  # /deny survives a restart
    assert again.ask(f"/allow {BOB}", user=ADMIN) == f"✅ User ({BOB}) may use the bot now."
    assert again.tg.messages(BOB)[-1].startswith("Good news: an admin has let you in.")
    assert again.ask("back", user=BOB) == "echo: back"


def test_a_user_who_cannot_be_told_is_still_let_in(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false")
    h.tg.fail_next("sendMessage", 403, "Forbidden: bot can't initiate conversation with a user")
    assert h.ask(f"/allow {STRANGER}", user=ADMIN) == f"✅ {STRANGER} may use the bot now."
    refused = h.tg.calls_of("sendMessage")[0]
    assert (refused.status, refused.params["chat_id"]) == (403, str(STRANGER))  # the welcome
    assert h.ask("hi", user=STRANGER) == "echo: hi"


def test_access_request_and_buttons_in_russian(start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    h.tg.send_text(ADMIN, "/lang ru")  # the admin reads Russian
    h.tg.wait_messages(ADMIN, 1)
    h.idle()
    h.tg.send_text(STRANGER, "привет", first_name="Иван", language_code="ru")
    assert h.replies(STRANGER, 1) == [f"Извините, вам нельзя пользоваться этим ботом. Ваш id в Telegram: "
                                      f"{STRANGER} — отправьте его владельцу бота, чтобы он вас пустил."]
    h.tg.wait_messages(ADMIN, 2)
    request = request_for(h)
    assert request["text"] == f"🔔 Иван ({STRANGER}) хочет пользоваться ботом. Пустить?"
    assert set(buttons(request)) == {"✅ Пустить", "Игнорировать"}
    h.tg.press_button(ADMIN, request["message_id"], ADMIN, f"access:allow:{STRANGER}", language_code="ru")
    h.tg.wait_messages(STRANGER, 2)
    h.idle()
    assert h.tg.messages(STRANGER)[-1].startswith("Хорошая новость: админ открыл вам доступ.")
    assert h.tg.messages(ADMIN)[-1] == f"✅ Иван ({STRANGER}) теперь может пользоваться ботом."
