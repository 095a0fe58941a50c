"""The message catalog: complete in every language, and the interface in the user's language."""

from __future__ import annotations

import re
from collections.abc import Callable

from i18n import DEFAULT_LANGUAGE, load_catalog, placeholders
from presets import load_presets
from tests.conftest import ALICE, Harness, buttons

CYRILLIC = re.compile(r"[А-Яа-яЁё]")


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    catalog = load_catalog()
    assert catalog.languages == ["en", "ru"]
    reference = catalog.texts[DEFAULT_LANGUAGE]
    for language, texts in catalog.texts.items():
        assert set(texts) == set(reference), (language, set(texts) ^ set(reference))
        for key, text in texts.items():
            assert placeholders(text) == placeholders(reference[key]), (language, key)


def test_russian_texts_are_russian_and_english_ones_are_not() -> None:
    catalog = load_catalog()
    for key, text in catalog.texts["en"].items():
        assert not CYRILLIC.search(text), key
    # Texts with no words to translate (only placeholders and marks) may be the same in both.
    neutral = {"info.model_line", "usage.cost"}
    untranslated = [k for k, t in catalog.texts["ru"].items()
                    if t == catalog.texts["en"][k] and k not in neutral]
    assert untranslated == [], untranslated
    assert all(not re.search(r"[A-Za-z]{2}", re.sub(r"\{\w+\}|<[^>]+>", "", catalog.texts["en"][k]))
               for k in neutral)


def test_language_choice() -> None:
    catalog = load_catalog()
    assert catalog.language(None, "ru") == "ru"
    assert catalog.language(None, "ru-RU") == "ru"
    assert catalog.language(None, "de") == "en"
    assert catalog.language(None, None) == "en"
    assert catalog.language("en", "ru") == "en"
    assert catalog.language("xx", "ru") == "ru"


def ask_as(h: Harness, text: str, language: str, user: int = ALICE) -> str:
    before = len(h.tg.messages(user))
    h.tg.send_text(user, text, language_code=language)
    h.tg.wait_messages(user, before + 1)
    h.idle()
    return "\n".join(h.tg.messages(user)[before:])


def test_help_follows_the_telegram_language(harness: Harness) -> None:
    russian = ask_as(harness, "/help", "ru")
    assert "Команды" in russian and "Начать новый разговор" in russian
    english = ask_as(harness, "/help", "en")
    assert "Commands" in english and not CYRILLIC.search(english)


def test_lang_overrides_the_app_language_and_survives_a_restart(start_bot: Callable[..., Harness]) -> None:
    h = start_bot()
    assert ask_as(h, "/lang en", "ru") == "Done: I speak English with you now."
    assert "Commands" in ask_as(h, "/help", "ru")
    h.bot.shutdown(grace=2)
    again = start_bot()
    assert not CYRILLIC.search(ask_as(again, "/help", "ru"))
    assert ask_as(again, "/lang ru", "en") == "Готово: теперь я говорю с вами по-русски."
    assert ask_as(again, "/lang fr", "en").startswith("Я говорю на языках: en, ru")


def test_command_menu_is_registered_in_both_languages(harness: Harness) -> None:
    english = {c["command"]: c["description"] for c in harness.tg.commands}
    russian = {c["command"]: c["description"] for c in harness.tg.commands_for("ru")}
    assert set(english) == set(russian) and "lang" in english
    assert english["clear"] == "Start a new conversation"
    assert russian["clear"] == "Начать новый разговор"


def test_every_shipped_preset_has_its_title_and_description_in_every_language() -> None:
    languages = [lang for lang in load_catalog().languages if lang != DEFAULT_LANGUAGE]
    for preset in load_presets(None).values():
        for language in languages:
            assert language in preset.translations, (preset.name, language)
            title, description = preset.translations[language]
            assert title != preset.title and description != preset.description, (preset.name, language)


EVERY_SCREEN = ["/start", "/help", "/info", "/t", "/usage", "/model", "/system", "/preset", "/sessions",
                "/lang", "/clear", "/nonsense", "/limit 1 2", "hello"]


def every_screen(h: Harness, language: str) -> dict[str, tuple[int, str]]:
    """Each screen as a different user sees it (in parallel: one chat would wait on Telegram's limits)."""
    users = {text: 1000 + i for i, text in enumerate(EVERY_SCREEN)}
    for text, user in users.items():
        h.tg.send_text(user, text, language_code=language)
    for user in users.values():
        h.tg.wait_messages(user, 1)
    h.idle()
    return {text: (user, "\n".join(h.tg.messages(user))) for text, user in users.items()}


def test_a_russian_speaker_sees_every_screen_and_button_in_russian(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false", ALLOWED_USER_IDS="*", DAILY_TOKEN_LIMIT="100000")
    screens = every_screen(h, "ru")
    for text, (_, answer) in screens.items():
        if text != "hello":  # the model's echo is the model's business
            assert CYRILLIC.search(answer), (text, answer)
    preset_menu = h.tg.message_objects(screens["/preset"][0])[0]
    assert set(buttons(preset_menu)) >= {"Переводчик", "Корректор", "Учитель английского"}
    assert re.search(r"работает \d+ мин", screens["/info"][1])
    assert "translator: Переводит текст" in screens["/info"][1]
    assert "Ассистент" in ask_as(h, "/preset default", "ru")


def test_an_english_speaker_sees_no_russian(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(STREAM="false", ALLOWED_USER_IDS="*")
    screens = every_screen(h, "en")
    for text, (_, answer) in screens.items():
        assert not CYRILLIC.search(answer), text
    preset_menu = h.tg.message_objects(screens["/preset"][0])[0]
    assert not any(CYRILLIC.search(title) for title in buttons(preset_menu))


def test_every_media_the_bot_cannot_read_has_a_name_for_users() -> None:
    from media import Kind, kind_of
    from router import MEDIA_FIELDS

    texts = load_catalog().texts["en"]
    unreadable = [f for f in MEDIA_FIELDS if kind_of(f) is Kind.UNSUPPORTED]
    assert "sticker" in unreadable and [f for f in unreadable if f"media.{f}" not in texts] == []


def test_russian_writes_numbers_its_own_way() -> None:
    catalog = load_catalog()
    text = catalog.text("ru", "tokens.window", window="400,000", share="12.5%")
    assert text == "Контекстное окно: 400\u00a0000, занято 12,5\u00a0%"
    assert catalog.text("en", "tokens.window", window="400,000", share="12.5%") == (
        "Context window: 400,000, of which 12.5% is used")
    # Only numbers the code formatted: ids, versions, user text that looks like a number stay as they are.
    assert catalog.text("ru", "limit.bad_number", value="1.5").startswith("<code>1.5</code>")
    assert "3.0.0" in catalog.text("ru", "info.title", version="3.0.0", uptime="5m")
    refusal = catalog.text("ru", "quota.monthly", limit="$5.00", used="&lt;$0.0001", date="2026-12-02",
                           timezone="UTC", wait="5 ч")
    assert "$5,00" in refusal and "&lt;$0,0001" in refusal and "2026-12-02" in refusal
    assert catalog.text("ru", "model.switched", model="gpt-5.4", window="1,048,576") == (
        "Модель сменена на <code>gpt-5.4</code> (окно 1\u00a0048\u00a0576 токенов).")


def test_a_russian_info_writes_every_number_the_russian_way(harness: Harness) -> None:
    info = ask_as(harness, "/info", "ru")
    assert "400\u00a0000" in info and "400,000" not in info  # the model list as well as the header
