"""Tests for sessions.py and store.py: token bookkeeping, warnings, places, and the SessionStore."""

from __future__ import annotations

import pytest

from sessions import Conversation, Message, Place, Profile, Session, Usage
from store import SessionStore
from tokens import REPLY_PRIMING

SYSTEM_TOKENS = 10


def make_profile(user_id: int = 1, system_prompt: str = "Be brief.") -> Profile:
    return Profile(user_id=user_id, model="gpt-test", system_prompt=system_prompt,
                   system_tokens=SYSTEM_TOKENS, encoding="o200k_base")


def make_session(user_id: int = 1, *history_tokens: int, system_prompt: str = "Be brief.") -> Session:
    conversation = Conversation(1, Place(user_id, user_id), "o200k_base")
    session = Session(make_profile(user_id, system_prompt), conversation)
    for i, tokens in enumerate(history_tokens):
        session.add("user" if i % 2 == 0 else "assistant", f"message {i}", tokens)
    return session


class RecordingBackend:
    def __init__(self, profiles: list[Profile] | None = None,
                 conversations: list[tuple[Conversation, bool]] | None = None) -> None:
        self.loaded = (profiles or [], conversations or [])
        self.saved: list[tuple[Session, bool]] = []
        self.deleted: list[int] = []

    def load(self) -> tuple[list[Profile], list[tuple[Conversation, bool]]]:
        return self.loaded

    def save(self, session: Session, current: bool) -> None:
        self.saved.append((session, current))

    def save_profile(self, profile: Profile) -> None:
        pass

    def delete_conversation(self, conversation_id: int) -> None:
        self.deleted.append(conversation_id)

    def last_conversation_id(self) -> int:
        return 0


def make_store(backend: RecordingBackend | None = None) -> tuple[SessionStore, list[int]]:
    """A store over `backend` whose factory records the user ids it created profiles for."""
    created: list[int] = []

    def factory(user_id: int) -> Profile:
        created.append(user_id)
        return make_profile(user_id)

    return SessionStore(backend or RecordingBackend(), factory), created


def private(user_id: int) -> Place:
    return Place(user_id, user_id)


# --- Session -------------------------------------------------------------------------------------


def test_add_updates_history_and_prompt_tokens() -> None:
    session = make_session(1, 5, 7)
    assert [m.tokens for m in session.messages] == [5, 7]
    assert session.history_tokens == 12
    assert session.prompt_tokens() == SYSTEM_TOKENS + 12 + REPLY_PRIMING
    assert session.prompt_tokens(extra=4) == SYSTEM_TOKENS + 12 + 4 + REPLY_PRIMING


def test_history_tokens_computed_from_initial_messages() -> None:
    messages = [Message("user", "a", 4), Message("assistant", "b", 6)]
    conversation = Conversation(1, private(1), "o200k_base", messages=messages)
    assert Session(make_profile(), conversation).history_tokens == 10


def test_crosses_warning_fires_once_and_again_after_clear() -> None:
    session = make_session(1)  # prompt = 13
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.add("user", "x", 36)  # prompt = 49 < 50
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.add("assistant", "y", 1)  # prompt = 50: reaches the ratio
    assert session.crosses_warning(window=100, ratio=0.5)
    session.add("user", "z", 30)
    assert not session.crosses_warning(window=100, ratio=0.5)
    session.clear()
    session.add("user", "x", 40)
    assert session.crosses_warning(window=100, ratio=0.5)


def test_clear_drops_history_bumps_epoch_and_keeps_the_rest() -> None:
    session = make_session(1, 5, 7)
    session.usage.add(100, 20)
    session.profile.preset = "coder"
    session.clear()
    assert (session.messages, session.history_tokens, session.conversation.epoch) == ([], 0, 1)
    assert (session.model, session.system_prompt, session.system_tokens) == ("gpt-test", "Be brief.", 10)
    assert session.preset == "coder"
    assert session.usage == Usage(prompt_tokens=100, completion_tokens=20, requests=1)
    assert session.prompt_tokens() == SYSTEM_TOKENS + REPLY_PRIMING


def test_set_system_prompt_replaces_the_users_prompt_and_leaves_the_history() -> None:
    session = make_session(1, 5, 7)
    session.set_system_prompt("Translate.", 3, preset="translator")
    assert (session.system_prompt, session.system_tokens, session.preset) == ("Translate.", 3, "translator")
    assert session.history_tokens == 12  # the handler starts a new conversation; this one is kept


def test_clear_forgets_the_title_with_the_history() -> None:
    session = make_session(1)
    session.add("user", "cats", 3)
    session.conversation.warned = session.conversation.trimmed = True
    session.clear()
    conversation = session.conversation
    assert (conversation.title, conversation.warned, conversation.trimmed) == ("", False, False)
    assert conversation.epoch == 1
    session.add("user", "dogs", 3)
    assert conversation.title == "dogs"


def length_counter(role: str, content: str) -> int:
    return len(role) + len(content)


def test_recount_with_a_new_encoding() -> None:
    session = make_session(1, 5, 7)
    session.recount("cl100k_base", length_counter)
    assert session.profile.encoding == session.conversation.encoding == "cl100k_base"
    assert session.system_tokens == len("system") + len("Be brief.")
    assert [m.tokens for m in session.messages] == [len("user") + 9, len("assistant") + 9]
    assert session.history_tokens == sum(m.tokens for m in session.messages)
    assert session.conversation.epoch == 1


def test_recount_with_the_same_encoding_does_nothing() -> None:
    session = make_session(1, 5, 7)
    session.recount("o200k_base", lambda role, content: pytest.fail("must not recount"))
    assert (session.history_tokens, session.system_tokens) == (12, SYSTEM_TOKENS)
    assert session.conversation.epoch == 0


