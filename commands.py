"""The handlers: parse what the user sent, call the session or the model, word the answer.

Every user-facing sentence lives here. Handlers are plain functions taking the
`App` and the `Incoming`; `register_handlers` builds the command table that the
router dispatches on and that `setMyCommands` shows in Telegram's menu.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from telebot import types

import chat
import llm
from config import VERSION, Config
from llm import LLMClient
from models import ModelInfo, Registry, UnknownModel
from presets import Preset
from router import MEDIA_NAMES, BotIdentity, Incoming, StopGeneration
from sender import Sender, TelegramError
from sessions import Session, SessionStore
from streaming import LiveReply, TypingTicker

log = logging.getLogger(__name__)

Handler = Callable[["App", Incoming], None]
MAX_SYSTEM_PROMPT = 20_000
MAX_LISTED_SESSIONS = 30  # /sessions for an admin: the most recent, so the answer stays one message


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    handler: Handler


@dataclass
class App:
    """Everything a handler may use; built once in `bot.main()`."""

    config: Config
    registry: Registry
    presets: dict[str, Preset]
    store: SessionStore
    llm: LLMClient
    sender: Sender
    typing: TypingTicker
    me: BotIdentity
    commands: dict[str, Command] = field(default_factory=dict)
    # (chat id, draft id) -> the cancel flag of the answer being generated there.
    active: dict[tuple[int, int], threading.Event] = field(default_factory=dict)
    no_drafts: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.time)

    def session(self, inc: Incoming) -> Session:
        return self.store.get(inc.user_id, inc.user_name)

    def reply(self, inc: Incoming, text_html: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
        # In groups, answer as a reply so it is clear whom the bot is talking to.
        self.sender.send_html(inc.chat_id, text_html, reply_to=None if inc.private else inc.message_id,
                              markup=markup)


def register_handlers(app: App) -> None:
    """Fill the command table; the order is the order of Telegram's command menu."""
    for name, description, handler in (
        ("start", "Welcome and how to use the bot", cmd_start),
        ("help", "The commands", cmd_help),
        ("info", "Bot version, models, presets and this session", cmd_info),
        ("t", "Tokens in this session and spent so far", cmd_tokens),
        ("clear", "Start a new conversation", cmd_clear),
        ("model", "Show or switch the model", cmd_model),
        ("system", "Show or set the system prompt", cmd_system),
        ("preset", "Switch to a ready-made mode (translator, ...)", cmd_preset),
        ("sessions", "List sessions (all of them for admins)", cmd_sessions),
    ):
        app.commands[name] = Command(name, description, handler)


def handle(app: App, inc: Incoming) -> None:
    """Run the handler for one Incoming; any failure ends this turn only, with a short apology."""
    try:
        if not app.config.is_allowed(inc.user_id):
            refuse(app, inc)
        elif inc.kind == "command":
            command = app.commands.get(inc.command)
            (command.handler if command else cmd_unknown)(app, inc)
        elif inc.kind == "callback":
            handle_callback(app, inc)
        elif inc.kind == "text":
            handle_chat(app, inc)
        elif inc.kind == "edited":
            app.reply(inc, "I only read new messages: an edit does not change the conversation. "
                           "Send the corrected text as a new message.")
        else:
            name = MEDIA_NAMES.get(inc.text, "messages like this")
            app.reply(inc, f"Sorry, I can only read text: {name} are not supported yet.")
    except TelegramError as exc:
        log.error("update %s: Telegram refused the reply: %s", inc.update_id, exc.description)
    except Exception:
        log.exception("update %s failed", inc.update_id)
        try:
            app.reply(inc, "Sorry, something went wrong on my side. Please try again.")
        except Exception:
            log.exception("update %s: could not even apologise", inc.update_id)


def stop_generation(app: App, stop: StopGeneration) -> None:
    """The stop control on a draft: cancel that answer (called from the polling thread)."""
    flag = app.active.get((stop.chat_id, stop.draft_id))
    if flag is not None:
        flag.set()


def refuse(app: App, inc: Incoming) -> None:
    if inc.kind == "callback":
        app.sender.answer_callback(inc.callback_id, "You are not allowed to use this bot.")
        return
    app.reply(inc, "Sorry, you are not allowed to use this bot. Your Telegram user id is "
                   f"<code>{inc.user_id}</code>: send it to the bot's owner to be let in.")


