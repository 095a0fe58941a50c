"""A turn with images (chat.run_turn): image parts in the request, image tokens in the counts, and a
provider that refuses pictures, against the in-process fake model."""

from __future__ import annotations

from typing import Any

import pytest

import chat
import media
from llm import ImagesNotSupported
from models import ModelInfo
from sessions import Message, Place, Profile
from store import MemoryBackend, SessionStore
from tests.fake_model import FakeModel

MODEL = ModelInfo("eyes", "openai", context_window=100_000, max_output=500, encoding="o200k_base",
                  exact_tokens=True, vision=True)
CLAUDE = ModelInfo("claude-x", "anthropic", context_window=100_000, max_output=500, encoding="cl100k_base",
                   image_tokens="anthropic", vision=True)
PHOTO = "a" * 64 + "-1000x1000.jpg"  # a reference: the size is in the name
URLS = {PHOTO: "data:image/jpeg;base64,AAAA"}


@pytest.fixture
def store() -> SessionStore:
    return SessionStore(MemoryBackend(), lambda user: Profile(user, "eyes", "", 0, "o200k_base"))


def turn(store: SessionStore, model: FakeModel, text: str, **kwargs: Any) -> chat.Outcome:
    kwargs.setdefault("image_url", URLS.get)
    return chat.run_turn(session=store.get(Place(1, 1)), store=store, llm=model,  # type: ignore[arg-type]
                         model=MODEL, text=text, reply_cap=8192, warn_ratio=0.8, stream=False, **kwargs)


def test_the_new_message_carries_its_image_and_its_image_tokens(store: SessionStore) -> None:
    model = FakeModel()
    outcome = turn(store, model, "what is it?", images=(PHOTO,))
    assert model.requests[-1].messages[-1]["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]
    text_tokens = chat.counter(MODEL).message("user", "what is it?")
    assert outcome.message_tokens == text_tokens + 765  # 1000x1000 -> 768x768: four tiles
    message = store.get(Place(1, 1)).messages[0]
    assert (message.images, message.tokens) == ((PHOTO,), text_tokens + 765)


def test_follow_ups_carry_the_image_of_the_history(store: SessionStore) -> None:
    model = FakeModel()
    turn(store, model, "what is it?", images=(PHOTO,))
    turn(store, model, "and the colour?")
    first, last = model.requests[-1].messages[0], model.requests[-1].messages[-1]
    assert isinstance(first["content"], list) and first["content"][1]["type"] == "image_url"
    assert last["content"] == "and the colour?"


def test_without_image_urls_the_history_goes_as_text(store: SessionStore) -> None:
    model = FakeModel()
    turn(store, model, "what is it?", images=(PHOTO,))
    turn(store, model, "and now?", image_url=None)
    assert all(isinstance(m["content"], str) for m in model.requests[-1].messages)


def test_a_refusal_of_the_historys_images_retries_without_them(store: SessionStore) -> None:
    model = FakeModel()
    turn(store, model, "what is it?", images=(PHOTO,))
    model.answer(ImagesNotSupported("image_url is only supported by certain models"), "fine")
    outcome = turn(store, model, "and now?")
    assert outcome.images_left_out and outcome.completion is not None and outcome.completion.text == "fine"
    assert all(isinstance(m["content"], str) for m in model.requests[-1].messages)
    assert [m.content for m in store.get(Place(1, 1)).messages][-2:] == ["and now?", "fine"]
    assert store.get(Place(1, 1)).messages[0].images == (PHOTO,)  # kept for a model that sees


def test_a_refusal_of_the_new_image_leaves_the_conversation_as_it_was(store: SessionStore) -> None:
    model = FakeModel()
    turn(store, model, "hello")
    model.answer(ImagesNotSupported("image_url is only supported by certain models"))
    with pytest.raises(ImagesNotSupported):
        turn(store, model, "what is it?", images=(PHOTO,))
    assert [m.content for m in store.get(Place(1, 1)).messages] == ["hello", "echo: hello"]
    assert len(model.requests) == 2


def test_a_recount_for_another_model_counts_images_by_its_formula(store: SessionStore) -> None:
    model = FakeModel()
    turn(store, model, "what is it?", images=(PHOTO,))
    session = store.get(Place(1, 1))
    chat.sync_encoding(session, CLAUDE)  # another encoding: everything is recounted
    text_tokens = chat.counter(CLAUDE).message("user", "what is it?")
    assert session.messages[0].tokens == text_tokens + media.image_tokens(1000, 1000, "anthropic") == \
        text_tokens + 1334
    assert session.history_tokens == sum(m.tokens for m in session.messages)


def test_message_tokens_of_a_message_without_images_is_the_text_count() -> None:
    tokens = chat.counter(MODEL)
    assert chat.message_tokens(MODEL, tokens, Message("user", "plain", 0)) == tokens.message("user", "plain")
