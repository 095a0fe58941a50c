"""A chat turn as the user sees it: the checks before, the streamed answer, the notes after.

Any text that is not a command comes here, and so do attachments once they are text (a transcript,
a caption with pictures, a file's content) and /retry. The bookkeeping is chat.py's; the wording of
every outcome and failure is here, from the catalog.
"""

from __future__ import annotations

import html
import logging
import threading

import chat
import context
import llm
import settings
import team
from app import App, clean_arg
from models import ModelInfo
from router import Incoming
from sessions import Session
from streaming import LiveReply

log = logging.getLogger(__name__)


def handle_chat(app: App, inc: Incoming, text: str | None = None, images: tuple[str, ...] = (),
                file_name: str | None = None, retry: bool = False) -> None:
    """Any text that is not a command: one turn with the model, streamed into the chat. An attachment
    comes here as what it became: a transcript, a caption with `images`, a file's text (`file_name`).
    With `retry` (/retry), the conversation's latest user message is asked again instead."""
    text = "" if retry else (inc.text if text is None else text).strip()
    if not retry and not clean_arg(text):  # nothing visible: only spaces, marks and invisible characters
        app.reply(inc, app.t(inc, "errors.empty_text"))
        return
    if (refusal := app.quotas.check(inc.user_id)) is not None:
        app.reply(inc, team.quota_refusal(app, inc, refusal))
        return
    session = app.session(inc)
    if retry and context.last_user_index(session.messages) is None:
        app.reply(inc, app.t(inc, "retry.nothing"))
        return
    notices = []
    if (moved := _ensure_model(app, session)) is not None:
        notices.append(app.t(inc, "chat.model_moved", old=html.escape(moved), new=html.escape(session.model)))
    model = app.registry.resolve(session.model)
    preset = app.presets.get(session.preset or "")
    key = inc.answer_key
    live = LiveReply(app.sender, inc.chat_id, draft_id=key[1],
                     reply_to=None if inc.private else inc.message_id,
                     use_drafts=inc.private and inc.chat_id not in app.no_drafts,
                     interval=app.config.draft_interval if inc.private else app.config.group_edit_interval,
                     thread_id=inc.thread_id, rich=settings.rich_for(app.config, session.profile),
                     thinking=app.t(inc, "chat.thinking"))
    cancel = threading.Event()
    app.active[key] = cancel
    app.typing.start(inc.chat_id, inc.thread_id)

    def on_delta(piece: str) -> None:
        app.typing.stop(inc.chat_id, inc.thread_id)
        live.add(piece)

    try:
        outcome = chat.run_turn(
            session=session, store=app.store, llm=app.llm, model=model, text=text,
            reply_cap=app.config.max_reply_tokens, warn_ratio=app.config.context_warn_ratio,
            stream=app.config.stream, temperature=preset.temperature if preset else None,
            on_delta=on_delta, cancel=cancel, images=images, image_url=app.media.image_url(model),
            quotas=app.quotas, on_reasoning=live.add_reasoning, policy=_policy(app), retry=retry)
    except llm.LLMError as exc:
        log.warning("update %s: model %s failed: %r", inc.update_id, model.id, exc)
        app.alerts.llm_failed(exc, app.registry.provider_title(model.provider))
        if isinstance(exc, llm.ImagesNotSupported):
            app.media.text_only.add(model.id)
        live.finish("", "\n\n".join([_llm_error(app, inc, exc, model), *notices]))
        return
    finally:
        live.close()
        app.typing.stop(inc.chat_id, inc.thread_id)
        app.active.pop(key, None)
        if live.drafts_refused:
            app.no_drafts.add(inc.chat_id)

    if outcome.too_large:
        app.reply(inc, _too_large(app, inc, model, outcome.message_tokens, file_name))
        return
    for happened, key in ((outcome.reset, "chat.reset"), (outcome.trimmed, "chat.trimmed"),
                          (outcome.summarized, "chat.summarized")):
        if happened:
            notices.append(app.t(inc, key))
    if outcome.images_left_out:
        app.media.text_only.add(model.id)
        notices.append(app.t(inc, "images.left_out", model=html.escape(model.id)))
    assert outcome.completion is not None
    # Notes go after the answer: parts sent while it streamed stay as they are.
    live.finish(outcome.completion.text, "\n\n".join([*_after_answer(app, inc, outcome, session), *notices]))


