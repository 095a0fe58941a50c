"""What an update is, and whether it is for us: raw update dicts in, `Incoming` out.

Works on the raw JSON so that odd updates (no `from`, unknown kinds, fields
pyTelegramBotAPI does not know) can never break parsing. In groups the bot
answers only when addressed: a command (but not `/cmd@OtherBot`), a mention of
its @username, or a reply to one of its messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from render import clean_text
from sessions import Place

_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9_]{1,64}))?(?:\s+|$)(.*)\Z", re.S)
# The fields Telegram puts content other than text in (the catalog's [media] table names them for
# the user). Anything else without text is a service message (pins, timers...): nothing to answer.
MEDIA_FIELDS = (
    "sticker", "photo", "voice", "video", "video_note", "audio", "document", "animation", "location",
    "contact", "poll", "dice", "venue", "game", "story", "paid_media", "checklist", "invoice", "giveaway",
)


@dataclass(frozen=True)
class Media:
    """An attachment: the message field it came in, and what Telegram tells of the file."""

    field: str  # "photo", "voice", "document", "sticker"...
    file_id: str = ""  # empty for things that are no file (locations, polls...)
    file_size: int | None = None
    mime_type: str | None = None
    file_name: str | None = None
    duration: int | None = None  # seconds, for voice, audio and video


@dataclass(frozen=True)
class Incoming:
    """One thing a user did, reduced to what the handlers need."""

    update_id: int
    kind: str  # "text", "command", "callback", "media", "edited"
    user_id: int
    user_name: str
    chat_id: int
    private: bool
    message_id: int | None = None
    text: str = ""
    command: str = ""
    args: str = ""
    callback_id: str = ""
    language: str | None = None
    thread_id: int | None = None  # the forum topic, or the private chat's topic
    media: Media | None = None  # kind "media": what is attached; `text` is its caption
    ephemeral_id: int | None = None  # a button on an ephemeral message: that message's ephemeral id

    @property
    def answer_key(self) -> tuple[int, int]:
        """(chat, draft id) of the answer to this update: how a stop or a cut finds it."""
        return self.chat_id, self.message_id or self.update_id

    @property
    def place(self) -> Place:
        """Where this belongs: the conversation it reads and extends."""
        return Place(self.chat_id, self.user_id, self.thread_id)


@dataclass(frozen=True)
class StopGeneration:
    """The user pressed the stop control on a draft."""

    update_id: int
    chat_id: int
    draft_id: int


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str


def parse_update(update: dict[str, Any], me: BotIdentity) -> Incoming | StopGeneration | None:
    """The Incoming for an update meant for us; None for anything to ignore."""
    update_id = update.get("update_id")
    if not isinstance(update_id, int):
        return None
    if isinstance(stop := update.get("stopped_message_generation"), dict):
        chat, draft = stop.get("chat") or {}, stop.get("draft_id")
        if isinstance(draft, str) and draft.isdigit():
            draft = int(draft)  # some servers send it as decimal text
        if isinstance(chat.get("id"), int) and isinstance(draft, int):
            return StopGeneration(update_id, chat["id"], draft)
        return None
    if isinstance(query := update.get("callback_query"), dict):
        return _callback(update_id, query)
    for field, kind in (("message", None), ("edited_message", "edited")):
        if isinstance(message := update.get(field), dict):
            return _message(update_id, message, me, kind)
    return None  # channel posts, business messages, reactions, polls...


def _user(message: dict[str, Any]) -> tuple[int, str, str | None] | None:
    sender = message.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("id"), int) or sender.get("is_bot"):
        return None
    name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
    if sender.get("username"):
        name = f"{name} (@{sender['username']})".strip()
    return sender["id"], name or str(sender["id"]), sender.get("language_code")


def _thread(message: dict[str, Any], private: bool) -> int | None:
    """The topic a message is in. A supergroup's reply threads are not topics: only forum topics
    (`is_topic_message`) and private chats' topics count."""
    thread = message.get("message_thread_id")
    if isinstance(thread, int) and (private or message.get("is_topic_message")):
        return thread
    return None


def _chat(message: dict[str, Any]) -> tuple[int, bool] | None:
    chat = message.get("chat")
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
        return None
    return chat["id"], chat.get("type") == "private"


def _callback(update_id: int, query: dict[str, Any]) -> Incoming | None:
    who = _user(query)
    message = query.get("message") if isinstance(query.get("message"), dict) else {}
    where = _chat(message)
    if who is None or where is None or not isinstance(query.get("id"), str):
        return None
    return Incoming(update_id, "callback", who[0], who[1], where[0], where[1],
                    message_id=message.get("message_id"), text=str(query.get("data") or ""),
                    callback_id=query["id"], language=who[2], thread_id=_thread(message, where[1]),
                    ephemeral_id=_int(message.get("ephemeral_message_id")) or None)


def _message(update_id: int, message: dict[str, Any], me: BotIdentity, kind: str | None) -> Incoming | None:
    who, where = _user(message), _chat(message)
    if who is None or where is None:
        return None
    chat_id, private = where
    text = message.get("text")
    if message.get("is_automatic_forward"):
        return None  # a linked channel's post copied into its discussion group
    replied = message.get("reply_to_message") or {}
    to_us = private or (replied.get("from") or {}).get("id") == me.id
    base = dict(update_id=update_id, user_id=who[0], user_name=who[1], chat_id=chat_id, private=private,
                message_id=message.get("message_id"), language=who[2], thread_id=_thread(message, private))
    mention = re.compile(rf"@{re.escape(me.username)}\b", re.I) if me.username else None
    if not isinstance(text, str):
        field = next((m for m in MEDIA_FIELDS if m in message), None)
        caption = clean_text(message["caption"]) if isinstance(message.get("caption"), str) else ""
        if not private and mention is not None and mention.search(caption):
            to_us, caption = True, mention.sub("", caption).strip()
        if not to_us or field is None:
            return None
        return Incoming(kind=kind or "media", text=caption, media=_media(field, message[field]), **base)
    text = clean_text(text)
    if kind == "edited":
        return Incoming(kind="edited", text=text, **base) if to_us else None
    if match := _COMMAND.match(text):
        name, target, args = match.groups()
        if target and not private and target.lower() != me.username.lower():
            return None  # /cmd@OtherBot in a group; in private only we can read it
        return Incoming(kind="command", text=text, command=name.lower(), args=args.strip(), **base)
    if not private and mention is not None and mention.search(text):
        return Incoming(kind="text", text=mention.sub("", text).strip(), **base)
    return Incoming(kind="text", text=text, **base) if to_us else None


def _media(field: str, value: Any) -> Media:
    """What the handlers need of an attachment; a photo comes in several sizes: the largest is taken."""
    if field == "photo" and isinstance(value, list):
        sizes = [s for s in value if isinstance(s, dict)]
        value = max(sizes, key=lambda s: _int(s.get("width")) * _int(s.get("height")), default={})
    if not isinstance(value, dict):
        return Media(field)
    def text(key: str) -> str | None:
        return value[key] if isinstance(value.get(key), str) else None

    return Media(field, text("file_id") or "", _int(value.get("file_size")) or None, text("mime_type"),
                 text("file_name"), _int(value.get("duration")) or None)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