# -- chat -------------------------------------------------------------------------------------------

def handle_chat(app: App, inc: Incoming) -> None:
    """Any text that is not a command: one turn with the model, streamed into the chat."""
    text = inc.text.strip()
    if not text:
        app.reply(inc, "Send me some text and I'll answer.")
        return
    session = app.session(inc)
    notices = []
    if (moved := _ensure_model(app, session)) is not None:
        notices.append(f"<i>The model {html.escape(moved)} is no longer available; this chat now uses "
                       f"{html.escape(session.model)}.</i>")
    model = app.registry.resolve(session.model)
    preset = app.presets.get(session.preset or "")
    live = LiveReply(app.sender, inc.chat_id, draft_id=inc.message_id or inc.update_id,
                     reply_to=None if inc.private else inc.message_id,
                     use_drafts=inc.private and inc.chat_id not in app.no_drafts,
                     interval=app.config.draft_interval if inc.private else app.config.group_edit_interval)
    cancel = threading.Event()
    key = (inc.chat_id, live.draft_id)
    app.active[key] = cancel
    app.typing.start(inc.chat_id)

    def on_delta(piece: str) -> None:
        app.typing.stop(inc.chat_id)
        live.add(piece)

    try:
        outcome = chat.run_turn(
            session=session, store=app.store, llm=app.llm, model=model, text=text,
            reply_cap=app.config.max_reply_tokens, warn_ratio=app.config.context_warn_ratio,
            stream=app.config.stream, temperature=preset.temperature if preset else None,
            on_delta=on_delta, cancel=cancel)
    except llm.LLMError as exc:
        log.warning("update %s: model %s failed: %r", inc.update_id, model.id, exc)
        live.finish("", "\n\n".join([_llm_error(app, exc, model), *notices]))
        return
    finally:
        app.typing.stop(inc.chat_id)
        app.active.pop(key, None)
        if live.drafts_refused:
            app.no_drafts.add(inc.chat_id)

    if outcome.too_large:
        app.reply(inc, _too_large(app, model, outcome.message_tokens))
        return
    if outcome.reset:
        notices.append("<i>The conversation reached the model's context window, so I started a new one "
                       "(the system prompt is kept).</i>")
    assert outcome.completion is not None
    # Notes go after the answer: parts sent while it streamed stay as they are.
    live.finish(outcome.completion.text, "\n\n".join([*_after_answer(outcome, session), *notices]))


def _too_large(app: App, model: ModelInfo, tokens: int) -> str:
    reserve = model.reply_reserve(app.config.max_reply_tokens)
    return (f"This message is too long for {html.escape(model.id)}: it is {_approx(model)}{tokens:,} tokens, "
            f"and the model's context window is {model.context_window:,} tokens (with {reserve:,} kept for "
            "the answer). Nothing was sent; please shorten it.")


def _after_answer(outcome: chat.Outcome, session: Session) -> list[str]:
    """Notes under an answer: how it ended, and the context warning."""
    completion, model = outcome.completion, outcome.model
    assert completion is not None
    notes = []
    if completion.cancelled:
        notes.append("<i>(stopped)</i>")
    elif completion.interrupted:
        notes.append("<i>(the connection to the model broke off: this answer is incomplete)</i>")
    elif completion.finish_reason == "length":
        notes.append("<i>(the answer reached its length limit)</i>")
    elif outcome.empty:
        notes.append("<i>The model returned an empty answer. Try rephrasing?</i>")
    if outcome.warn:
        used = session.prompt_tokens()
        notes.append(f"<i>Heads-up: this conversation uses {_approx(model)}{used:,} of "
                     f"{model.context_window:,} tokens ({used / model.context_window:.0%}). It resets when "
                     "full; /clear starts afresh now.</i>")
    return notes


def _ensure_model(app: App, session: Session) -> str | None:
    """Move a session off a model that is no longer offered; the old id when it moved."""
    registry = app.registry
    if session.model in registry.models or session.model == registry.default_model:
        return None
    if not registry.discovered.is_set():
        return None  # a provider's list may still bring it: keep the session's choice
    old = session.model
    session.model = app.registry.default_model
    app.store.save(session)
    log.info("session %s moved from %s to %s", session.user_id, old, session.model)
    return old


