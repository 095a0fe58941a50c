"""Telling people things outside a conversation: admin alerts and notices, each in its reader's language.

`Notifier` sends a catalog text to one user's private chat, in the language they chose with
/lang, else their Telegram app's. `Alerts` tells every admin when something only they can fix
goes wrong (the provider refuses the key, the provider account's quota is used up, the bot cannot
store sessions): one alert per cause per hour, sent from a thread of its own so that whoever hit
the problem (a turn, the polling loop's journal) never waits on Telegram.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable

from telebot import types

import llm
from access import Access
from i18n import Catalog
from sender import Sender, TelegramError
from store import SessionStore

log = logging.getLogger(__name__)

ALERT_EVERY = 3600.0  # seconds between two alerts of the same cause


class Notifier:
    """Sends catalog texts to users' private chats, each in that user's language."""

    def __init__(self, sender: Sender, catalog: Catalog, store: SessionStore, access: Access) -> None:
        self.sender, self.catalog, self.store, self.access = sender, catalog, store, access

    def language(self, user_id: int) -> str:
        profile = self.store.find_profile(user_id)
        return self.catalog.language(profile.language if profile else None, self.access.app_language(user_id))

    def text(self, user_id: int, key: str, /, **values: object) -> str:
        return self.catalog.text(self.language(user_id), key, **values)

    def tell(self, user_id: int, text_html: str, markup: types.InlineKeyboardMarkup | None = None) -> bool:
        """Send to the user's private chat; False when Telegram refuses (e.g. they never started the bot)."""
        try:
            self.sender.send_html(user_id, text_html, markup=markup)
            return True
        except TelegramError as exc:
            log.warning("could not tell user %s: %s", user_id, exc.description)
            return False


class Alerts:
    """One alert per cause per hour to every admin, with what to do about it."""

    def __init__(self, admins: frozenset[int], notifier: Notifier | None,
                 clock: Callable[[], float] = time.monotonic,
                 run: Callable[[Callable[[], None]], None] | None = None, every: float = ALERT_EVERY) -> None:
        self.admins = admins
        self.notifier = notifier
        self._clock = clock
        self._run = run or _in_thread
        self._every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def llm_failed(self, exc: llm.LLMError, provider: str) -> None:
        """A model request failed: alert when it is the key or the account, not a passing hiccup."""
        if isinstance(exc, llm.AuthFailed):
            self.report(f"auth:{provider}", "alerts.auth", provider=html.escape(provider))
        elif isinstance(exc, llm.QuotaExhausted):
            self.report(f"quota:{provider}", "alerts.quota", provider=html.escape(provider))

    def storage_failed(self, detail: str) -> None:
        self.report("storage", "alerts.storage", detail=html.escape(detail[:300]))

    def report(self, cause: str, key: str, /, **values: str) -> bool:
        """Alert the admins unless this cause was alerted within the hour; True when sent."""
        now = self._clock()
        with self._lock:
            last = self._last.get(cause)
            if last is not None and now - last < self._every:
                return False
            self._last[cause] = now
        log.warning("admin alert %s: %s", cause, values)
        notifier = self.notifier
        if notifier is None or not self.admins:
            return False

        def send() -> None:
            for admin in sorted(self.admins):
                try:
                    notifier.tell(admin, notifier.text(admin, key, **values))
                except Exception:  # a thread of its own: nobody else would see it
                    log.exception("alert %s to admin %s failed", cause, admin)

        self._run(send)
        return True


def _in_thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="alert", daemon=True).start()
