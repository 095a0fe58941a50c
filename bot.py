"""Entry point: wiring and the long-polling loop.

`python bot.py` runs the bot; `python bot.py --healthcheck` exits 0 while the
polling loop's heartbeat is fresh. The polling thread only parses updates and
queues them per user (see dispatch.py); workers run the handlers.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

import requests
import telebot
from telebot import apihelper, types
from telebot.apihelper import ApiException, ApiTelegramException

import commands
from access import Access
from alerts import Alerts, Notifier
from attachments import MediaSupport, transcription
from config import Config, ConfigError, data_dir_from_env, load_config, setup_logging
from dispatch import Dispatcher
from i18n import load_catalog
from llm import LLMClient, LLMError
from mediastore import MediaStore
from models import Registry, load_registry
from presets import load_presets
from quotas import Quotas
from router import BotIdentity, Incoming, StopGeneration, parse_update
from sender import RateLimiter, Sender
from sessions import MemoryBackend, Profile, SessionStore
from storage import SqliteBackend
from streaming import TypingTicker
from tokens import counter_for

log = logging.getLogger("bot")

HEARTBEAT = "heartbeat"
HEARTBEAT_FRESH = 90.0  # seconds; a long poll returns at least every POLL_TIMEOUT
SHUTDOWN_GRACE = 8.0
MAX_BACKOFF = 5.0  # seconds between polls while Telegram is unreachable: short, so recovery is quick
MEDIA_COLLECT_EVERY = 3600.0  # seconds between sweeps of images no conversation references
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "stopped_message_generation"]
EXIT_CONFIG, EXIT_FATAL = 2, 1


class FatalTelegramError(Exception):
    """Telegram refuses the bot itself (bad token): restarting will not help."""


class Bot:
    """The running bot: its parts, the polling loop and a clean stop."""

    def __init__(self, config: Config, registry: Registry | None = None) -> None:
        self.config = config
        self.registry = registry or load_registry(config)
        self.presets = load_presets(config.presets_file)
        self.catalog = load_catalog()
        media_dir = config.data_dir / "media" if config.session_store == "sqlite" else None
        self.media = MediaSupport(MediaStore(media_dir), transcription(config, self.registry))
        apihelper.API_URL = config.telegram_api_url + "/bot{0}/{1}"
        apihelper.FILE_URL = config.telegram_api_url + "/file/bot{0}/{1}"  # Sender.download
        self.telebot = telebot.TeleBot(config.telegram_token.value, threaded=False, parse_mode=None)
        self.backend = (SqliteBackend(config.data_dir / "sessions.sqlite3")
                        if config.session_store == "sqlite" else None)
        self.sender = Sender(self.telebot, RateLimiter())
        self.llm = LLMClient(self.registry.providers, timeout=config.request_timeout, registry=self.registry)
        self.stop_event = threading.Event()
        self.fatal: str | None = None
        self.dispatcher = Dispatcher(config.workers)
        self.heartbeat = config.data_dir / HEARTBEAT
        self.poll_failures = 0  # consecutive failed getUpdates calls
        self._offset: int | None = None
        self.app: commands.App | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to Telegram, restore state and start polling in a background thread."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._touch_heartbeat()
        me = self._get_me()
        if me is None:
            return  # stopped while Telegram was unreachable
        if not self.registry.default_model:
            self._discover()  # only local models: we need their list to have a default
            if not self.registry.default_model:
                raise ConfigError("DEFAULT_MODEL", "no model is described and the configured providers "
                                                   "listed none (is the local server up?); set DEFAULT_MODEL")
        store = SessionStore(self.backend or MemoryBackend(), self._new_profile)
        config = self.config
        access = Access(config, self.backend)
        quotas = Quotas(self.backend, daily_tokens=config.daily_token_limit,
                        monthly_cost=config.monthly_cost_limit, timezone=config.timezone,
                        exempt=config.is_admin)
        notifier = Notifier(self.sender, self.catalog, store, access)
        alerts = Alerts(config.admin_user_ids, notifier)
        if self.backend is not None:
            self.backend.on_failure = alerts.storage_failed
        self.app = commands.App(config, self.registry, self.presets, store, self.llm, self.sender,
                                TypingTicker(self.sender), me, self.catalog, access, quotas, notifier, alerts,
                                media=self.media)
        commands.register_handlers(self.app)
        log.info("@%s ready: conversations restored: %d, models: %d, default %s", me.username, len(store),
                 len(self.registry.models), self.registry.default_model)
        self._set_commands()
        if self.registry.default_model:
            threading.Thread(target=self._discover, name="discover", daemon=True).start()
        threading.Thread(target=self._collect_media, args=(store,), name="media-collect", daemon=True).start()
        if self.backend is not None:
            saved = self.backend.get_meta("offset")
            self._offset = int(saved) if saved else None
            for update in self.backend.journal_replay():
                log.info("replaying update %s left unanswered by the last run", update.get("update_id"))
                self._accept(update, journal=False)
                # Telegram may deliver it again if the last run died before saving the offset.
                if isinstance(update_id := update.get("update_id"), int):
                    self._offset = max(self._offset or 0, update_id + 1)
        threading.Thread(target=self.poll, name="poll", daemon=True).start()

    def _new_profile(self, user_id: int) -> Profile:
        model = self.registry.resolve(self.registry.default_model)
        prompt = self.config.system_prompt
        tokens = counter_for(model.encoding, model.exact_tokens).message("system", prompt)
        return Profile(user_id, model.id, prompt, tokens, model.encoding)

    def _collect_media(self, store: SessionStore) -> None:
        """Delete stored images no conversation references (cleared, deleted): at start, then hourly."""
        while True:
            try:
                self.media.store.collect(store.image_refs())
            except Exception:  # housekeeping must never take the bot down
                log.exception("sweeping unreferenced images failed")
            if self.stop_event.wait(MEDIA_COLLECT_EVERY):
                return

    def _get_me(self) -> BotIdentity | None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                user: types.User = self.telebot.get_me()
                return BotIdentity(user.id, user.username or "")
            except ApiTelegramException as exc:
                if exc.error_code in (401, 404):
                    raise FatalTelegramError(f"Telegram refused TELEGRAM_BOT_TOKEN ({exc.error_code} "
                                             f"{exc.description}); check the token from @BotFather") from None
                log.warning("getMe failed (%s); retrying in %.0fs", exc.description, backoff)
            except (requests.RequestException, ApiException) as exc:
                log.warning("Telegram unreachable (%s); retrying in %.0fs", exc.__class__.__name__, backoff)
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        return None

    def _set_commands(self) -> None:
        """The command menu in every language of the catalog; English also for everyone else."""
        assert self.app is not None
        for language in (None, *self.catalog.languages):
            texts = [types.BotCommand(c.name, self.catalog.text(language or "en", f"commands.{c.name}"))
                     for c in self.app.commands.values() if not c.admin]
            try:
                self.sender.call(None, self.telebot.set_my_commands, texts, language_code=language,
                                 throttle=False, patience=30)
            except Exception as exc:  # the menu is a nicety: never a reason not to start
                log.warning("setMyCommands (%s) failed: %s", language or "default", exc)

    def _discover(self) -> None:
        for name, provider in self.registry.providers.items():
            if not (provider.enabled and provider.discover):
                continue
            try:
                added = self.registry.add_discovered(name, self.llm.list_models(name))
                log.info("provider %s lists %d more models", name, added)
            except LLMError as exc:
                log.warning("could not list %s models: %r", name, exc)
        if not self.registry.default_model and self.registry.models:
            self.registry.default_model = self.registry.available()[0].id
        self.registry.discovered.set()

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> None:
        """Long-poll until stopped; outages back off and heal by themselves."""
        while not self.stop_event.is_set():
            try:
                self._poll_loop()
            except Exception:  # a bug must not end polling: log it, pause, go on
                log.exception("polling loop failed; resuming in %.0fs", MAX_BACKOFF)
                self.stop_event.wait(MAX_BACKOFF)

    def _poll_loop(self) -> None:
        backoff = 1.0
        token = self.config.telegram_token.value
        while not self.stop_event.is_set():
            try:
                updates: list[dict[str, Any]] = apihelper.get_updates(
                    token, offset=self._offset, limit=100, timeout=self.config.poll_timeout + 10,
                    long_polling_timeout=self.config.poll_timeout, allowed_updates=ALLOWED_UPDATES)
            except ApiTelegramException as exc:
                if exc.error_code in (401, 404):
                    self.fatal = f"Telegram refused TELEGRAM_BOT_TOKEN ({exc.error_code} {exc.description})"
                    self.stop_event.set()
                    return
                wait = float((exc.result_json.get("parameters") or {}).get("retry_after", backoff))
                log.warning("getUpdates refused (%s %s); retrying in %.0fs", exc.error_code,
                            exc.description, wait)
                self.stop_event.wait(wait)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except (requests.RequestException, ApiException) as exc:
                if self.stop_event.is_set():
                    return
                self.poll_failures += 1
                log.warning("Telegram unreachable (%s); retrying in %.0fs", exc.__class__.__name__, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self.poll_failures:
                log.info("Telegram reachable again after %d failed polls", self.poll_failures)
            backoff, self.poll_failures = 1.0, 0
            self._touch_heartbeat()
            if self.stop_event.is_set():
                return  # leave these unconfirmed: the next run gets them
            for update in updates:
                self._accept(update)
            if updates and self.backend is not None:
                self.backend.set_meta("offset", str(self._offset))

    def _accept(self, update: dict[str, Any], journal: bool = True) -> None:
        """Parse one update and queue it for its user; duplicates and strays are dropped."""
        update_id = update.get("update_id")
        if not isinstance(update_id, int):
            return
        if journal:
            if self._offset is not None and update_id < self._offset:
                log.info("update %s seen before: skipped", update_id)
                return
            self._offset = max(self._offset or 0, update_id + 1)
        assert self.app is not None
        app = self.app
        try:
            item = parse_update(update, app.me)
        except Exception:
            log.exception("update %s could not be parsed", update_id)
            return
        if isinstance(item, StopGeneration):
            commands.stop_generation(app, item)
        elif isinstance(item, Incoming):
            if journal and self.backend is not None:
                self.backend.journal_add(update_id, update)
            self.dispatcher.submit(item.user_id, lambda: self._handle(item))

    def _handle(self, item: Incoming) -> None:
        assert self.app is not None
        try:
            commands.handle(self.app, item)
        finally:
            if self.backend is not None:
                self.backend.journal_done(item.update_id)

    def _touch_heartbeat(self) -> None:
        try:
            self.heartbeat.touch()
        except OSError as exc:
            log.error("cannot write heartbeat %s: %s", self.heartbeat, exc)

    # -- stop ----------------------------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop polling, let answers in flight finish for `grace` seconds, then cut them cleanly."""
        self.stop_event.set()
        if not self.dispatcher.wait_idle(grace) and self.app is not None:
            log.info("stopping %d answers still in flight", len(self.app.active))
            for flag in list(self.app.active.values()):
                flag.set()
            self.dispatcher.wait_idle(5)
        self.dispatcher.shutdown()
        if self.app is not None:
            self.app.typing.close()
        if self.backend is not None:
            self.backend.close()


def healthcheck() -> int:
    """0 when the polling loop's heartbeat is fresh, 1 otherwise."""
    path = data_dir_from_env() / HEARTBEAT
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        print(f"unhealthy: no heartbeat at {path}")
        return 1
    if age > HEARTBEAT_FRESH:
        print(f"unhealthy: heartbeat is {age:.0f}s old")
        return 1
    print(f"healthy: heartbeat {age:.0f}s old")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--healthcheck" in argv:
        return healthcheck()
    try:
        config = load_config()
        setup_logging(config)
        bot = Bot(config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        bot.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bot.start()
    except FatalTelegramError as exc:
        log.critical("%s", exc)
        return EXIT_FATAL
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    while not bot.stop_event.wait(1.0):
        pass
    bot.shutdown()
    if bot.fatal:
        log.critical("%s", bot.fatal)
        return EXIT_FATAL
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