def _llm_error(app: App, exc: llm.LLMError, model: ModelInfo) -> str:
    name = html.escape(model.id)
    known = app.registry.providers.get(model.provider)
    provider = html.escape(known.title if known else model.provider)
    if isinstance(exc, llm.RateLimited):
        wait = f" in about {int(exc.retry_after)} s" if exc.retry_after else " in a minute"
        return f"{provider} is rate-limiting requests right now. Please try again{wait}."
    if isinstance(exc, llm.ProviderDown):
        return f"{provider} is not answering right now (timeout or server error). Please try again shortly."
    if isinstance(exc, llm.AuthFailed):
        return f"{provider} refused the bot's API key. Please tell the bot's owner."
    if isinstance(exc, llm.ContextTooLong):
        return (f"This conversation does not fit {name}'s context window even after a reset. "
                "Please send a shorter message.")
    if isinstance(exc, llm.ModelNotFound):
        return f"{provider} does not serve {name}. Pick another model with /model."
    if isinstance(exc, llm.ProviderNotConfigured):
        return f"{name} needs a provider that is not configured here. Pick another model with /model."
    return f"{provider} refused the request for {name}. The details are in the bot's log."


# -- commands ---------------------------------------------------------------------------------------

def cmd_start(app: App, inc: Incoming) -> None:
    """Greet the user and say how the bot works."""
    session = app.session(inc)
    app.reply(inc, f"Hi {html.escape(inc.user_name.split(' (')[0])}! Send me a message and "
                   f"{html.escape(session.model)} will answer. I keep our conversation, so you can ask "
                   "follow-up questions; /clear starts a new one.\n\n" + _command_lines(app))


def cmd_help(app: App, inc: Incoming) -> None:
    """List the commands."""
    app.reply(inc, "<b>Commands</b>\n" + _command_lines(app)
              + "\n\nAny other text is sent to the model with our conversation so far.")


def cmd_info(app: App, inc: Incoming) -> None:
    """Version, current model, available models, presets, commands and this session's figures."""
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    used = session.prompt_tokens()
    lines = [
        f"<b>LLM Telegram bot {VERSION}</b> (up {_duration(time.time() - app.started)})",
        f"Model: <code>{html.escape(model.id)}</code> ({model.context_window:,}-token window)",
        "",
        "<b>This session</b>",
        f"Messages: {len(session.messages)}",
        f"Tokens: {_approx(model)}{used:,} of {model.context_window:,} ({used / model.context_window:.1%})",
        f"System prompt: {_prompt_label(app, session)}",
        "",
        "<b>Models</b>",
        _model_list(app, model.id),
        "",
        "<b>Presets</b>",
        *(f"{html.escape(p.name)}: {html.escape(p.description or p.title)}" for p in app.presets.values()),
        "",
        "<b>Commands</b>",
        _command_lines(app),
    ]
    app.reply(inc, "\n".join(lines))


def cmd_tokens(app: App, inc: Incoming) -> None:
    """Tokens in the session by our count, the window and its share, and tokens the API reported."""
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    chat.sync_encoding(session, model)
    used, window = session.prompt_tokens(), model.context_window
    usage = session.usage
    approx = _approx(model)
    app.reply(inc, "\n".join([
        f"<b>Tokens</b> ({html.escape(model.id)}{', estimated' if approx else ''})",
        f"This conversation: {approx}{used:,} ({len(session.messages)} messages + system prompt)",
        f"Context window: {window:,}, of which {used / window:.1%} is used",
        f"Kept free for the answer: {model.reply_reserve(app.config.max_reply_tokens):,}",
        f"Spent so far (as the API reported, {usage.requests} requests): {usage.prompt_tokens:,} prompt + "
        f"{usage.completion_tokens:,} completion = {usage.total:,}",
    ]))


def cmd_clear(app: App, inc: Incoming) -> None:
    """Forget the conversation; the model and system prompt stay."""
    session = app.session(inc)
    dropped = len(session.messages)
    session.clear()
    app.store.save(session)
    app.reply(inc, f"Started a new conversation ({dropped} messages cleared). The model and system "
                   "prompt are unchanged.")


