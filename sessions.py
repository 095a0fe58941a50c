"""Users' settings and their conversations: plain data with pure methods.

A conversation belongs to a place (`Place`): the user's private chat (or one of its topics), or a
group (or one of its forum topics) together with the user. Its history never leaves that place:
what Alice said to the bot in private never reaches an answer posted in a group. The settings a
person chooses (model, system prompt, preset, language) and the usage the API reported belong to
the user (`Profile`), wherever they write.

A `Session` is one conversation seen with its user's profile: what a turn works on. Nothing here
does I/O; the `SessionStore` (store.py) hands sessions out and writes them through to a backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tokens import REPLY_PRIMING

log = logging.getLogger(__name__)

TITLE_CHARS = 48


@dataclass(frozen=True)
class Place:
    """Where a conversation happens: a chat (and topic) and, in groups, which member it is with."""

    chat_id: int
    user_id: int
    thread_id: int | None = None

    @property
    def private(self) -> bool:
        return self.chat_id == self.user_id  # a private chat's id is the user's id


@dataclass(slots=True)  # conversations hold many of these: slots halve their memory
class Message:
    role: str
    content: str
    tokens: int
    # Images attached to this message, by reference (content-addressed files under DATA_DIR).
    images: tuple[str, ...] = ()


@dataclass
class Usage:
    """What the API reported, summed over the user's life (not reset by /clear)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.requests += 1

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Profile:
    """One user's settings and usage, shared by all of their conversations."""

    user_id: int
    model: str
    system_prompt: str
    system_tokens: int  # of `system_prompt`, counted with `encoding`
    encoding: str
    name: str = ""
    preset: str | None = None
    language: str | None = None  # chosen with /lang; None follows the Telegram app's language
    rich: bool | None = None  # rich messages; None follows the bot's default
    usage: Usage = field(default_factory=Usage)
    last_active: float = field(default_factory=time.time)


@dataclass
class Conversation:
    """One conversation's history, with each message's token count computed once."""

    id: int
    place: Place
    encoding: str  # what the messages' counts were counted with
    messages: list[Message] = field(default_factory=list)
    title: str = ""
    warned: bool = False
    trimmed: bool = False  # the user was told that older messages left the context
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    # Bumped whenever history is replaced or recounted, so the store rewrites rather than appends.
    epoch: int = 0
    # The stored position of messages[0]: dropping the oldest messages advances it, so the store
    # deletes those rows instead of rewriting the history.
    first_seq: int = 0
    _history_tokens: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._history_tokens = sum(m.tokens for m in self.messages)

    @property
    def history_tokens(self) -> int:
        return self._history_tokens

    def add(self, role: str, content: str, tokens: int, images: tuple[str, ...] = ()) -> None:
        self.messages.append(Message(role, content, tokens, images))
        self._history_tokens += tokens
        self.last_active = time.time()
        if not self.title and role == "user":
            self.title = _title(content)

    def clear(self) -> None:
        self.messages.clear()
        self._history_tokens = 0
        self.warned = self.trimmed = False
        self.title = ""  # the next first message names it
        self.epoch += 1

    def drop_first(self, count: int) -> None:
        """Forget the oldest `count` messages (trimming, or a reset that keeps the conversation)."""
        self._history_tokens -= sum(self.messages[i].tokens for i in range(count))
        del self.messages[:count]
        self.first_seq += count

    def replace_first(self, count: int, message: Message) -> None:
        """Put `message` (a summary) in place of the oldest `count` messages."""
        self._history_tokens += message.tokens - sum(self.messages[i].tokens for i in range(count))
        self.messages[:count] = [message]
        self.epoch += 1

    def truncate(self, length: int) -> None:
        """Forget every message from index `length` on (a turn asked again)."""
        self._history_tokens -= sum(m.tokens for m in self.messages[length:])
        del self.messages[length:]
        self.epoch += 1

    def recount(self, encoding: str, count: Callable[[Message], int]) -> None:
        if encoding == self.encoding:
            return
        self.encoding = encoding
        for message in self.messages:
            message.tokens = count(message)
        self._history_tokens = sum(m.tokens for m in self.messages)
        self.epoch += 1


