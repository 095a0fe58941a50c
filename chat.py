"""One chat turn: fit the message into the context window, ask the model, record the result.

No wording and no Telegram here: the outcome says what happened and
`commands.py` tells the user.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import media
from llm import Completion, ContextTooLong, ImagesNotSupported, LLMClient, Request
from mediastore import image_size
from models import ModelInfo
from quotas import Quotas
from sessions import Fit, Message, Session, SessionStore, request_message
from tokens import Counter, counter_for

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a turn did. `completion` is None when the model was not asked or failed."""

    model: ModelInfo
    message_tokens: int
    completion: Completion | None = None
    too_large: bool = False
    reset: bool = False  # the history was dropped to make room
    warn: bool = False  # the session just crossed the warning ratio
    empty: bool = False  # the model answered nothing
    images_left_out: bool = False  # the provider refused images: the history's were left out


def counter(model: ModelInfo) -> Counter:
    return counter_for(model.encoding, model.exact_tokens)


def message_tokens(model: ModelInfo, tokens: Counter, message: Message) -> int:
    """Tokens a message adds to a request: its text, and its images by the provider's formula."""
    counted = tokens.message(message.role, message.content)
    return counted + sum(media.image_tokens(*image_size(ref), model.image_tokens) for ref in message.images)


def approx(model: ModelInfo) -> str:
    """"≈" before a count that is an estimate: exact only where tiktoken's encoding is loaded."""
    return "" if counter(model).exact else "≈"


def sync_encoding(session: Session, model: ModelInfo) -> Counter:
    """The model's counter, after recounting the session if its encoding differs."""
    tokens = counter(model)
    session.recount(model.encoding, tokens.message, lambda m: message_tokens(model, tokens, m))
    return tokens


def run_turn(*, session: Session, store: SessionStore, llm: LLMClient, model: ModelInfo, text: str,
             reply_cap: int, warn_ratio: float, stream: bool, temperature: float | None = None,
             on_delta: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
             images: tuple[str, ...] = (),
             image_url: Callable[[str], str | None] | None = None, quotas: Quotas | None = None,
             on_reasoning: Callable[[str], None] | None = None) -> Outcome:
    """Answer `text` (with `images`, by reference) in `session`; LLM errors propagate with the session
    unchanged. `image_url` makes references into URLs; None sends the history's images as nothing."""
    tokens = sync_encoding(session, model)
    new = Message("user", text, 0, images)
    new.tokens = message_tokens(model, tokens, new)
    outcome = Outcome(model, new.tokens)
    reserve = model.reply_reserve(reply_cap)
    fit = session.fit(new.tokens, model.context_window, reserve)
    if fit is Fit.TOO_LARGE:
        outcome.too_large = True
        return outcome
    # The history is dropped only once an answer has arrived: a failed request leaves it as it was.
    outcome.reset = fit is Fit.RESET

    def request(with_history: bool) -> Completion:
        history = image_url if not outcome.images_left_out else None
        messages = [*session.request_messages(image_url=history, history=with_history),
                    request_message(new, image_url)]
        request = Request(model, messages, max_tokens=reserve, temperature=temperature, stream=stream)
        return llm.complete(request, on_delta=on_delta, cancel=cancel, on_reasoning=on_reasoning)

    def ask(with_history: bool) -> Completion:
        try:
            return request(with_history)
        except ImagesNotSupported:
            if images or image_url is None or not any(m.images for m in session.messages):
                raise
            # A model nobody described refuses images: the earlier pictures are left out, not the turn.
            outcome.images_left_out = True
            return request(with_history)

    try:
        completion = ask(with_history=not outcome.reset)
    except ContextTooLong:
        if outcome.reset or not session.messages:
            raise
        # The provider counts differently from us: try once more without the history.
        log.warning("provider says context too long for %s at %d tokens by our count; resetting",
                    model.id, session.prompt_tokens(new.tokens))
        outcome.reset = True
        completion = ask(with_history=False)
    outcome.completion = completion
    if outcome.reset:
        session.clear()
    if completion.prompt_tokens is not None or completion.completion_tokens is not None:
        session.usage.add(completion.prompt_tokens or 0, completion.completion_tokens or 0)
        if quotas is not None:
            quotas.record(session.user_id, completion.prompt_tokens or 0, completion.completion_tokens or 0,
                          model, completion.cached_tokens)
        _compare(model, session.prompt_tokens(new.tokens), completion.prompt_tokens)

    answer = completion.text
    if not answer.strip():
        outcome.empty = True
        store.save(session)  # the reset, and the usage, stand
        return outcome
    session.add("user", text, new.tokens, images)
    session.add("assistant", answer, tokens.message("assistant", answer))
    outcome.warn = session.crosses_warning(model.context_window, warn_ratio)
    store.save(session)
    return outcome


def _compare(model: ModelInfo, ours: int, theirs: int | None) -> None:
    if theirs and abs(ours - theirs) > max(16, theirs // 20):
        log.info("token count differs for %s: ours %d, provider %d", model.id, ours, theirs)
