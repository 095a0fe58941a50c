"""/settings: a user's own settings, as inline buttons (rich formatting on or off, where the owner lets
each user choose with RICH_MESSAGES=user). Other per-user settings belong here too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telebot import types

from config import Config
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
    if value not in ("rich:on", "rich:off") or app.config.rich_messages != "user":
        return None
    profile = app.store.profile(inc.user_id, inc.user_name)
    profile.rich = value == "rich:on"
    app.store.save_profile(profile)
    return _page(app, inc)


def _page(app: App, inc: Incoming) -> tuple[str, types.InlineKeyboardMarkup | None]:
    rich = rich_for(app.config, app.store.find_profile(inc.user_id))
    lines = [app.t(inc, "settings.title"), app.t(inc, "settings.rich_on" if rich else "settings.rich_off")]
    if app.config.rich_messages != "user":
        return "\n\n".join([*lines, app.t(inc, "settings.rich_fixed")]), None
    markup = types.InlineKeyboardMarkup()
    markup.add(types.InlineKeyboardButton(app.t(inc, "settings.turn_off" if rich else "settings.turn_on"),
                                          callback_data="settings:rich:off" if rich else "settings:rich:on"))
    return "\n\n".join([*lines, app.t(inc, "settings.rich_note")]), markup
