"""One chat turn: fit the message into the context window, ask the model, record the result.

What happens at the context window is `context.py`'s plan; this module sends the requests and
applies the plan once the answer is in. No wording and no Telegram here: the outcome says what
happened and `commands.py` tells the user.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import context
import media
from context import Action, Strategy
from llm import Completion, ContextTooLong, ImagesNotSupported, LLMClient, LLMError, Request
from mediastore import image_size
from models import ModelInfo
from quotas import Quotas
from sessions import Message, Session, request_message
from store import SessionStore
from tokens import REPLY_PRIMING, Counter, counter_for

log = logging.getLogger(__name__)

RESET = context.Policy()  # what a turn does without a policy: reset at the window, as always


@dataclass
class Outcome:
    """What a turn did. `completion` is None when the model was not asked or failed."""

    model: ModelInfo
    message_tokens: int
    completion: Completion | None = None
    too_large: bool = False
    reset: bool = False  # the history was dropped to make room
    trimmed: bool = False  # older turns were left out, for the first time in this conversation
    summarized: bool = False  # older turns were replaced by a summary
    warn: bool = False  # the session just crossed the warning ratio
    empty: bool = False  # the model answered nothing
    nothing_to_retry: bool = False  # a retry in a conversation without a user message
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


@dataclass
class Turn:
    """One turn's bookkeeping, on cached counts only: the request is `history[:end]` + `pending`.

    `run_turn` below is the whole turn; these steps are public for the accounting benchmark.
    """

    session: Session
    tokens: Counter
    end: int
    pending: Message
    retry: bool
    history_tokens: int  # of history[:end]
    fixed: int  # system prompt, pending message, reply priming
    budget: int  # the window less the reply reserve

    @classmethod
    def begin(cls, session: Session, model: ModelInfo, text: str, reply_cap: int, retry: bool = False,
              images: tuple[str, ...] = ()) -> Turn | None:
        """The turn for `text` (with `images`, by reference), or with `retry` for the latest user
        message (None: there is none)."""
        tokens = sync_encoding(session, model)
        messages = session.messages
        if retry:
            end = context.last_user_index(messages)
            if end is None:
                return None
            pending = messages[end]
            history_tokens = session.history_tokens - sum(m.tokens for m in messages[end:])
        else:
            end, pending = len(messages), Message("user", text, 0, images)
            pending.tokens = message_tokens(model, tokens, pending)
            history_tokens = session.history_tokens
        return cls(session, tokens, end, pending, retry, history_tokens,
                   session.system_tokens + pending.tokens + REPLY_PRIMING,
                   model.context_window - model.reply_reserve(reply_cap))

    def plan(self, strategy: Strategy) -> context.Plan | None:
        """What the request holds; None when the message does not fit even alone."""
        overhead = _note_overhead(self.tokens) if strategy is Strategy.SUMMARIZE else 0
        return context.plan(strategy, self.session.messages, self.end, self.history_tokens, self.fixed,
                            self.budget, overhead)

    def note(self, summary: str) -> Message:
        """The system note for a summary, with its own count."""
        text = context.note_text(summary)
        return Message("system", text, self.tokens.message("system", text))

    def request_tokens(self, plan: context.Plan, note: Message | None) -> int:
        """Our count of the request a plan makes."""
        return (self.fixed + self.history_tokens - plan.dropped_tokens
                + (note.tokens if note is not None else 0))

    def request_messages(self, plan: context.Plan, note: Message | None,
                         image_url: Callable[[str], str | None] | None = None,
                         history_images: bool = True) -> list[dict[str, object]]:
        """The request's messages; `history_images` False leaves the history's images out."""
        stop = self.end + 1 if self.retry else self.end
        messages = self.session.request_messages(image_url if history_images else None,
                                                 start=plan.keep_from, end=stop, note=note)
        if self.retry:  # the question is the history's last message: its images go all the same
            messages[-1] = request_message(self.pending, image_url)
        else:
            messages.append(request_message(self.pending, image_url))
        return messages

    def record(self, plan: context.Plan, note: Message | None, answer: str, outcome: Outcome,
               warn_ratio: float) -> bool:
        """Make the history what the request held, plus the question and its answer; False when
        there is no answer (stopped before the first word, cut at shutdown, empty)."""
        session, conversation = self.session, self.session.conversation
        if not answer.strip():
            # The history stays as it was: nothing replaces what a reset or a trim would drop. A
            # summary is kept, though: it was paid for, and it keeps what it replaces.
            outcome.empty = True
            if note is not None:
                context.apply(conversation, plan, note)
            return False
        if self.retry:
            conversation.truncate(self.end)  # the old answer goes; the question comes back below
        context.apply(conversation, plan, note)
        if plan.action is Action.TRIM and not conversation.trimmed:
            conversation.trimmed = outcome.trimmed = True
        pending = self.pending
        session.add(pending.role, pending.content, pending.tokens, pending.images)
        session.add("assistant", answer, self.tokens.message("assistant", answer))
        outcome.warn = session.crosses_warning(outcome.model.context_window, warn_ratio)
        return True


@functools.lru_cache(maxsize=16)
def _note_overhead(tokens: Counter) -> int:
    """What a summary note costs beyond its text: the mark and the message framing."""
    return tokens.message("system", context.note_text(""))


def run_turn(*, session: Session, store: SessionStore, llm: LLMClient, model: ModelInfo, text: str,
             reply_cap: int, warn_ratio: float, stream: bool, temperature: float | None = None,
             on_delta: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
             images: tuple[str, ...] = (), image_url: Callable[[str], str | None] | None = None,
             quotas: Quotas | None = None, on_reasoning: Callable[[str], None] | None = None,
             policy: context.Policy = RESET, retry: bool = False) -> Outcome:
    """Answer `text` (with `images`, by reference) in `session`; LLM errors propagate with the
    history unchanged. `image_url` makes references into URLs; None sends the history's images as
    nothing.

    With `retry`, `text` is ignored: the latest user message is asked again without what answered
    it, and the new answer replaces the old one. What happens at the context window is `policy`'s.
    """
    turn = Turn.begin(session, model, text, reply_cap, retry, images)
    if turn is None:
        return Outcome(model, 0, nothing_to_retry=True)
    outcome = Outcome(model, turn.pending.tokens)
    plan = turn.plan(policy.strategy)
    if plan is None:
        outcome.too_large = True
        return outcome
    note = None
    asked_for_summary = plan.action is Action.SUMMARIZE
    if asked_for_summary:
        plan, note = _summarize(turn, llm, policy.summary_model or model, plan, quotas)

    def request(plan: context.Plan, note: Message | None) -> Completion:
        messages = turn.request_messages(plan, note, image_url, history_images=not outcome.images_left_out)
        request = Request(model, messages, max_tokens=model.reply_reserve(reply_cap), temperature=temperature,
                          stream=stream)
        return llm.complete(request, on_delta=on_delta, cancel=cancel, on_reasoning=on_reasoning)

    def ask(plan: context.Plan, note: Message | None) -> Completion:
        try:
            return request(plan, note)
        except ImagesNotSupported:
            if turn.pending.images or image_url is None or not any(m.images for m in session.messages):
                raise
            # A model nobody described refuses images: the earlier pictures are left out, not the turn.
            outcome.images_left_out = True
            return request(plan, note)

    # The history changes only once an answer has arrived: a failed request leaves it as it was.
    try:
        try:
            completion = ask(plan, note)
        except ContextTooLong:
            if plan.action is Action.RESET or not turn.history_tokens:
                raise
            # The provider counts differently from us: try once more without the history.
            log.warning("provider says context too long for %s at %d tokens by our count; resetting",
                        model.id, turn.request_tokens(plan, note))
            plan, note = context.Plan(Action.RESET, turn.end, turn.history_tokens), None
            completion = ask(plan, note)
    except LLMError:
        if asked_for_summary:
            store.save_profile(session.profile)  # the summary request's usage stands, kept or not
        raise
    outcome.completion = completion
    outcome.summarized = note is not None
    if _record_usage(session, quotas, model, completion):
        _compare(model, turn.request_tokens(plan, note), completion.prompt_tokens)
    elif quotas is not None:  # no usage reported (some servers, a stop before the last chunk): ours
        quotas.record(session.user_id, turn.request_tokens(plan, note), turn.tokens.count(completion.text),
                      model)
    answered = turn.record(plan, note, completion.text, outcome, warn_ratio)
    outcome.reset = answered and plan.action is Action.RESET
    store.save(session)
    return outcome


def _summarize(turn: Turn, llm: LLMClient, summarizer: ModelInfo, plan: context.Plan,
               quotas: Quotas | None) -> tuple[context.Plan, Message | None]:
    """The summary note a summarising plan needs, or the trim it falls back to (logged) without one.

    The summary request is the bot's own: never streamed or shown, but its usage is the user's.
    """
    session = turn.session
    cap = min(plan.summary_tokens, summarizer.reply_reserve(plan.summary_tokens))
    instruction_tokens = turn.tokens.message("system", context.summary_instruction(cap))
    limit = context.summary_limit(summarizer, cap, instruction_tokens)
    source, source_tokens = context.summary_source(session.messages, plan, limit)
    if not source:
        log.warning("the older part of conversation %s does not fit %s's window; trimming instead",
                    session.conversation.id, summarizer.id)
        return plan.trimmed(), None
    request = Request(summarizer, context.summary_messages(source, cap), max_tokens=cap, stream=False)
    try:
        completion = llm.complete(request)
    except LLMError as exc:
        log.warning("summary of conversation %s by %s failed (%r); trimming instead for this turn",
                    session.conversation.id, summarizer.id, exc)
        return plan.trimmed(), None
    if not _record_usage(session, quotas, summarizer, completion) and quotas is not None:
        quotas.record(session.user_id, source_tokens + instruction_tokens, turn.tokens.count(completion.text),
                      summarizer)  # no usage reported: our count
    note = turn.note(completion.text)
    if not completion.text.strip() or turn.request_tokens(plan, note) > turn.budget:
        log.warning("summary of conversation %s by %s came back %s; trimming instead for this turn",
                    session.conversation.id, summarizer.id,
                    "empty" if not completion.text.strip() else f"too long ({note.tokens} tokens)")
        return plan.trimmed(), None
    log.info("conversation %s: %d messages (%d tokens) summarised by %s in %d tokens",
             session.conversation.id, len(source), source_tokens, summarizer.id, note.tokens)
    return plan, note


def _record_usage(session: Session, quotas: Quotas | None, model: ModelInfo, completion: Completion) -> bool:
    """Count what the provider reported as the user's (usage, quota); False when it reported nothing."""
    if completion.prompt_tokens is None and completion.completion_tokens is None:
        return False
    prompt, answered = completion.prompt_tokens or 0, completion.completion_tokens or 0
    session.usage.add(prompt, answered)
    if quotas is not None:
        quotas.record(session.user_id, prompt, answered, model, completion.cached_tokens)
    return True


def _compare(model: ModelInfo, ours: int, theirs: int | None) -> None:
    if theirs and abs(ours - theirs) > max(16, theirs // 20):
        log.info("token count differs for %s: ours %d, provider %d", model.id, ours, theirs)