@dataclass
class Session:
    """A conversation with its user's profile: what one turn reads and changes."""

    profile: Profile
    conversation: Conversation

    # -- the parts handlers use most, by name --------------------------------------------------

    @property
    def user_id(self) -> int:
        return self.profile.user_id

    @property
    def place(self) -> Place:
        return self.conversation.place

    @property
    def model(self) -> str:
        return self.profile.model

    @model.setter
    def model(self, model_id: str) -> None:
        self.profile.model = model_id

    @property
    def system_prompt(self) -> str:
        return self.profile.system_prompt

    @property
    def system_tokens(self) -> int:
        return self.profile.system_tokens

    @property
    def preset(self) -> str | None:
        return self.profile.preset

    @property
    def usage(self) -> Usage:
        return self.profile.usage

    @property
    def messages(self) -> list[Message]:
        return self.conversation.messages

    @property
    def history_tokens(self) -> int:
        return self.conversation.history_tokens

    # -- pure methods --------------------------------------------------------------------------

    def prompt_tokens(self, extra: int = 0) -> int:
        """Tokens of the next request: system prompt, history, `extra`, reply priming."""
        return self.profile.system_tokens + self.conversation.history_tokens + extra + REPLY_PRIMING

    def crosses_warning(self, window: int, ratio: float) -> bool:
        """True once per conversation, the first time the prompt reaches `ratio` of the window."""
        if self.conversation.warned or self.prompt_tokens() < ratio * window:
            return False
        self.conversation.warned = True
        return True

    def add(self, role: str, content: str, tokens: int, images: tuple[str, ...] = ()) -> None:
        self.conversation.add(role, content, tokens, images)
        self.profile.last_active = self.conversation.last_active

    def clear(self) -> None:
        """Drop the history; model, system prompt and usage stay."""
        self.conversation.clear()

    def set_system_prompt(self, prompt: str, tokens: int, preset: str | None) -> None:
        """The user's prompt from now on (the caller starts a new conversation for it)."""
        profile = self.profile
        profile.system_prompt, profile.system_tokens, profile.preset = prompt, tokens, preset

    def recount(self, encoding: str, count: Callable[[str, str], int],
                count_message: Callable[[Message], int] | None = None) -> None:
        """Recount the system prompt and the history with another encoding (after a model switch)."""
        if self.profile.encoding != encoding:
            self.profile.encoding = encoding
            self.profile.system_tokens = count("system", self.profile.system_prompt)
        self.conversation.recount(encoding, count_message or (lambda m: count(m.role, m.content)))

    def request_messages(self, image_url: Callable[[str], str | None] | None = None, history: bool = True, *,
                         start: int = 0, end: int | None = None,
                         note: Message | None = None) -> list[dict[str, object]]:
        """The history (unless `history` is False) in the chat-completions shape, system prompt first.

        `start` and `end` select part of the history (what a trimmed request holds); `note` (a
        summary of the part left out) goes right after the system prompt. A message with images
        becomes a list of content parts; `image_url` turns an image reference into the URL to send
        (a data: URL), so this stays free of I/O.
        """
        head: list[dict[str, object]] = (
            [{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        if note is not None:
            head.append(request_message(note, image_url))
        if not history:
            return head
        messages = self.messages
        stop = len(messages) if end is None else end
        return head + [request_message(messages[i], image_url) for i in range(start, stop)]


def request_message(message: Message, image_url: Callable[[str], str | None] | None) -> dict[str, object]:
    """One message in the chat-completions shape; without `image_url` its images are left out, and
    an image whose URL is None (its file is gone) too."""
    urls = [url for ref in message.images if (url := image_url(ref))] if image_url else []
    if not urls:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, object]] = [{"type": "text", "text": message.content}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"role": message.role, "content": parts}


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"