def cmd_retry(app: App, inc: Incoming) -> None:
    """Ask again for the latest user message; the new answer replaces the old one."""
    handle_chat(app, inc, retry=True)


def _policy(app: App) -> context.Policy:
    """What happens at the context window, and which model writes summaries."""
    summary = app.config.summary_model
    return context.Policy(app.config.context_strategy, app.registry.resolve(summary) if summary else None)


def _too_large(app: App, inc: Incoming, model: ModelInfo, tokens: int, file_name: str | None) -> str:
    reserve = model.reply_reserve(app.config.max_reply_tokens)
    figures = {"model": html.escape(model.id), "approx": chat.approx(model), "tokens": f"{tokens:,}",
               "window": f"{model.context_window:,}", "reserve": f"{reserve:,}"}
    if file_name is not None:
        return app.t(inc, "files.too_large", name=f"<b>{html.escape(file_name)}</b>", **figures)
    return app.t(inc, "chat.too_large", **figures)


def _after_answer(app: App, inc: Incoming, outcome: chat.Outcome, session: Session) -> list[str]:
    """Notes under an answer: how it ended, and the context warning."""
    completion, model = outcome.completion, outcome.model
    assert completion is not None
    notes = []
    if completion.cancelled:
        notes.append(app.t(inc, "chat.stopped"))
    elif completion.interrupted:
        notes.append(app.t(inc, "chat.interrupted"))
    elif completion.cut_without_text:
        notes.append(app.t(inc, "chat.thinking_only"))
    elif completion.finish_reason == "length":
        notes.append(app.t(inc, "chat.length"))
    elif outcome.empty:
        notes.append(app.t(inc, "chat.empty"))
    if outcome.warn:
        used = session.prompt_tokens()
        notes.append(app.t(inc, "chat.warn", approx=chat.approx(model), used=f"{used:,}",
                           window=f"{model.context_window:,}", share=f"{used / model.context_window:.0%}",
                           what=app.t(inc, f"context.{app.config.context_strategy}")))
    return notes


def _ensure_model(app: App, session: Session) -> str | None:
    """Move a session off a model that is no longer offered; the old id when it moved."""
    registry = app.registry
    if session.model in registry.models or session.model == registry.default_model:
        return None
    # Just after a start the providers' lists may not be in yet, and may still bring the model:
    # wait for them a little rather than send the message to a model that is gone.
    if not registry.discovered.wait(app.discovery_wait):
        return None  # still no lists: keep the user's choice
    old = session.model
    session.model = app.registry.default_model
    app.store.save_profile(session.profile)
    log.info("user %s moved from %s to %s", session.user_id, old, session.model)
    return old


def _llm_error(app: App, inc: Incoming, exc: llm.LLMError, model: ModelInfo) -> str:
    provider = app.registry.provider_title(model.provider)
    names = {"model": html.escape(model.id), "provider": html.escape(provider)}
    if isinstance(exc, llm.RateLimited):
        if exc.retry_after:
            return app.t(inc, "llm.rate_limited_wait", seconds=int(exc.retry_after), **names)
        return app.t(inc, "llm.rate_limited", **names)
    for kind, key in ((llm.QuotaExhausted, "llm.quota"), (llm.ImagesNotSupported, "llm.no_images"),
                      (llm.ProviderDown, "llm.down"), (llm.AuthFailed, "llm.auth"),
                      (llm.ContextTooLong, "llm.context"), (llm.ModelNotFound, "llm.not_found"),
                      (llm.ProviderNotConfigured, "llm.not_configured")):
        if isinstance(exc, kind):
            return app.t(inc, key, **names)
    return app.t(inc, "llm.refused", **names)
