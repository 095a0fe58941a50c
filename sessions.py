"""Users' settings and their conversations: plain data with pure methods, and the store that owns them.

A conversation belongs to a place (`Place`): the user's private chat (or one of its topics), or a
group (or one of its forum topics) together with the user. Its history never leaves that place:
what Alice said to the bot in private never reaches an answer posted in a group. The settings a
person chooses (model, system prompt, preset, language) and the usage the API reported belong to
the user (`Profile`), wherever they write.

A `Session` is one conversation seen with its user's profile: what a turn works on. Nothing here
does I/O; the `SessionStore` hands sessions out and writes them through to a backend.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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


class Backend(Protocol):
    """Where profiles and conversations persist (SQLite, or nothing)."""

    def load(self) -> tuple[list[Profile], list[tuple[Conversation, bool]]]:
        """Every profile, and every conversation with whether it is its place's current one."""
        ...

    def save(self, session: Session, current: bool) -> None: ...

    def save_profile(self, profile: Profile) -> None: ...

    def delete_conversation(self, conversation_id: int) -> None: ...

    def last_conversation_id(self) -> int:
        """The highest conversation id ever saved (deleted ones too), so no id is given out twice."""
        ...


class MemoryBackend:
    """Keeps nothing: SESSION_STORE=memory."""

    def load(self) -> tuple[list[Profile], list[tuple[Conversation, bool]]]:
        return [], []

    def last_conversation_id(self) -> int:
        return 0

    def save(self, session: Session, current: bool) -> None:
        pass

    def save_profile(self, profile: Profile) -> None:
        pass

    def delete_conversation(self, conversation_id: int) -> None:
        pass


class SessionStore:
    """The only holder of profiles and conversations: get or create by place, save after every change.

    Each place has one current conversation; earlier ones stay in the archive (for /history) until
    deleted. A conversation never changes place.
    """

    def __init__(self, backend: Backend, new_profile: Callable[[int], Profile]) -> None:
        self._backend = backend
        self._new_profile = new_profile
        self._lock = threading.Lock()
        profiles, conversations = backend.load()
        self._profiles = {p.user_id: p for p in profiles}
        self._conversations = {c.id: c for c, _ in conversations}
        self._current = {c.place: c.id for c, current in conversations if current}
        # Never an id given out before: an old button naming a deleted conversation must find nothing.
        highest = max(max(self._conversations, default=0), backend.last_conversation_id())
        self._ids = itertools.count(highest + 1)

    # -- lookups -------------------------------------------------------------------------------

    def profile(self, user_id: int, name: str = "") -> Profile:
        with self._lock:
            profile = self._profiles.get(user_id)
            if profile is None:
                profile = self._profiles[user_id] = self._new_profile(user_id)
        if name and profile.name != name:
            profile.name = name
        return profile

    def find_profile(self, user_id: int) -> Profile | None:
        """The user's profile if they have one (creates nothing)."""
        return self._profiles.get(user_id)

    def get(self, place: Place, name: str = "") -> Session:
        """The place's current conversation (a new, empty one if it has none)."""
        profile = self.profile(place.user_id, name)
        with self._lock:
            conversation = self._conversations.get(self._current.get(place, 0))
            if conversation is None:
                conversation = self._create(place, profile.encoding)
        return Session(profile, conversation)

    def conversations(self, place: Place) -> list[Conversation]:
        """The user's conversations in this place's chat (all its topics), most recent first."""
        with self._lock:
            found = [c for c in self._conversations.values()
                     if c.place.user_id == place.user_id and c.place.chat_id == place.chat_id]
        return sorted(found, key=lambda c: c.last_active, reverse=True)

    def find(self, place: Place, conversation_id: int) -> Conversation | None:
        """One of the user's conversations in this place's chat, by id (None if not theirs or gone)."""
        with self._lock:
            found = self._conversations.get(conversation_id)
        return found if found is not None and self._belongs(found, place) else None

    def is_current(self, conversation: Conversation) -> bool:
        return self._current.get(conversation.place) == conversation.id

    def profiles(self) -> list[Profile]:
        with self._lock:
            return list(self._profiles.values())

    def all(self) -> list[Session]:
        """Every place's current conversation with its profile (for admins' /sessions)."""
        with self._lock:
            current = [self._conversations[cid] for cid in self._current.values()]
        return [Session(self.profile(c.place.user_id), c) for c in current]

    def __len__(self) -> int:
        return len(self._conversations)

    def image_refs(self) -> set[str]:
        """Every image any conversation (archived ones too) references: what the media store keeps."""
        with self._lock:
            conversations = list(self._conversations.values())
        return {ref for c in conversations for m in list(c.messages) for ref in m.images}

    # -- changes -------------------------------------------------------------------------------

    def save(self, session: Session) -> None:
        self._backend.save(session, self.is_current(session.conversation))

    def save_profile(self, profile: Profile) -> None:
        self._backend.save_profile(profile)

    def new_conversation(self, place: Place) -> Session:
        """Start a fresh conversation here; the current one is kept in the archive (unless empty)."""
        profile = self.profile(place.user_id)
        with self._lock:
            old = self._conversations.get(self._current.get(place, 0))
            if old is not None and not old.messages:
                return Session(profile, old)  # nothing to keep: reuse it
            conversation = self._create(place, profile.encoding)
        if old is not None:
            self._backend.save(Session(profile, old), False)
        session = Session(profile, conversation)
        self.save(session)
        return session

    def resume(self, place: Place, conversation_id: int) -> Session | None:
        """Make one of the user's conversations in this chat the place's current one."""
        profile = self.profile(place.user_id)
        with self._lock:
            target = self._conversations.get(conversation_id)
            if target is None or not self._belongs(target, place):
                return None
            old = self._conversations.get(self._current.get(place, 0))
            if self._current.get(target.place) == target.id:  # it leaves its place; others stay
                del self._current[target.place]
            # A topic's conversation resumed in another topic of the same chat moves there.
            target.place = place
            self._current[place] = target.id
        if old is not None and old is not target:
            if old.messages:
                self._backend.save(Session(profile, old), False)
            else:
                self.delete(place, old.id)
        session = Session(profile, target)
        self.save(session)
        return session

    def delete(self, place: Place, conversation_id: int) -> bool:
        """Delete one of the user's conversations in this chat; False if there is no such one."""
        with self._lock:
            target = self._conversations.get(conversation_id)
            if target is None or not self._belongs(target, place):
                return False
            del self._conversations[conversation_id]
            if self._current.get(target.place) == conversation_id:
                del self._current[target.place]
        self._backend.delete_conversation(conversation_id)
        return True

    def delete_all(self, place: Place) -> int:
        """Delete every conversation of the user in this place's chat; how many held messages."""
        found = self.conversations(place)
        return sum(self.delete(place, c.id) and bool(c.messages) for c in found)

    def _belongs(self, conversation: Conversation, place: Place) -> bool:
        return conversation.place.user_id == place.user_id and conversation.place.chat_id == place.chat_id

    def _create(self, place: Place, encoding: str) -> Conversation:
        """A new current conversation for `place`; the caller holds the lock."""
        conversation = Conversation(next(self._ids), place, encoding)
        self._conversations[conversation.id] = conversation
        self._current[place] = conversation.id
        return conversation