def cmd_model(app: App, inc: Incoming) -> None:
    """`/model` shows a picker; `/model <id>` switches this session's model."""
    session = app.session(inc)
    wanted = _clean_arg(inc.args)
    if not wanted:
        app.reply(inc, f"Current model: <code>{html.escape(session.model)}</code>\nPick another:",
                  markup=_model_keyboard(app, session.model))
        return
    try:
        model = app.registry.get(wanted)
    except UnknownModel as exc:
        shown = wanted if len(wanted) <= 64 else wanted[:64] + "…"
        app.reply(inc, f"I don't know the model <code>{html.escape(shown)}</code>; nothing changed.\n"
                       f"Available: {', '.join(f'<code>{html.escape(m)}</code>' for m in exc.known)}")
        return
    app.reply(inc, _switch_model(app, session, model))


def _switch_model(app: App, session: Session, model: ModelInfo) -> str:
    session.model = model.id
    chat.sync_encoding(session, model)
    note = ""
    if session.prompt_tokens() > model.context_window - model.reply_reserve(app.config.max_reply_tokens):
        session.clear()
        note = " The conversation was longer than its context window, so it starts afresh."
    app.store.save(session)
    return (f"Model switched to <code>{html.escape(model.id)}</code> "
            f"({model.context_window:,}-token window).{note}")


def cmd_system(app: App, inc: Incoming) -> None:
    """`/system` shows the prompt, `/system <text>` sets it, `/system default` restores the default."""
    session = app.session(inc)
    text = _clean_arg(inc.args, keep_newlines=True)
    if not text:
        app.reply(inc, f"System prompt ({_prompt_label(app, session)}):\n"
                       f"<blockquote expandable>{html.escape(session.system_prompt)}</blockquote>\n"
                       "Set one with /system &lt;text&gt;, or /system default.")
        return
    if text.lower() == "default":
        _set_prompt(app, session, app.config.system_prompt, None)
        app.reply(inc, "System prompt restored to the default. The conversation was cleared.")
        return
    if len(text) > MAX_SYSTEM_PROMPT:
        app.reply(inc, f"That system prompt is {len(text):,} characters; the limit is "
                       f"{MAX_SYSTEM_PROMPT:,}. Nothing changed.")
        return
    model = app.registry.resolve(session.model)
    tokens = chat.counter(model).message("system", text)
    if tokens + model.reply_reserve(app.config.max_reply_tokens) >= model.context_window // 2:
        app.reply(inc, f"That system prompt ({tokens:,} tokens) would take over half of "
                       f"{html.escape(model.id)}'s context window. Nothing changed.")
        return
    _set_prompt(app, session, text, None)
    app.reply(inc, "System prompt set. The conversation was cleared so it applies from the start.")


def _set_prompt(app: App, session: Session, prompt: str, preset: str | None) -> None:
    model = app.registry.resolve(session.model)
    session.set_system_prompt(prompt, chat.counter(model).message("system", prompt), preset)
    app.store.save(session)


def cmd_preset(app: App, inc: Incoming) -> None:
    """`/preset` shows the presets as buttons; `/preset <name>` switches to one."""
    name = _clean_arg(inc.args).lower()
    if not name:
        app.reply(inc, "Pick a mode (it sets the system prompt and starts a new conversation):",
                  markup=_preset_keyboard(app, app.session(inc).preset))
        return
    preset = app.presets.get(name)
    if preset is None:
        shown = html.escape(name[:64])
        app.reply(inc, f"There is no preset <code>{shown}</code>. Available: "
                       + ", ".join(f"<code>{html.escape(p)}</code>" for p in app.presets))
        return
    app.reply(inc, _apply_preset(app, app.session(inc), preset, inc.language))


def _apply_preset(app: App, session: Session, preset: Preset, language: str | None) -> str:
    note = ""
    if preset.model and preset.model in app.registry.models:
        session.model = preset.model
        note = f" Model: <code>{html.escape(preset.model)}</code>."
    prompt = preset.prompt
    if language and re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?", language):
        # "Into the user's language" (translator, teacher) needs to know it.
        prompt += f"\n\nThe user's Telegram app language code is {language}."
    _set_prompt(app, session, prompt, preset.name)
    return (f"Preset <b>{html.escape(preset.title)}</b> is on: {html.escape(preset.description)}. "
            f"The conversation was cleared.{note}")


