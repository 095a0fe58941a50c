"""The running bot: wiring, the long-polling loop and a stop in bounded time.

The polling thread only parses updates and queues them per user (see
dispatch.py); workers run the handlers. Each update is journaled until handled,
so a crash replays it; a clean stop cuts answers still running after a grace
period, tells their users, and leaves queued updates journaled for the next run.
"""

from __future__ import annotations

import difflib
import logging
import sqlite3
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
import telebot
from telebot import apihelper, types
from telebot.apihelper import ApiException, ApiTelegramException

import commands
import datadir
from access import Access
from alerts import Alerts, Notifier
from app import EPHEMERAL_COMMANDS, App
from attachments import MediaSupport, transcription
from config import Config, ConfigError
from dispatch import Dispatcher
from i18n import load_catalog
from llm import LLMClient, LLMError
from mediastore import MediaStore
from models import Registry, load_registry
from presets import load_presets
from quotas import Quotas
from reachability import Outage, cause
from router import BotIdentity, Incoming, StopGeneration, parse_update
from sender import RateLimiter, Sender, TelegramError, http_session
from sessions import Profile
from storage import SqliteBackend
from store import MemoryBackend, SessionStore
from streaming import TypingTicker
from tokens import counter_for

log = logging.getLogger("bot")

HEARTBEAT = "heartbeat"
# A stop: answers in flight may finish within SHUTDOWN_GRACE, then they are cut and get CUT_GRACE to
# deliver what they have. Together well under 10 s, so that no supervisor's SIGKILL comes first.
SHUTDOWN_GRACE = 4.0
CUT_GRACE = 4.0
NOTICE_PATIENCE = 2.0  # seconds to try telling a user their answer was cut
MAX_BACKOFF = 5.0  # seconds between polls while Telegram is unreachable: short, so recovery is quick
RETRY_ADVICE = f"retrying every {MAX_BACKOFF:.0f} s at most"
# 409 Conflict: another instance polls with this token (or a webhook is set): retrying at once
# would only take turns with it.
CONFLICT_BACKOFF = (10.0, 60.0)
MEDIA_COLLECT_EVERY = 3600.0  # seconds between sweeps of images no conversation references
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "stopped_message_generation"]


class FatalTelegramError(Exception):
    """Telegram refuses the bot itself (bad token): restarting will not help."""


