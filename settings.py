"""/settings: a user's own settings, as inline buttons: the interface's language, and rich formatting
on or off where the owner lets each user choose (RICH_MESSAGES=user)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telebot import types

from config import Config
from i18n import LANGUAGE_NAMES
from sessions import Profile

if TYPE_CHECKING:
    from app import App
    from router import Incoming


def rich_for(config: Config, profile: Profile | None) -> bool:
    """Whether this user's answers go as rich messages: the owner's setting, or the user's choice."""
    if config.rich_messages == "user":
        return bool(profile and profile.rich)
    return config.rich_messages == "on"


def cmd_settings(app: App, inc: Incoming) -> None:
    """Show the user's settings with buttons to change them."""
    text, markup = _page(app, inc)
    app.reply(inc, text, markup=markup)


def on_button(app: App, inc: Incoming, value: str) -> tuple[str, types.InlineKeyboardMarkup | None] | None:
    """A `settings:<value>` button: apply it; the page to show after, or None for a stale button."""
    profile = app.store.profile(inc.user_id, inc.user_name)
    kind, _, choice = value.partition(":")
    if kind == "lang" and choice in app.catalog.languages:
        profile.language = choice
    elif kind == "rich" and choice in ("on", "off") and app.config.rich_messages == "user":
        profile.rich = choice == "on"
    else:
        return None
    app.store.save_profile(profile)
    return _page(app, inc)


def _page(app: App, inc: Incoming) -> tuple[str, types.InlineKeyboardMarkup | None]:
    rich = rich_for(app.config, app.store.find_profile(inc.user_id))
    language = app.lang(inc)
    lines = [app.t(inc, "settings.title"),
             app.t(inc, "settings.language", name=LANGUAGE_NAMES.get(language, language)),
             app.t(inc, "settings.rich_on" if rich else "settings.rich_off")]
    markup = types.InlineKeyboardMarkup(row_width=2)
    choices = [(("✅ " if code == language else "") + LANGUAGE_NAMES.get(code, code), code)
               for code in app.catalog.languages]
    markup.add(*(types.InlineKeyboardButton(name, callback_data=f"settings:lang:{code}")
                 for name, code in choices))
    if app.config.rich_messages != "user":
        return "\n\n".join([*lines, app.t(inc, "settings.rich_fixed")]), markup
    markup.row(types.InlineKeyboardButton(app.t(inc, "settings.turn_off" if rich else "settings.turn_on"),
                                          callback_data="settings:rich:off" if rich else "settings:rich:on"))
    return "\n\n".join([*lines, app.t(inc, "settings.rich_note")]), markup