def cmd_sessions(app: App, inc: Incoming) -> None:
    """Admins see every session; anyone else sees only their own."""
    admin = app.config.is_admin(inc.user_id)
    sessions = app.store.all() if admin else [app.session(inc)]
    sessions.sort(key=lambda s: s.last_active, reverse=True)
    lines = [f"<b>{'All sessions' if admin else 'Your session'}</b> ({len(sessions)})"]
    for s in sessions[:MAX_LISTED_SESSIONS]:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.last_active))
        lines.append(f"<code>{s.user_id}</code> {html.escape(s.name or '?')}: {html.escape(s.model)}, "
                     f"{len(s.messages)} messages, {s.prompt_tokens():,} tokens, last active {when} UTC")
    if len(sessions) > MAX_LISTED_SESSIONS:
        lines.append(f"…and {len(sessions) - MAX_LISTED_SESSIONS:,} less recent ones")
    app.reply(inc, "\n".join(lines))


def cmd_unknown(app: App, inc: Incoming) -> None:
    name = html.escape(inc.command[:64])
    app.reply(inc, f"I don't know the command /{name}. Send /help for the list.")


# -- buttons ----------------------------------------------------------------------------------------

def handle_callback(app: App, inc: Incoming) -> None:
    """Every inline button lands here: `model:<key>` and `preset:<name>`."""
    kind, _, value = inc.text.partition(":")
    session = app.session(inc)
    if kind == "model" and (model := app.registry.by_key(value)) is not None:
        confirmation = _switch_model(app, session, model)
        markup = _model_keyboard(app, session.model)
    elif kind == "preset" and (preset := app.presets.get(value)) is not None:
        confirmation = _apply_preset(app, session, preset, inc.language)
        markup = _preset_keyboard(app, session.preset)
    else:
        app.sender.answer_callback(inc.callback_id, "This button is no longer valid.")
        return
    app.sender.answer_callback(inc.callback_id, "Done")
    if inc.message_id is not None:
        app.sender.edit_part(inc.chat_id, inc.message_id, confirmation, markup=markup)


def _model_keyboard(app: App, current: str) -> types.InlineKeyboardMarkup:
    markup = types.InlineKeyboardMarkup(row_width=2)
    by_provider: dict[str, list[ModelInfo]] = {}
    for model in app.registry.available(featured_only=True)[:98]:  # Telegram allows 100 buttons
        by_provider.setdefault(model.provider, []).append(model)
    for provider, models in by_provider.items():
        title = app.registry.providers[provider].title
        markup.add(*(types.InlineKeyboardButton(
            f"{'✅ ' if m.id == current else ''}{m.id}" + ("" if len(by_provider) == 1 else f" · {title}"),
            callback_data=f"model:{m.key}") for m in models))
    return markup


def _preset_keyboard(app: App, current: str | None) -> types.InlineKeyboardMarkup:
    markup = types.InlineKeyboardMarkup(row_width=2)
    markup.add(*(types.InlineKeyboardButton(f"{'✅ ' if p.name == current else ''}{p.title}",
                                            callback_data=f"preset:{p.name}")
                 for p in app.presets.values()))
    return markup


# -- wording helpers --------------------------------------------------------------------------------

def _command_lines(app: App) -> str:
    return "\n".join(f"/{c.name}: {html.escape(c.description)}" for c in app.commands.values())


def _model_list(app: App, current: str) -> str:
    lines = []
    featured = app.registry.available(featured_only=True)
    for model in featured:
        mark = " ✅" if model.id == current else ""
        when = f", retires {model.shutdown}" if model.shutdown else ""
        lines.append(f"<code>{html.escape(model.id)}</code> ({html.escape(model.provider)}, "
                     f"{model.context_window:,}{when}){mark}")
    if more := len(app.registry.models) - len(featured):
        lines.append(f"…and {more} more that the providers list: /model &lt;id&gt;")
    return "\n".join(lines) or "none"


def _prompt_label(app: App, session: Session) -> str:
    if session.preset and session.preset in app.presets:
        return f"preset {html.escape(app.presets[session.preset].title)}"
    if session.system_prompt == app.config.system_prompt:
        return "default"
    preview = session.system_prompt[:80] + ("…" if len(session.system_prompt) > 80 else "")
    return f"custom: {html.escape(preview)}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _approx(model: ModelInfo) -> str:
    return "" if model.exact_tokens else "≈"


def _clean_arg(text: str, keep_newlines: bool = False) -> str:
    """An argument without control and invisible format characters (Unicode Cc and Cf)."""
    kept = "\n\t" if keep_newlines else "\t"
    visible = "".join(c for c in text if c in kept or unicodedata.category(c) not in ("Cc", "Cf"))
    return "\n".join(line.rstrip() for line in visible.split("\n")).strip()
