"""Newer parts of the fake Bot API, mixed into FakeTelegram: rich messages, ephemeral messages, forum topics.

- Rich messages (10.1): sendRichMessage, sendRichMessageDraft and editMessageText with `rich_message`,
  checked by `tg_rich.parse_rich`. `rich_methods = False` makes the server an older one: the two methods
  answer 404 and editMessageText ignores `rich_message` (so it finds no text). A stored rich message
  keeps the Markdown as `raw_text` (parse_mode "rich"); its payload's `rich_message` holds one paragraph
  block with the visible text (a simplification: Telegram returns the parsed blocks).
- Ephemeral messages (10.2): sendMessage with `ephemeral_message_parameters` in a group makes a message
  only its receiver sees (message_id 0, its own `ephemeral_message_id`), edited with
  editEphemeralMessageText. Chats in `ephemeral_refused` answer 400; private chats always do.
- Forum topics: `create_topic` makes a chat a forum and opens a topic; users write in it with
  `send_in_topic`. A bot message goes to the topic its `message_thread_id` names (an unknown one is a
  400), else to the topic of the message it replies to, else to "General" (no thread id), as on Telegram.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .tg_rich import RichContent, parse_rich
from .tg_wire import (
    NOT_MODIFIED,
    DraftUpdate,
    Params,
    StoredMessage,
    TelegramError,
    auto_entities,
    bad_request,
)

MAX_TEXT_UTF16 = 4096


class ModernFeatures:
    """Mixin for FakeTelegram; relies on its message store, formatting, markup and rate-limit helpers."""

    def _init_modern(self) -> None:
        self.rich_methods = True  # False: an older Bot API server without rich messages
        self.ephemeral_refused: set[int] = set()  # group chats whose settings refuse ephemeral messages
        self._ephemeral: dict[int, dict[int, StoredMessage]] = {}
        self._forums: dict[int, set[int]] = {}  # forum chat -> its topics' thread ids
        self._thread_actions: dict[int, list[tuple[str, int | None]]] = {}
        self._methods.update({
            "sendrichmessage": self._send_rich_message,
            "sendrichmessagedraft": self._send_rich_message_draft,
            "editephemeralmessagetext": self._edit_ephemeral_message_text,
        })

    # -- public: what users do, what tests read ------------------------------------------------------

    def create_topic(self, chat_id: int, name: str, creator: int = 1) -> int:
        """Make `chat_id` a forum supergroup (if not yet) and open a topic; returns its thread id."""
        with self._lock:
            user = self._user(creator, "Admin", None)
            topics = self._forums.setdefault(chat_id, set())
            self._register_chat(chat_id, "supergroup", user)
            opened = {"forum_topic_created": {"name": name, "icon_color": 7322096}}
            created = self._store(chat_id, user, opened)
            created.payload |= {"message_thread_id": created.message_id, "is_topic_message": True}
            topics.add(created.message_id)
            return created.message_id

    def send_in_topic(self, user_id: int, chat_id: int, thread_id: int, text: str, **kwargs: Any) -> int:
        """A user writes in a topic; Telegram makes the message a reply to the topic's first message."""
        fields: dict[str, Any] = {"text": text, "message_thread_id": thread_id, "is_topic_message": True}
        if found := auto_entities(text):
            fields["entities"] = found
        kwargs.setdefault("reply_to_message_id", thread_id)
        return self.send_message(user_id, chat_id, chat_type="supergroup", **kwargs, **fields)

    def chat_actions_in(self, chat_id: int) -> list[tuple[str, int | None]]:
        """The chat's actions with the topic each was sent to."""
        with self._lock:
            return list(self._thread_actions.get(chat_id, []))

    def ephemeral_messages(self, chat_id: int, receiver: int | None = None) -> list[dict[str, Any]]:
        """The bot's ephemeral messages in a chat (to one receiver, or all), in send order."""
        with self._lock:
            return [
                {"ephemeral_message_id": m.message_id, "receiver": m.payload["receiver_user"]["id"],
                 "text": m.payload.get("text"), "raw_text": m.raw_text, "parse_mode": m.parse_mode,
                 "reply_markup": copy.deepcopy(m.payload.get("reply_markup")), "edit_count": len(m.history),
                 "payload": copy.deepcopy(m.payload)}
                for m in self._ephemeral.get(chat_id, {}).values()
                if receiver is None or m.payload["receiver_user"]["id"] == receiver
            ]  # fmt: skip

    def press_ephemeral_button(self, user_id: int, chat_id: int, ephemeral_message_id: int, data: str) -> int:
        """The receiver of an ephemeral message presses one of its inline buttons."""
        with self._lock:
            message = self._ephemeral.get(chat_id, {}).get(ephemeral_message_id)
            if message is None or message.payload["receiver_user"]["id"] != user_id:
                raise AssertionError(f"user {user_id} sees no ephemeral message {ephemeral_message_id}")
            rows = (message.payload.get("reply_markup") or {}).get("inline_keyboard", [])
            if data not in [b.get("callback_data") for row in rows for b in row]:
                raise AssertionError(f"ephemeral message {ephemeral_message_id} shows no button {data!r}")
            query_id = str(next(self._query_ids))
            self._open_queries.add(query_id)
            user = message.payload["receiver_user"]
            query = {"id": query_id, "from": user, "chat_instance": str(8_000_000_000 + abs(chat_id)),
                     "data": data, "message": message.payload}
            return self.push_update({"callback_query": query})

    @staticmethod
    def _visible(message: StoredMessage) -> str:
        """What a user reads: the text, or a rich message's text."""
        if message.parse_mode == "rich":
            return message.payload["rich_message"]["blocks"][0]["text"]
        return message.payload.get("text", "")

    # -- rich messages -------------------------------------------------------------------------------

    def _send_rich_message(self, p: Params) -> dict[str, Any]:
        if not self.rich_methods:
            raise TelegramError(404, "Not Found")
        chat_id = p.chat_id()
        content = parse_rich(p.json("rich_message", "rich message"), draft=False)
        markup = self._markup(p)
        reply_to = self._reply_parameters(chat_id, p)
        topic = self._topic_fields(chat_id, p, reply_to)
        self._take_rate_token(chat_id)
        fields: dict[str, Any] = {"rich_message": _rich_payload(content), **topic}
        if markup is not None and "inline_keyboard" in markup:
            fields["reply_markup"] = markup
        if reply_to is not None:
            fields["reply_to_message"] = reply_to
        message = self._store(chat_id, self.bot_user(), fields, raw_text=content.source, parse_mode="rich")
        self._active_draft.pop(chat_id, None)
        return copy.deepcopy(message.payload)

    def _send_rich_message_draft(self, p: Params) -> bool:
        if not self.rich_methods:
            raise TelegramError(404, "Not Found")
        chat_id = p.chat_id()
        if chat_id < 0:
            raise bad_request("TEXTDRAFT_PEER_INVALID")
        draft_id = p.integer("draft_id")
        if not draft_id:
            raise bad_request("RANDOM_ID_INVALID")
        content = parse_rich(p.json("rich_message", "rich message"), draft=True)
        self._take_rate_token(chat_id)
        draft = DraftUpdate(draft_id, content.text, content.source, "rich", p.flag("can_stop"),
                            p.flag("keep_on_stop"), time.time(), p.integer("message_thread_id"))
        self._drafts.setdefault(chat_id, []).append(draft)
        self._active_draft[chat_id] = draft
        return True

    def _edit_rich_message(self, p: Params) -> dict[str, Any]:
        message = self._message_to_edit(p)
        content = parse_rich(p.json("rich_message", "rich message"), draft=False)
        markup = self._markup(p)
        payload = message.payload
        rich = _rich_payload(content)
        if payload.get("rich_message") == rich and payload.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED[len("Bad Request: ") :])
        self._take_rate_token(message.chat_id)
        message.history.append(self._visible(message))
        message.raw_text, message.parse_mode = content.source, "rich"
        payload.pop("text", None)
        payload.pop("entities", None)
        payload["rich_message"] = rich
        self._set_markup(payload, markup)
        payload["edit_date"] = int(time.time())
        return copy.deepcopy(payload)

    # -- ephemeral messages --------------------------------------------------------------------------

    def _ephemeral_receiver(self, chat_id: int, p: Params) -> dict[str, Any] | None:
        """The user an ephemeral message goes to (None for an ordinary message), or Telegram's 400."""
        if p.raw.get("ephemeral_message_parameters") in (None, ""):
            return None
        params = p.json("ephemeral_message_parameters", "ephemeral message parameters")
        receiver = params.get("receiver_user_id") if isinstance(params, dict) else None
        if not isinstance(receiver, int):
            raise bad_request("RECEIVER_USER_ID_INVALID")
        if chat_id > 0 or chat_id in self.ephemeral_refused:
            raise bad_request("EPHEMERAL_MESSAGE_PEER_INVALID")
        user = next((m.payload["from"] for m in self._messages.get(chat_id, {}).values()
                     if not m.from_bot and m.payload["from"]["id"] == receiver), None)
        if user is None:  # only a member of the chat can receive one
            raise bad_request("RECEIVER_USER_ID_INVALID")
        return copy.deepcopy(user)

    def _store_ephemeral(self, chat_id: int, receiver: dict[str, Any], fields: dict[str, Any],
                         raw: str | None, mode: str | None) -> dict[str, Any]:
        store = self._ephemeral.setdefault(chat_id, {})
        ephemeral_id = max(store, default=0) + 1
        payload: dict[str, Any] = {
            "message_id": 0, "ephemeral_message_id": ephemeral_id, "receiver_user": receiver,
            "from": self.bot_user(), "chat": self._chat(chat_id), "date": int(time.time()), **fields,
        }  # fmt: skip
        store[ephemeral_id] = StoredMessage(chat_id, ephemeral_id, True, payload, raw, mode)
        return copy.deepcopy(payload)

    def _edit_ephemeral_message_text(self, p: Params) -> bool:
        chat_id = p.chat_id()
        message = self._ephemeral.get(chat_id, {}).get(p.integer("ephemeral_message_id") or 0)
        if message is None or message.payload["receiver_user"]["id"] != p.integer("receiver_user_id"):
            raise bad_request("message to edit not found")
        raw, mode, text, entities = self._checked_text(p, "MESSAGE_TOO_LONG")
        markup = self._markup(p)
        payload = message.payload
        shown = (payload.get("text"), payload.get("entities", []), payload.get("reply_markup"))
        if shown == (text, entities, markup):
            raise bad_request(NOT_MODIFIED[len("Bad Request: ") :])
        self._take_rate_token(chat_id)
        message.history.append(payload.get("text", ""))
        message.raw_text, message.parse_mode = raw, mode
        payload["text"] = text
        payload.pop("entities", None)
        if entities:
            payload["entities"] = entities
        self._set_markup(payload, markup)
        return True

    # -- forum topics and chat actions ---------------------------------------------------------------

    def _topic_fields(self, chat_id: int, p: Params, reply_to: dict[str, Any] | None) -> dict[str, Any]:
        """Where a bot message goes: its message_thread_id's topic, the replied message's, or General."""
        thread = p.integer("message_thread_id")
        topics = self._forums.get(chat_id)
        if topics is None:  # private-chat topics and reply threads: the id is kept as sent
            return {"message_thread_id": thread} if thread else {}
        if thread is None and reply_to is not None:
            thread = reply_to.get("message_thread_id")
        if thread is None:
            return {}
        if thread not in topics:
            raise bad_request("message thread not found")
        return {"message_thread_id": thread, "is_topic_message": True}

    def _record_action(self, chat_id: int, action: str, p: Params) -> None:
        thread = p.integer("message_thread_id")
        topics = self._forums.get(chat_id)
        if topics is not None and thread is not None and thread not in topics:
            raise bad_request("message thread not found")
        self._thread_actions.setdefault(chat_id, []).append((action, thread))


def _rich_payload(content: RichContent) -> dict[str, Any]:
    return {"blocks": [{"type": "paragraph", "text": content.text}]}
