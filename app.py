"""What every handler works with: the `App` (the bot's parts, built once at start) and the
`Command` table entry, plus the replies and texts in the user's language.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from telebot import types

import attachments
from access import Access
from alerts import Alerts, Notifier
from config import Config
from i18n import Catalog
from llm import LLMClient
from models import Registry
from presets import Preset
from quotas import Quotas
from router import BotIdentity, Incoming
from sender import Sender
from sessions import Session
from store import SessionStore
from streaming import TypingTicker

Handler = Callable[["App", Incoming], None]
# In groups these answer the asking user alone (ephemeral messages), and the menu says so.
EPHEMERAL_COMMANDS = frozenset({"t", "info", "history", "model", "system", "preset", "settings", "sessions",
                                "usage"})


@dataclass(frozen=True)
class Command:
    name: str  # its description is the catalog's `commands.<name>`
    handler: Handler
    admin: bool = False  # for admins only: not in the menu, in /help only for admins


@dataclass
class App:
    """Everything a handler may use; built once in `bot.main()`."""

    config: Config
    registry: Registry
    presets: dict[str, Preset]
    store: SessionStore
    llm: LLMClient
    sender: Sender
    typing: TypingTicker
    me: BotIdentity
    catalog: Catalog
    access: Access
    quotas: Quotas
    notifier: Notifier
    alerts: Alerts
    media: attachments.MediaSupport = field(default_factory=attachments.MediaSupport)
    commands: dict[str, Command] = field(default_factory=dict)
    # (chat id, draft id) -> the cancel flag of the answer being generated there.
    active: dict[tuple[int, int], threading.Event] = field(default_factory=dict)
    no_drafts: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    discovery_wait: float = 5.0  # seconds a message waits for the providers' model lists after a start

    def session(self, inc: Incoming) -> Session:
        """The conversation of the place the update came from, with the user's settings."""
        return self.store.get(inc.place, inc.user_name)

    def lang(self, inc: Incoming) -> str:
        profile = self.store.find_profile(inc.user_id)
        return self.catalog.language(profile.language if profile else None, inc.language)

    def t(self, inc: Incoming, key: str, /, **values: object) -> str:
        """The catalog's text for `key` in the user's language."""
        return self.catalog.text(self.lang(inc), key, **values)

    def edit(self, inc: Incoming, text_html: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
        """Show `text_html` (and `markup`) in place of the message whose button was pressed."""
        if inc.ephemeral_id is not None:  # a button on a message only this user sees
            self.sender.edit_part(inc.chat_id, inc.ephemeral_id, text_html, markup=markup,
                                  ephemeral_for=inc.user_id)
        elif inc.message_id is not None:
            self.sender.edit_part(inc.chat_id, inc.message_id, text_html, markup=markup)

    def reply(self, inc: Incoming, text_html: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
        # In groups, answer as a reply so it is clear whom the bot is talking to; personal commands
        # are answered to the asking user alone where Telegram allows it. Always in the same topic.
        private = not inc.private and inc.command in EPHEMERAL_COMMANDS
        self.sender.send_html(inc.chat_id, text_html, reply_to=None if inc.private else inc.message_id,
                              markup=markup, thread_id=inc.thread_id,
                              ephemeral_for=inc.user_id if private else None)


def clean_arg(text: str, keep_newlines: bool = False) -> str:
    """An argument without control and invisible format characters (Unicode Cc and Cf)."""
    kept = "\n\t" if keep_newlines else "\t"
    visible = "".join(c for c in text if c in kept or unicodedata.category(c) not in ("Cc", "Cf"))
    return "\n".join(line.rstrip() for line in visible.split("\n")).strip()
