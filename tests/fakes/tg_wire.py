"""Wire-level pieces of the fake Telegram Bot API: records, errors, parameter parsing, flood control."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs

from .tg_html import utf16_len

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
TEXT_BUTTON = "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
CHAT_ACTIONS = frozenset(
    {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice"}
    | {"upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note"}
)
_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@])")
_MENTION = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{5,32}(?![\w@])")
_TRIM = " \t\r\n"  # Telegram trims these around a message text


class TelegramError(Exception):
    """An error answer: {"ok": false, "error_code": code, "description": ...}."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(description: str) -> TelegramError:
    return TelegramError(400, "Bad Request: " + description)


@dataclass
class Call:
    """One API call as received: parameters are the raw (string) values the client sent."""

    method: str
    params: dict[str, Any]
    time: float
    status: int = 0  # HTTP status of the answer; 0 while in flight, -1 if the connection was cut
    result: Any = None  # "result" of a successful call, else the error description

    def json(self, name: str) -> Any:
        """A JSON-typed parameter (reply_markup, entities, ...) decoded, or None."""
        value = self.params.get(name)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class DraftUpdate:
    """One sendMessageDraft call that was accepted."""

    draft_id: int
    text: str  # visible text after entity parsing
    raw_text: str
    parse_mode: str | None
    can_stop: bool
    keep_on_stop: bool
    time: float
    thread_id: int | None = None  # message_thread_id: a forum or private-chat topic


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    from_bot: bool
    payload: dict[str, Any]  # the Message object as Telegram returns it
    raw_text: str | None = None
    parse_mode: str | None = None
    history: list[str] = field(default_factory=list)  # visible texts before each edit
    deleted: bool = False


@dataclass
class SentDocument:
    """A file the bot uploaded with sendDocument, as received."""

    message_id: int
    filename: str
    data: bytes
    caption: str  # visible text after entity parsing
    thread_id: int | None = None


@dataclass
class QueuedUpdate:
    update: dict[str, Any]
    delivered: bool = False


@dataclass
class Failure:
    status: int
    description: str
    count: int
    retry_after: int | None
    html: bool
    applied: bool

    def answer(self) -> tuple[int, bytes, str]:
        if self.html:  # what nginx in front of the Bot API sends when the backend is down
            title = f"{self.status} {self.description}"
            page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
            page += "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            return self.status, page.encode(), "text/html"
        error = TelegramError(self.status, self.description, self.retry_after)
        return self.status, json.dumps(error.body()).encode(), "application/json"


class TokenBucket:
    """Token bucket: up to `capacity` calls at once, refilled at `rate` calls per second."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.stamp = capacity, time.monotonic()

    def wait(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class Params:
    """Typed access to request parameters, raising Telegram's errors for malformed values."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value) if isinstance(value, dict | list) else str(value)

    def integer(self, name: str, missing: str | None = None) -> int | None:
        value = self.raw.get(name)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            if missing:
                raise bad_request(missing) from None
            return None

    def flag(self, name: str) -> bool:
        value = self.raw.get(name)
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1")

    def json(self, name: str, what: str) -> Any:
        value = self.raw.get(name)
        if not isinstance(value, str):
            return value
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {what} JSON object") from None

    def chat_id(self) -> int:
        value = self.text("chat_id")
        if not value:
            raise bad_request("chat_id is empty")
        try:
            return int(value)
        except ValueError:
            raise bad_request("chat not found") from None  # e.g. "@channel" the bot does not know


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The bot_command and mention entities Telegram's clients attach to a typed text."""
    found = [("bot_command", m) for m in _COMMAND.finditer(text)]
    found += [("mention", m) for m in _MENTION.finditer(text)]
    entities = [
        {"type": kind, "offset": utf16_len(text[: m.start()]), "length": utf16_len(m.group())}
        for kind, m in found
    ]
    return sorted(entities, key=lambda e: e["offset"])


def trim_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip surrounding whitespace like Telegram, moving and clipping the entities along."""
    visible = text.strip(_TRIM)
    shift = utf16_len(text[: len(text) - len(text.lstrip(_TRIM))])
    total = utf16_len(visible)
    trimmed = []
    for entity in entities:
        start = max(int(entity.get("offset", 0)) - shift, 0)
        end = min(int(entity.get("offset", 0)) + int(entity.get("length", 0)) - shift, total)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return visible, trimmed


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            decoded = json.loads(body)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    if kind == "multipart/form-data":
        message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        params: dict[str, Any] = {}
        for part in message.get_payload() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            upload = {"filename": filename, "size": len(data), "data": data, "type": part.get_content_type()}
            params[str(name)] = upload if filename else data.decode()
        return params
    return {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