def test_request_messages_shape() -> None:
    session = make_session(1, 5, 7)
    assert session.request_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "message 0"},
        {"role": "assistant", "content": "message 1"},
    ]
    without_system = make_session(2, 5, system_prompt="")
    assert without_system.request_messages() == [{"role": "user", "content": "message 0"}]
    assert session.request_messages(history=False) == [{"role": "system", "content": "Be brief."}]
    assert without_system.request_messages(history=False) == []


def test_request_messages_with_images_become_content_parts() -> None:
    session = make_session(1)
    session.add("user", "what is this?", 90, images=("abc.jpg",))
    assert session.request_messages(image_url=lambda ref: f"data:{ref}") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:abc.jpg"}}]},
    ]


def test_usage_sums_requests() -> None:
    usage = Usage()
    usage.add(10, 2)
    usage.add(30, 8)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.requests, usage.total) == (40, 10, 2, 50)


# --- SessionStore --------------------------------------------------------------------------------


def test_store_get_creates_once_and_returns_the_same_conversation() -> None:
    store, created = make_store()
    first = store.get(private(7))
    again = store.get(private(7))
    assert again.conversation is first.conversation and again.profile is first.profile
    assert created == [7]
    assert len(store) == 1


def test_store_users_are_independent() -> None:
    store, created = make_store()
    alice, bob = store.get(private(1)), store.get(private(2))
    alice.add("user", "hi", 5)
    assert (alice.user_id, bob.user_id) == (1, 2)
    assert (alice.history_tokens, bob.history_tokens) == (5, 0)
    assert created == [1, 2]
    assert {s.user_id for s in store.all()} == {1, 2}


def test_places_have_separate_histories_and_share_the_profile() -> None:
    store, created = make_store()
    home, group, topic = private(1), Place(-100, 1), Place(-100, 1, thread_id=5)
    store.get(home).add("user", "my secret", 5)
    in_group, in_topic = store.get(group), store.get(topic)
    assert in_group.messages == [] and in_topic.messages == []
    assert in_group.conversation is not in_topic.conversation
    in_group.model = "other-model"  # a setting: the user's, wherever they write
    assert store.get(home).model == store.get(topic).model == "other-model"
    assert created == [1]
    assert home.private and not group.private


def test_store_get_updates_the_name() -> None:
    store, _ = make_store()
    assert store.get(private(1), "Alice").profile.name == "Alice"
    assert store.get(private(1)).profile.name == "Alice"  # an empty name keeps the old one
    assert store.get(private(1), "Alice (@alice)").profile.name == "Alice (@alice)"


def test_store_serves_loaded_conversations_without_the_factory() -> None:
    loaded = make_session(5, 3)
    store, created = make_store(RecordingBackend([loaded.profile], [(loaded.conversation, True)]))
    session = store.get(private(5))
    assert session.conversation is loaded.conversation and session.profile is loaded.profile
    assert created == []
    assert store.get(Place(5, 5, thread_id=9)).conversation.id > loaded.conversation.id  # ids never clash


def test_store_save_calls_the_backend_with_whether_it_is_current() -> None:
    backend = RecordingBackend()
    store, _ = make_store(backend)
    session = store.get(private(3))
    store.save(session)
    assert backend.saved == [(session, True)]


def test_new_conversation_keeps_the_old_one_and_reuses_an_empty_one() -> None:
    backend = RecordingBackend()
    store, _ = make_store(backend)
    first = store.get(private(1))
    assert store.new_conversation(private(1)).conversation is first.conversation  # empty: reused
    first.add("user", "hello", 4)
    second = store.new_conversation(private(1))
    assert second.conversation is not first.conversation
    assert store.get(private(1)).conversation is second.conversation
    assert [c.id for c in store.conversations(private(1))] == [second.conversation.id, first.conversation.id]
    assert (first.conversation.id, False) in [(s.conversation.id, cur) for s, cur in backend.saved]


def test_resume_and_delete_stay_within_the_users_chat() -> None:
    backend = RecordingBackend()
    store, _ = make_store(backend)
    old = store.get(private(1))
    old.add("user", "old topic", 4)
    store.new_conversation(private(1)).add("user", "new topic", 4)
    group = store.get(Place(-100, 1))
    group.add("user", "group talk", 4)
    assert store.resume(Place(-100, 1), old.conversation.id) is None  # never into another chat
    assert store.resume(private(2), old.conversation.id) is None  # never another user's
    resumed = store.resume(private(1), old.conversation.id)
    assert resumed is not None and resumed.messages[0].content == "old topic"
    assert store.get(private(1)).conversation is old.conversation
    assert not store.delete(private(1), group.conversation.id)
    assert store.delete(private(1), old.conversation.id)
    assert backend.deleted == [old.conversation.id]
    assert store.get(private(1)).messages == []  # the deleted one was current: a fresh one takes over


def test_resuming_an_archived_conversation_in_another_topic_leaves_its_old_topic_alone() -> None:
    store, _ = make_store()
    topic_a, topic_b = Place(1, 1, thread_id=10), Place(1, 1, thread_id=20)
    archived = store.get(topic_a)
    archived.add("user", "old talk in A", 4)
    current_a = store.new_conversation(topic_a)
    current_a.add("user", "new talk in A", 4)
    assert store.resume(topic_b, archived.conversation.id) is not None
    assert store.get(topic_a).conversation is current_a.conversation  # A keeps what it had
    assert store.get(topic_b).conversation is archived.conversation


def test_delete_all_counts_only_conversations_with_messages() -> None:
    store, _ = make_store()
    store.get(private(1)).add("user", "kept", 4)
    store.new_conversation(private(1))  # an empty current one
    assert store.delete_all(private(1)) == 1
