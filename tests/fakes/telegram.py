"""A strict fake Telegram Bot API server for running the real bot over real HTTP.

It answers like api.telegram.org: same JSON shapes, error codes and descriptions, offset semantics of
getUpdates, long polling, flood control (429 with retry_after), HTML entity parsing with Telegram's
error messages, and the 4096 UTF-16 code unit limit. Tests inject what users do (`send_text`,
`press_button`, `stop_generation`, ...) and assert on what the bot did (`messages`, `calls`, ...).

Known simplifications: parse_mode Markdown/MarkdownV2 text is stored unparsed; only the methods listed
in `FakeTelegram._methods` exist (anything else is a 404, as for a misspelt method).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import mimetypes
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._server import Abort, BaseHandler, FakeServer
from .tg_files import FileStore
from .tg_html import HtmlParseError, parse_html, utf16_len
from .tg_modern import ModernFeatures
from .tg_wire import (
    CHAT_ACTIONS,
    NOT_MODIFIED,
    TEXT_BUTTON,
    Call,
    DraftUpdate,
    Failure,
    Params,
    QueuedUpdate,
    SentDocument,
    StoredMessage,
    TelegramError,
    TokenBucket,
    auto_entities,
    bad_request,
    parse_body,
    trim_text,
)

MAX_TEXT_UTF16 = 4096
MAX_CAPTION_UTF16 = 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a bot's upload through the Bot API
# Telegram delivers every update type except these unless allowed_updates asks for them.
_NOT_DEFAULT_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_PATH = re.compile(r"/bot(?P<token>[^/]+)/(?P<method>[A-Za-z0-9_]+)/?")
_FILE_PATH = re.compile(r"/file/bot(?P<token>[^/]+)/(?P<path>.+)")


class _Handler(BaseHandler):
    pass


class FakeTelegram(ModernFeatures, FakeServer):
    """Fake Bot API. Point pyTelegramBotAPI at it with `telebot.apihelper.API_URL = fake.api_url`."""

    handler_class = _Handler

    def __init__(
        self,
        token: str = "123:TEST",
        bot_username: str = "test_bot",
        rate_limit: bool = True,
        port: int = 0,
        *,
        per_chat_rate: float = 1.0,
        per_chat_burst: int = 3,
        group_per_minute: float = 20,
        global_rate: float = 30,
        strict_html: bool = True,
        bot_id: int = 999,
    ) -> None:
        super().__init__(port)
        self.token, self.bot_username, self.bot_id = token, bot_username, bot_id
        self.rate_limit, self.strict_html = rate_limit, strict_html
        self.per_chat_rate, self.per_chat_burst = per_chat_rate, per_chat_burst
        self.group_per_minute, self.global_rate = group_per_minute, global_rate
        self.stats: dict[str, int] = {"requests": 0, "429": 0}
        self._calls: list[Call] = []
        self._queue: list[QueuedUpdate] = []
        self._next_update_id = 100_000
        self._allowed: set[str] | None = None  # allowed_updates of the last getUpdates that sent one
        self._poll_seq = 0
        self._messages: dict[int, dict[int, StoredMessage]] = {}
        self._last_message_id: dict[int, int] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._drafts: dict[int, list[DraftUpdate]] = {}
        self._active_draft: dict[int, DraftUpdate] = {}
        self._actions: dict[int, list[str]] = {}
        self._documents: dict[int, list[SentDocument]] = {}
        self._file_ids = itertools.count(1)
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._open_queries: set[str] = set()
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.dropped_updates: list[dict[str, Any]] = []  # pushed but filtered out by allowed_updates
        self._query_ids = itertools.count(4_000_000_000_001)
        self._failures: dict[str, list[Failure]] = {}
        self._chat_buckets: dict[int, TokenBucket] = {}
        self._global_bucket = TokenBucket(global_rate, global_rate)
        self.files = FileStore()  # what users attached; getFile and downloads serve it
        handlers: dict[str, Callable[[Params], Any]] = {
            "getMe": lambda p: self.bot_user(full=True),
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendMessageDraft": self._send_message_draft,
            "sendDocument": self._send_document,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": lambda p: copy.deepcopy(self._commands.get(self._scope_key(p), [])),
            "deleteMyCommands": self._delete_my_commands,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": lambda p: self.files.get_file(p.text("file_id")),
            "deleteWebhook": lambda p: True,
            "getWebhookInfo": lambda p: {"url": "", "has_custom_certificate": False,
                                         "pending_update_count": len(self._queue)},
            "close": lambda p: True,
            "logOut": lambda p: True,
        }  # fmt: skip
        # Telegram matches method names case-insensitively.
        self._methods = {name.lower(): handler for name, handler in handlers.items()}
        self._init_modern()  # rich and ephemeral messages, forum topics (tg_modern.py)

    # -- public: addresses, recording, assertions ----------------------------------------------------

    @property
    def url(self) -> str:
        """Root URL; the bot calls f"{url}/bot{token}/{method}"."""
        return self.root_url

    @property
    def api_url(self) -> str:
        """Value for telebot.apihelper.API_URL."""
        return self.url + "/bot{0}/{1}"

    def bot_user(self, full: bool = False) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": self.bot_id, "is_bot": True, "first_name": "Test Bot", "username": self.bot_username
        }  # fmt: skip
        if full:  # getMe adds the bot's capabilities
            user |= {"can_join_groups": True, "can_read_all_group_messages": False,
                     "supports_inline_queries": False, "can_connect_to_business": False,
                     "has_main_web_app": False}  # fmt: skip
        return user

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method.lower() == method.lower()]

    def messages(self, chat_id: int) -> list[str]:
        """Visible texts of the bot's (not deleted) messages in the chat, in send order, after edits."""
        with self._lock:
            return [self._visible(m) for m in self._bot_messages(chat_id)]

    def message_objects(self, chat_id: int, include_user: bool = False) -> list[dict[str, Any]]:
        """The chat's messages with bookkeeping: text, raw_text, parse_mode, reply_markup, edit_count..."""
        with self._lock:
            return [
                {
                    "message_id": m.message_id,
                    "from_bot": m.from_bot,
                    "text": m.payload.get("text"),
                    "raw_text": m.raw_text,
                    "parse_mode": m.parse_mode,
                    "entities": copy.deepcopy(m.payload.get("entities", [])),
                    "reply_markup": copy.deepcopy(m.payload.get("reply_markup")),
                    "edit_count": len(m.history),
                    "history": list(m.history),
                    "deleted": m.deleted,
                    "payload": copy.deepcopy(m.payload),
                }
                for m in self._messages.get(chat_id, {}).values()
                if include_user or m.from_bot
            ]

    def drafts(self, chat_id: int) -> list[DraftUpdate]:
        """Every accepted sendMessageDraft in the chat, in order."""
        with self._lock:
            return list(self._drafts.get(chat_id, []))

    def active_draft(self, chat_id: int) -> DraftUpdate | None:
        """The draft the user currently sees (a bot message to the chat removes it)."""
        with self._lock:
            return self._active_draft.get(chat_id)

    def documents(self, chat_id: int) -> list[SentDocument]:
        """Every file the bot uploaded to the chat with sendDocument, in order."""
        with self._lock:
            return list(self._documents.get(chat_id, []))

    def chat_actions(self, chat_id: int) -> list[str]:
        with self._lock:
            return list(self._actions.get(chat_id, []))

    def commands_for(self, language_code: str) -> list[dict[str, Any]]:
        """The command menu registered for one language (default scope)."""
        with self._lock:
            return copy.deepcopy(self._commands.get(('{"type": "default"}', language_code), []))

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Commands set for the default scope and no language."""
        with self._lock:
            return copy.deepcopy(self._commands.get(('{"type": "default"}', ""), []))

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by the bot (getUpdates offset)."""
        with self._lock:
            return [copy.deepcopy(q.update) for q in self._queue]

    def wait_messages(self, chat_id: int, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until the bot has at least `n` messages in the chat; return their texts."""
        self.wait_for(
            lambda: len(self._bot_messages(chat_id)) >= n, timeout, f"{n} bot messages in {chat_id}"
        )
        return self.messages(chat_id)

    def fail_next(
        self,
        method: str,
        status: int = 500,
        description: str = "Internal Server Error",
        count: int = 1,
        *,
        retry_after: int | None = None,
        html: bool | None = None,
        applied: bool = False,
    ) -> None:
        """Make the next `count` calls of `method` fail with `status`.

        502/503/504 answer an nginx HTML page (not JSON) unless html=False. With applied=True the call
        takes effect and only the answer is lost (the bot cannot know the message was sent).
        """
        failure = Failure(status, description, count, retry_after, status in (502, 503, 504), applied)
        if html is not None:
            failure.html = html
        with self._lock:
            self._failures.setdefault(method.lower(), []).append(failure)

    # -- public: what users do ---------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (a copy); assigns update_id if missing. The same id twice = a duplicate."""
        with self._cond:
            update = copy.deepcopy(update)
            if "update_id" not in update:
                update["update_id"] = self._next_update_id
            self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
            kind = next((k for k in update if k != "update_id"), "")
            allowed = kind not in _NOT_DEFAULT_UPDATES if self._allowed is None else kind in self._allowed
            if allowed:
                self._queue.append(QueuedUpdate(update))
            else:
                self.dropped_updates.append(update)
            self._cond.notify_all()
            return update["update_id"]

    def send_text(
        self,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "User",
        username: str | None = None,
        reply_to_message_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> int:
        """A user sends a text message; returns the update_id. Commands and mentions get entities.

        `extra` adds message fields (message_thread_id, is_topic_message) or `language_code`."""
        fields: dict[str, Any] = {"text": text, **extra}
        found = auto_entities(text) if entities is None else entities
        if found:
            fields["entities"] = found
        return self.send_message(
            user_id, chat_id, chat_type=chat_type, first_name=first_name, username=username,
            reply_to_message_id=reply_to_message_id, **fields,
        )  # fmt: skip

    def send_message(
        self,
        user_id: int,
        chat_id: int | None = None,
        *,
        chat_type: str | None = None,
        first_name: str = "User",
        username: str | None = None,
        reply_to_message_id: int | None = None,
        language_code: str = "en",
        **fields: Any,
    ) -> int:
        """A user sends any message payload, e.g. sticker={...}, photo=[...], voice={...}."""
        chat_id = user_id if chat_id is None else chat_id
        with self._lock:
            user = self._user(user_id, first_name, username, language_code)
            self._register_chat(chat_id, chat_type, user)
            if reply_to_message_id is not None:
                fields["reply_to_message"] = self._reply_payload(chat_id, reply_to_message_id)
            message = self._store(chat_id, user, fields)
            return self.push_update({"message": message.payload})

    def send_media(
        self,
        user_id: int,
        field: str,
        data: bytes,
        *,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str | None = None,
        reply_to_message_id: int | None = None,
        language_code: str = "en",
        file_size: bool = True,
        file_name: str | None = None,
        mime_type: str | None = None,
        **meta: Any,
    ) -> int:
        """A user sends a file (`field`: photo, voice, audio, video_note, document...) with these bytes,
        which getFile and the download URL then serve; `meta` adds fields such as duration."""
        fields: dict[str, Any] = {field: self.files.media_field(
            field, data, file_size=file_size, file_name=file_name, mime_type=mime_type, **meta)}
        if caption is not None:
            fields["caption"] = caption
            if found := auto_entities(caption):
                fields["caption_entities"] = found
        return self.send_message(user_id, chat_id, chat_type=chat_type, language_code=language_code,
                                 reply_to_message_id=reply_to_message_id, **fields)

    def edit_user_message(self, user_id: int, message_id: int, text: str, chat_id: int | None = None) -> int:
        """A user edits their text message: an edited_message update."""
        chat_id = user_id if chat_id is None else chat_id
        with self._lock:
            message = self._messages.get(chat_id, {}).get(message_id)
            if message is None or message.from_bot or message.payload["from"]["id"] != user_id:
                raise AssertionError(f"user {user_id} has no message {message_id} in chat {chat_id}")
            message.history.append(message.payload.get("text", ""))
            message.payload["text"] = text
            message.payload.pop("entities", None)
            if found := auto_entities(text):
                message.payload["entities"] = found
            message.payload["edit_date"] = int(time.time())
            return self.push_update({"edited_message": message.payload})

    def press_button(
        self,
        user_id: int,
        message_id: int,
        chat_id: int,
        data: str,
        *,
        first_name: str = "User",
        username: str | None = None,
        check: bool = True,
        language_code: str = "en",
    ) -> int:
        """A user presses an inline button. With check=True the message must currently show it."""
        with self._lock:
            message = self._messages.get(chat_id, {}).get(message_id)
            if check:
                if message is None or message.deleted:
                    raise AssertionError(f"no message {message_id} in chat {chat_id} to press a button on")
                rows = (message.payload.get("reply_markup") or {}).get("inline_keyboard", [])
                shown = [button.get("callback_data") for row in rows for button in row]
                if data not in shown:
                    raise AssertionError(f"message {message_id} shows no button {data!r}; it shows {shown}")
            query_id = str(next(self._query_ids))
            self._open_queries.add(query_id)
            query: dict[str, Any] = {
                "id": query_id,
                "from": self._user(user_id, first_name, username, language_code),
                "chat_instance": str(8_000_000_000 + abs(chat_id)),
                "data": data,
            }
            if message is not None:
                query["message"] = message.payload
            return self.push_update({"callback_query": query})

    def stop_generation(
        self, chat_id: int, draft_id: int, *, check: bool = True, as_text: bool = False
    ) -> int:
        """The user presses the Stop button of a draft: a stopped_message_generation update.

        With check=True the draft must be shown and sent with can_stop=True. as_text=True sends draft_id
        as a decimal string, which one emulator reports the official server does; bots should int() it.
        """
        with self._lock:
            active = self._active_draft.get(chat_id)
            if check:
                if active is None or active.draft_id != draft_id:
                    raise AssertionError(f"draft {draft_id} is not shown in chat {chat_id} (shown: {active})")
                if not active.can_stop:
                    raise AssertionError(
                        f"draft {draft_id} was sent without can_stop: there is no Stop button"
                    )
            if active is not None and active.draft_id == draft_id:
                if active.keep_on_stop:
                    self._active_draft[chat_id] = dataclasses.replace(active, can_stop=False)
                else:
                    del self._active_draft[chat_id]
            stopped = {"chat": self._chat(chat_id), "draft_id": str(draft_id) if as_text else draft_id}
            return self.push_update({"stopped_message_generation": stopped})

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, request: BaseHandler, verb: str) -> None:
        split = urlsplit(request.path)
        body = request.read_body()
        if split.path.startswith("/file/"):
            self._serve_file(request, split.path)
            return
        match = _PATH.fullmatch(split.path)
        if match is None:
            error = TelegramError(404, "Not Found")
            request.reply(404, json.dumps(error.body()).encode())
            return
        # pyTelegramBotAPI sends parameters in the query string, even on POST; others use a body.
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        params.update(parse_body(body, request.headers.get("Content-Type", "")))
        status, payload, content_type = self._dispatch(match["token"], match["method"], params)
        request.reply(status, payload, content_type)

    def _dispatch(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, bytes, str]:
        with self._cond:
            call = Call(method, params, time.time())
            self._calls.append(call)
            self.stats["requests"] += 1
            self._cond.notify_all()
            failure: Failure | None = None
            try:
                if token != self.token:
                    raise TelegramError(401, "Unauthorized")
                handler = self._methods.get(method.lower())
                if handler is None:
                    raise TelegramError(404, "Not Found")
                failure = self._take_failure(method)
                if failure is not None and not failure.applied:
                    return self._finish(call, *failure.answer())
                result = handler(Params(params))
                if failure is not None:
                    return self._finish(call, *failure.answer())
                return self._finish(call, 200, json.dumps({"ok": True, "result": result}).encode())
            except TelegramError as error:
                if error.code == 429:
                    self.stats["429"] += 1
                return self._finish(call, error.code, json.dumps(error.body()).encode())
            except Abort:
                call.status = -1
                raise

    def _finish(
        self, call: Call, status: int, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, bytes, str]:
        call.status = status
        if content_type == "application/json":
            decoded = json.loads(body)
            call.result = decoded.get("result") if decoded.get("ok") else decoded.get("description")
        else:
            call.result = body.decode()
        self._cond.notify_all()
        return status, body, content_type

    def _serve_file(self, request: BaseHandler, path: str) -> None:
        """GET /file/bot<token>/<file_path>: the bytes of a file getFile handed out; fail_next("download")
        and `files.download_delay` make it fail or stall."""
        match = _FILE_PATH.fullmatch(path)
        file_path = match["path"] if match else path
        with self._cond:
            call = Call("download", {"file_path": file_path}, time.time())
            self._calls.append(call)
            self.stats["requests"] += 1
            failure = self._take_failure("download")
            self._cond.notify_all()
        data = self.files.content(file_path) if match and match["token"] == self.token else None
        if failure is None and data is not None:
            if self.files.download_delay and not self._sleep(self.files.download_delay, self._epoch):
                raise Abort
            answer = 200, data, "application/octet-stream"
        elif failure is None:
            answer = 404, json.dumps(TelegramError(404, "Not Found").body()).encode(), "application/json"
        else:
            answer = failure.answer()
        with self._cond:
            if failure is None and data is not None:
                call.status, call.result = 200, f"{len(data)} bytes"
            else:
                self._finish(call, *answer)
            self._cond.notify_all()
        request.reply(*answer)

    def _take_failure(self, method: str) -> Failure | None:
        pending = self._failures.get(method.lower())
        if not pending:
            return None
        failure = pending[0]
        failure.count -= 1
        if failure.count <= 0:
            pending.pop(0)
        return failure

    def _debug_summary(self) -> str:
        lines = [
            f"  {c.method} -> {c.status} {str(c.result)[:80]!r} {str(c.params)[:120]}"
            for c in self._calls[-15:]
        ]
        summary = "last calls:\n" + "\n".join(lines) if lines else "no calls received"
        if self.dropped_updates:  # a classic cause of "the bot never reacted"
            kinds = sorted({next(k for k in u if k != "update_id") for u in self.dropped_updates})
            summary += f"\nupdates dropped by the bot's allowed_updates: {kinds}"
        return summary

    # -- methods -------------------------------------------------------------------------------------

    def _get_updates(self, p: Params) -> list[dict[str, Any]]:
        offset = p.integer("offset") or 0
        limit = min(max(p.integer("limit") or 100, 1), 100)
        timeout = max(p.integer("timeout") or 0, 0)
        allowed = p.json("allowed_updates", "allowed updates")
        if isinstance(allowed, list):
            self._allowed = set(allowed) or None  # an empty list means "all default types"
        if offset < 0:  # the last -offset updates; everything before is forgotten
            self._queue = self._queue[offset:]
        elif offset > 0:
            # Confirmed updates are forgotten forever. A re-pushed duplicate that has not been
            # delivered yet is kept even if its id is below the offset, so duplicate delivery is testable.
            self._queue = [q for q in self._queue if q.update["update_id"] >= offset or not q.delivered]
        self._poll_seq += 1
        seq, epoch, deadline = self._poll_seq, self._epoch, time.monotonic() + timeout
        while True:
            if self._epoch != epoch:
                raise Abort  # go_down() while long polling: the connection is cut
            if self._poll_seq != seq:
                raise TelegramError(
                    409, "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )  # fmt: skip
            remaining = deadline - time.monotonic()
            if self._queue or remaining <= 0:
                batch = self._queue[:limit]
                for queued in batch:
                    queued.delivered = True
                return [copy.deepcopy(q.update) for q in batch]
            self._cond.wait(remaining)

    def _send_message(self, p: Params) -> dict[str, Any]:
        chat_id = p.chat_id()
        receiver = self._ephemeral_receiver(chat_id, p)  # None: a message everyone sees
        raw, mode, text, entities = self._checked_text(p, "message is too long")
        markup = self._markup(p)
        reply_to = self._reply_parameters(chat_id, p)
        topic = self._topic_fields(chat_id, p, reply_to)
        self._take_rate_token(chat_id)
        fields: dict[str, Any] = {"text": text, **topic}
        if entities:
            fields["entities"] = entities
        if markup is not None and "inline_keyboard" in markup:  # other keyboards are not echoed
            fields["reply_markup"] = markup
        if reply_to is not None:
            fields["reply_to_message"] = reply_to
        if receiver is not None:
            return self._store_ephemeral(chat_id, receiver, fields, raw, mode)
        message = self._store(chat_id, self.bot_user(), fields, raw_text=raw, parse_mode=mode)
        self._active_draft.pop(chat_id, None)  # any bot message to the chat removes its draft
        return copy.deepcopy(message.payload)

    def _edit_message_text(self, p: Params) -> dict[str, Any]:
        if p.raw.get("rich_message") not in (None, "") and self.rich_methods:
            return self._edit_rich_message(p)  # an older server ignores it and finds no text
        message = self._message_to_edit(p)
        # editMessageText words "too long" differently from sendMessage
        raw, mode, text, entities = self._checked_text(p, "MESSAGE_TOO_LONG")
        markup = self._markup(p)  # no reply_markup removes the inline keyboard, as on Telegram
        payload = message.payload
        same_markup = payload.get("reply_markup") == markup
        if payload.get("text") == text and payload.get("entities", []) == entities and same_markup:
            raise bad_request(NOT_MODIFIED[len("Bad Request: ") :])
        self._take_rate_token(message.chat_id)
        message.history.append(self._visible(message))
        message.raw_text, message.parse_mode = raw, mode
        payload.pop("rich_message", None)
        payload["text"] = text
        payload.pop("entities", None)
        if entities:
            payload["entities"] = entities
        self._set_markup(payload, markup)
        payload["edit_date"] = int(time.time())
        return copy.deepcopy(payload)

    def _edit_message_reply_markup(self, p: Params) -> dict[str, Any]:
        message = self._message_to_edit(p)
        markup = self._markup(p)
        if message.payload.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED[len("Bad Request: ") :])
        self._set_markup(message.payload, markup)
        message.payload["edit_date"] = int(time.time())
        return copy.deepcopy(message.payload)

    def _delete_message(self, p: Params) -> bool:
        self._find_message(p, "message to delete not found").deleted = True
        return True

    def _send_message_draft(self, p: Params) -> bool:
        chat_id = p.chat_id()
        if chat_id < 0:
            raise bad_request("TEXTDRAFT_PEER_INVALID")  # drafts exist only in private chats
        draft_id = p.integer("draft_id")
        if not draft_id:
            raise bad_request("RANDOM_ID_INVALID")  # draft_id must be non-zero
        raw = p.text("text") or ""
        mode = self._parse_mode(p)
        text, _entities = self._format(p, raw, mode)  # empty text is fine: shows "Thinking…"
        if utf16_len(text) > MAX_TEXT_UTF16:
            raise bad_request("message is too long")
        self._take_rate_token(chat_id)
        draft = DraftUpdate(
            draft_id, text, raw, mode, p.flag("can_stop"), p.flag("keep_on_stop"), time.time(),
            p.integer("message_thread_id"),
        )  # fmt: skip
        self._drafts.setdefault(chat_id, []).append(draft)
        self._active_draft[chat_id] = draft
        return True

    def _send_document(self, p: Params) -> dict[str, Any]:
        """An uploaded file (multipart/form-data, as pyTelegramBotAPI sends it). A file_id or URL
        the fake never handed out is refused, as Telegram refuses one it cannot find or fetch."""
        chat_id = p.chat_id()
        document = p.raw.get("document")
        if document in (None, ""):
            raise bad_request("there is no document in the request")
        if not isinstance(document, dict):
            raise bad_request("wrong file identifier/HTTP URL specified")
        if document["size"] > MAX_UPLOAD_BYTES:
            raise TelegramError(413, "Request Entity Too Large")
        if document["size"] == 0:
            raise bad_request("file must be non-empty")
        raw_caption = p.text("caption") or ""
        mode = self._parse_mode(p)
        if mode == "HTML":
            try:
                caption, entities = trim_text(*parse_html(raw_caption, strict=self.strict_html))
            except HtmlParseError as error:
                raise bad_request(f"can't parse entities: {error.reason}") from None
        else:
            caption, entities = trim_text(raw_caption, [])
        if utf16_len(caption) > MAX_CAPTION_UTF16:
            raise bad_request("message caption is too long")
        markup = self._markup(p)
        reply_to = self._reply_parameters(chat_id, p)
        topic = self._topic_fields(chat_id, p, reply_to)
        self._take_rate_token(chat_id)
        name = document["filename"] or "document"
        unique = f"AgAD{next(self._file_ids):06d}"
        fields: dict[str, Any] = {"document": {
            "file_id": f"BQAC{unique}", "file_unique_id": unique, "file_name": name,
            "mime_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "file_size": document["size"]}, **topic}
        if caption:
            fields["caption"] = caption
        if entities:
            fields["caption_entities"] = entities
        if markup is not None and "inline_keyboard" in markup:
            fields["reply_markup"] = markup
        if reply_to is not None:
            fields["reply_to_message"] = reply_to
        message = self._store(chat_id, self.bot_user(), fields, raw_text=raw_caption, parse_mode=mode)
        self._documents.setdefault(chat_id, []).append(
            SentDocument(message.message_id, name, document["data"], caption, topic.get("message_thread_id")))
        self._active_draft.pop(chat_id, None)
        return copy.deepcopy(message.payload)

    def _send_chat_action(self, p: Params) -> bool:
        chat_id = p.chat_id()
        action = p.text("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._record_action(chat_id, action, p)
        self._actions.setdefault(chat_id, []).append(action)
        return True

    def _set_my_commands(self, p: Params) -> bool:
        commands = p.json("commands", "commands")
        if not isinstance(commands, list):
            raise bad_request('parameter "commands" is required')
        for command in commands:
            name = command.get("command") if isinstance(command, dict) else None
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(name)):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description") or "")) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            if not isinstance(command.get("is_ephemeral", False), bool):
                raise bad_request("can't parse BotCommand JSON object")
        self._commands[self._scope_key(p)] = commands
        return True

    def _delete_my_commands(self, p: Params) -> bool:
        self._commands.pop(self._scope_key(p), None)
        return True

    def _answer_callback_query(self, p: Params) -> bool:
        query_id = p.text("callback_query_id") or ""
        if query_id not in self._open_queries:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        if len(p.text("text") or "") > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        self._open_queries.discard(query_id)
        self.callback_answers[query_id] = dict(p.raw)
        return True

    # -- helpers -------------------------------------------------------------------------------------

    def _bot_messages(self, chat_id: int) -> list[StoredMessage]:
        return [m for m in self._messages.get(chat_id, {}).values() if m.from_bot and not m.deleted]

    def _checked_text(self, p: Params, too_long: str) -> tuple[str | None, str | None, str, list[Any]]:
        """The call's text as (raw, parse mode, visible text, entities), or Telegram's 400 about it."""
        raw = p.text("text")
        mode = self._parse_mode(p)
        text, entities = self._format(p, raw or "", mode)
        if not text:
            raise bad_request("message text is empty")
        if utf16_len(text) > MAX_TEXT_UTF16:
            raise bad_request(too_long)
        return raw, mode, text, entities

    def _parse_mode(self, p: Params) -> str | None:
        mode = (p.text("parse_mode") or "").lower()
        if mode and mode not in ("html", "markdown", "markdownv2"):
            raise bad_request("unsupported parse_mode")
        return {"html": "HTML", "markdown": "Markdown", "markdownv2": "MarkdownV2"}.get(mode)

    def _format(self, p: Params, raw: str, mode: str | None) -> tuple[str, list[dict[str, Any]]]:
        """Visible text and entities, trimmed as Telegram trims them."""
        if mode == "HTML":
            try:
                text, entities = parse_html(raw, strict=self.strict_html)
            except HtmlParseError as error:
                raise bad_request(f"can't parse entities: {error.reason}") from None
        elif mode is None:
            text, entities = raw, p.json("entities", "entities") or []
            if not isinstance(entities, list):
                raise bad_request("can't parse entities JSON object")
        else:
            text, entities = raw, []  # Markdown is not parsed by this fake
        return trim_text(text, entities)

    def _markup(self, p: Params) -> dict[str, Any] | None:
        markup = p.json("reply_markup", "reply keyboard markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            for button in row if isinstance(row, list) else [None]:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad_request(TEXT_BUTTON)
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
                if len(button) == 1:  # only "text": not a valid inline button
                    raise bad_request(TEXT_BUTTON)
        return markup

    @staticmethod
    def _set_markup(payload: dict[str, Any], markup: dict[str, Any] | None) -> None:
        if markup is not None and "inline_keyboard" in markup:
            payload["reply_markup"] = markup
        else:
            payload.pop("reply_markup", None)

    def _message_to_edit(self, p: Params) -> StoredMessage:
        if p.text("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # this fake has no inline mode
        message = self._find_message(p, "message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return message

    def _find_message(self, p: Params, missing: str) -> StoredMessage:
        """The (not deleted) message that chat_id and message_id name."""
        chat_id = p.chat_id()
        message_id = p.integer("message_id", "message identifier is not specified")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None or message.deleted:
            raise bad_request(missing)
        return message

    def _reply_parameters(self, chat_id: int, p: Params) -> dict[str, Any] | None:
        reply = p.json("reply_parameters", "reply parameters")
        reply = reply if isinstance(reply, dict) else {}
        message_id = reply.get("message_id")
        if message_id is None:
            message_id = p.integer("reply_to_message_id")
        if message_id is None:
            return None
        target = self._messages.get(chat_id, {}).get(int(message_id))
        if target is None or target.deleted:
            if reply.get("allow_sending_without_reply") or p.flag("allow_sending_without_reply"):
                return None
            raise bad_request("message to be replied not found")
        return _without_reply(target.payload)

    def _take_rate_token(self, chat_id: int) -> None:
        """Flood control for message-producing calls: per chat and global token buckets."""
        if not self.rate_limit:
            return
        bucket = self._chat_buckets.get(chat_id)
        if bucket is None:
            rate = self.per_chat_rate if chat_id > 0 else self.group_per_minute / 60
            bucket = self._chat_buckets[chat_id] = TokenBucket(rate, self.per_chat_burst)
        now = time.monotonic()
        wait = max(bucket.wait(now), self._global_bucket.wait(now))
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise TelegramError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        bucket.tokens -= 1
        self._global_bucket.tokens -= 1

    @staticmethod
    def _scope_key(p: Params) -> tuple[str, str]:
        scope = p.json("scope", "scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), p.text("language_code") or ""

    def _user(self, user_id: int, first_name: str, username: str | None,
              language_code: str = "en") -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        user["language_code"] = language_code
        return user

    def _register_chat(self, chat_id: int, chat_type: str | None, user: dict[str, Any]) -> None:
        if chat_id > 0:
            chat = {"id": chat_id, "first_name": user["first_name"], "type": chat_type or "private"}
            if "username" in user:
                chat["username"] = user["username"]
        else:
            chat = {"id": chat_id, "title": "Test Group", "type": chat_type or _group_type(chat_id)}
            if chat_id in self._forums:
                chat["is_forum"] = True
        self._chats[chat_id] = chat

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self._chats:
            return dict(self._chats[chat_id])
        if chat_id > 0:
            return {"id": chat_id, "first_name": "User", "type": "private"}
        return {"id": chat_id, "title": "Test Group", "type": _group_type(chat_id)}

    def _store(
        self, chat_id: int, sender: dict[str, Any], fields: dict[str, Any], **meta: Any
    ) -> StoredMessage:
        """Create a message; ids count up per chat, shared by the user's and the bot's messages."""
        message_id = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = message_id
        payload = {
            "message_id": message_id, "from": sender, "chat": self._chat(chat_id), "date": int(time.time()),
            **fields,
        }  # fmt: skip
        message = StoredMessage(chat_id, message_id, sender.get("is_bot", False), payload, **meta)
        self._messages.setdefault(chat_id, {})[message_id] = message
        return message

    def _reply_payload(self, chat_id: int, message_id: int) -> dict[str, Any]:
        target = self._messages.get(chat_id, {}).get(message_id)
        if target is None or target.deleted:
            raise AssertionError(f"cannot reply to message {message_id}: it is not in chat {chat_id}")
        return _without_reply(target.payload)


def _group_type(chat_id: int) -> str:
    return "supergroup" if str(chat_id).startswith("-100") else "group"


def _without_reply(payload: dict[str, Any]) -> dict[str, Any]:
    """A message as embedded in reply_to_message: Telegram does not nest replies further."""
    nested = copy.deepcopy(payload)
    nested.pop("reply_to_message", None)
    return nested
