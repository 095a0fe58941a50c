"""The store: the only holder of profiles and conversations, and where they persist.

`SessionStore` hands out sessions by place and writes them through to a `Backend` (SQLite in
storage.py, or nothing with SESSION_STORE=memory). The rest of the code asks it for a session;
nothing else holds one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sessions import Conversation, Place, Profile, Session


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
        # Nothing is kept, so start past any id a button of an earlier run may still name.
        return int(time.time() * 1000)

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