class Bot:
    """The running bot: its parts, the polling loop and a clean stop."""

    def __init__(self, config: Config, registry: Registry | None = None) -> None:
        self.config = config
        # Every check that can stop the start comes before anything is logged.
        datadir.prepare(config.data_dir)
        self.presets = load_presets(config.presets_file)
        self.catalog = load_catalog()
        self.registry = registry or load_registry(config)
        media_dir = config.data_dir / "media" if config.session_store == "sqlite" else None
        self.media = MediaSupport(MediaStore(media_dir), transcription(config, self.registry))
        apihelper.API_URL = config.telegram_api_url + "/bot{0}/{1}"
        apihelper.FILE_URL = config.telegram_api_url + "/file/bot{0}/{1}"  # Sender.download
        apihelper.session = http_session(config.workers + 8)  # + polling, typing, shutdown
        self.telebot = telebot.TeleBot(config.telegram_token.value, threaded=False, parse_mode=None)
        self.backend = self._open_store() if config.session_store == "sqlite" else None
        self.sender = Sender(self.telebot, RateLimiter())
        self.llm = LLMClient(self.registry.providers, timeout=config.request_timeout, registry=self.registry)
        self.stop_event = threading.Event()
        self.fatal: str | None = None
        self.dispatcher = Dispatcher(config.workers)
        self.heartbeat = config.data_dir / HEARTBEAT
        self.outage = Outage(urlsplit(config.telegram_api_url).netloc or config.telegram_api_url)
        self.conflict_backoff = CONFLICT_BACKOFF
        self._offset: int | None = None
        self._cut: set[tuple[int, int]] = set()  # answer keys (chat, draft id) the stop cut short
        self.app: App | None = None

    def _open_store(self) -> SqliteBackend:
        path = self.config.data_dir / datadir.DB_NAME
        datadir.private_database(path)
        try:
            return SqliteBackend(path)
        except sqlite3.Error as exc:
            raise ConfigError("DATA_DIR", f"cannot open the database {path}: {exc}") from None

    @property
    def poll_failures(self) -> int:
        """Consecutive failed calls to Telegram (getMe, getUpdates)."""
        return self.outage.failures

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to Telegram, restore state and start polling in a background thread."""
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
        self.app = App(config, self.registry, self.presets, store, self.llm, self.sender,
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
                self.outage.succeeded()
                return BotIdentity(user.id, user.username or "")
            except ApiTelegramException as exc:
                if exc.error_code in (401, 404):
                    raise FatalTelegramError(f"Telegram refused TELEGRAM_BOT_TOKEN ({exc.error_code} "
                                             f"{exc.description}); check the token from @BotFather") from None
                self.outage.failed(f"getMe failed ({cause(exc)})", RETRY_ADVICE)
            except (requests.RequestException, ApiException) as exc:
                self.outage.failed(f"unreachable ({cause(exc)})", RETRY_ADVICE)
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        return None

    def _set_commands(self) -> None:
        """The command menu in every language of the catalog; English also for everyone else."""
        assert self.app is not None
        for language in (None, *self.catalog.languages):
            texts = [types.BotCommand(c.name, self.catalog.text(language or "en", f"commands.{c.name}"),
                                      is_ephemeral=c.name in EPHEMERAL_COMMANDS or None)
                     for c in self.app.commands.values() if not c.admin]
            try:
                self.sender.call(None, self.telebot.set_my_commands, texts, language_code=language,
                                 throttle=False, patience=30)
            except Exception as exc:  # the menu is a nicety: never a reason not to start
                log.warning("setMyCommands (%s) failed: %s", language or "default", exc)

    def _discover(self) -> None:
        complete = True  # every provider answered with its list
        for name, provider in self.registry.providers.items():
            if not (provider.enabled and provider.discover):
                continue
            try:
                added = self.registry.add_discovered(name, self.llm.list_models(name))
                log.info("provider %s: %s listed beyond those described", name, _count(added, "model"))
            except LLMError as exc:
                log.warning("could not list %s models: %r", name, exc)
                complete = False
        if not self.registry.default_model and self.registry.models:
            self.registry.default_model = self.registry.available()[0].id
        if complete:  # a list that failed may hold it
            self._check_default_model()
        self.registry.discovered.set()

    def _check_default_model(self) -> None:
        """A DEFAULT_MODEL nobody describes or lists is most likely a typo: say so, with near matches."""
        default, known = self.registry.default_model, sorted(self.registry.models)
        if not default or default in self.registry.models:
            return
        close = difflib.get_close_matches(default, known, n=3, cutoff=0.6)
        log.warning("DEFAULT_MODEL %s is neither described nor listed by any provider%s; requests to it may "
                    "fail", default, f" (did you mean {', '.join(close)}?)" if close else "")

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
        backoff, conflict_wait = 1.0, self.conflict_backoff[0]
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
                if exc.error_code == 409:
                    advice = _conflict_advice(exc.description, conflict_wait)
                    self.outage.failed(f"409 {exc.description}", advice)
                    self.stop_event.wait(conflict_wait)
                    conflict_wait = min(conflict_wait * 2, self.conflict_backoff[1])
                    continue
                wait = float((exc.result_json.get("parameters") or {}).get("retry_after", backoff))
                self.outage.failed(f"getUpdates refused ({cause(exc)})", f"retrying in {wait:.0f} s")
                self.stop_event.wait(wait)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except (requests.RequestException, ApiException) as exc:
                if self.stop_event.is_set():
                    return
                self.outage.failed(f"unreachable ({cause(exc)})", RETRY_ADVICE)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self.outage.succeeded()
            backoff, conflict_wait = 1.0, self.conflict_backoff[0]
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
        if item.answer_key in self._cut:  # text, voice, photo or file alike; only the cut ones
            self._tell_cut(item)

    def _tell_cut(self, item: Incoming) -> None:
        """Best effort, briefly: the stop must not wait for an unreachable Telegram."""
        assert self.app is not None
        reply = None if item.private or item.message_id is None else types.ReplyParameters(
            item.message_id, allow_sending_without_reply=True)
        try:
            self.sender.call(item.chat_id, self.telebot.send_message, item.chat_id,
                             self.app.t(item, "chat.restarting"), parse_mode="HTML", reply_parameters=reply,
                             message_thread_id=item.thread_id, patience=NOTICE_PATIENCE)
        except TelegramError as exc:
            log.info("could not tell chat %s its answer was cut: %s", item.chat_id, exc.description)

    def _touch_heartbeat(self) -> None:
        try:
            self.heartbeat.touch()
        except OSError as exc:
            log.error("cannot write heartbeat %s: %s", self.heartbeat, exc)

    # -- stop ----------------------------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE, cut_grace: float = CUT_GRACE) -> None:
        """Stop polling and start no more updates; let answers in flight finish for `grace` seconds,
        then cut them (their users are told) and give them `cut_grace` to deliver what they have.

        Updates still queued stay journaled: the next run answers them. Workers are daemon threads,
        so one stuck past all this (Telegram down) cannot keep the process alive.
        """
        self.stop_event.set()
        self.dispatcher.close()
        idle = self.dispatcher.wait_idle(grace)
        if not idle and self.app is not None:
            active = list(self.app.active.items())
            self._cut.update(key for key, _flag in active)
            log.info("cutting %s still in flight", _count(len(active), "answer"))
            for _key, flag in active:
                flag.set()
            idle = self.dispatcher.wait_idle(cut_grace)
        if not idle:
            log.warning("updates still being handled at the stop stay journaled: the next start handles them")
        if self.app is not None:
            self.app.typing.close()
        if self.backend is not None and idle:
            self.backend.close()


def _conflict_advice(description: str, wait: float) -> str:
    if "webhook" in description.lower():
        what = ("a webhook is set for this bot, so getUpdates cannot work: remove it with the Bot API's "
                "deleteWebhook, or stop the service the webhook feeds")
    else:
        what = ("another process is polling with this bot token: stop the other instance (only one may "
                "run per token)")
    return f"{what}; retrying in {wait:.0f} s"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
