"""The handlers: parse what the user sent, call the session or the model, word the answer.

Handlers are plain functions taking the `App` and the `Incoming`; `register_handlers`
builds the command table that the router dispatches on and that `setMyCommands` shows
in Telegram's menu. A chat turn is turns.py's; the features of their own (conversations,
attachments, team, settings) are their modules'. Every user-facing sentence comes from the
message catalog (`locales/*.toml`) in the user's language, through `App.t`.
"""

from __future__ import annotations

import difflib
import html
import logging
import re
import time

from telebot import types

import attachments
import chat
import context
import conversations
import settings
import team
import turns
from app import App, Command, clean_arg
from config import VERSION
from i18n import LANGUAGE_NAMES
from models import ModelInfo, UnknownModel
from presets import Preset
from router import Incoming, StopGeneration
from sender import TelegramError
from sessions import Session

log = logging.getLogger(__name__)

MAX_SYSTEM_PROMPT = 20_000
MAX_LISTED_MODELS = 20  # /model <unknown>: the featured models listed, then how many more the picker has
MAX_LISTED_SESSIONS = 30  # /sessions for an admin: the most recent, so the answer stays one message


def register_handlers(app: App) -> None:
    """Fill the command table; the order is the order of Telegram's command menu."""
    for name, handler in (
        ("start", cmd_start),
        ("help", cmd_help),
        ("info", cmd_info),
        ("t", cmd_tokens),
        ("new", conversations.cmd_new),
        ("clear", conversations.cmd_new),  # a fresh start, as /clear always was; the old one is kept
        ("history", conversations.cmd_history),
        ("retry", turns.cmd_retry),
        ("export", conversations.cmd_export),
        ("model", cmd_model),
        ("system", cmd_system),
        ("preset", cmd_preset),
        ("sessions", cmd_sessions),
        ("lang", cmd_lang),
        ("usage", team.cmd_usage),
        ("settings", settings.cmd_settings),
    ):
        app.commands[name] = Command(name, handler)
    for name, handler in (("limit", team.cmd_limit), ("allow", team.cmd_allow), ("deny", team.cmd_deny)):
        app.commands[name] = Command(name, handler, admin=True)


def handle(app: App, inc: Incoming) -> None:
    """Run the handler for one Incoming; any failure ends this turn only, with a short apology."""
    try:
        app.access.seen(inc.user_id, inc.user_name, inc.language)
        # First, before anything is downloaded or sent anywhere.
        if not app.access.allowed(inc.user_id):
            refuse(app, inc)
        elif inc.kind == "command":
            command = app.commands.get(inc.command)
            (command.handler if command else cmd_unknown)(app, inc)
        elif inc.kind == "callback":
            handle_callback(app, inc)
        elif inc.kind == "text":
            turns.handle_chat(app, inc)
        elif inc.kind == "edited":
            app.reply(inc, app.t(inc, "errors.edited"))
        else:
            attachments.handle(app, inc, turns.handle_chat)
    except TelegramError as exc:
        log.error("update %s: Telegram refused the reply: %s", inc.update_id, exc.description)
    except Exception:
        log.exception("update %s failed", inc.update_id)
        try:
            app.reply(inc, app.t(inc, "errors.generic"))
        except Exception:
            log.exception("update %s: could not even apologise", inc.update_id)


def stop_generation(app: App, stop: StopGeneration) -> None:
    """The stop control on a draft: cancel that answer (called from the polling thread)."""
    flag = app.active.get((stop.chat_id, stop.draft_id))
    if flag is not None:
        flag.set()


def refuse(app: App, inc: Incoming) -> None:
    if inc.kind == "callback":
        app.sender.answer_callback(inc.callback_id, app.t(inc, "errors.not_allowed_button"))
        return
    app.reply(inc, app.t(inc, "errors.not_allowed", user_id=inc.user_id))
    team.on_stranger(app, inc)


# -- commands ---------------------------------------------------------------------------------------

def cmd_start(app: App, inc: Incoming) -> None:
    """Greet the user and say how the bot works."""
    session = app.session(inc)
    app.reply(inc, app.t(inc, "start.text", name=html.escape(inc.user_name.split(" (")[0]),
                         model=html.escape(session.model)) + "\n\n" + _command_lines(app, inc))


def cmd_help(app: App, inc: Incoming) -> None:
    """List the commands."""
    app.reply(inc, "\n".join([app.t(inc, "help.title"), _command_lines(app, inc), "",
                              app.t(inc, "help.footer")]))


def cmd_info(app: App, inc: Incoming) -> None:
    """Version, current model, available models, presets, commands and this conversation's figures."""
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    used, window = session.prompt_tokens(), model.context_window
    lang = app.lang(inc)
    lines = [
        app.t(inc, "info.title", version=VERSION,
              uptime=app.catalog.duration(lang, time.time() - app.started)),
        app.t(inc, "info.model", model=html.escape(model.id), window=f"{window:,}"),
        "",
        app.t(inc, "info.conversation"),
        app.t(inc, "info.messages", count=len(session.messages)),
        app.t(inc, "info.tokens", approx=chat.approx(model), used=f"{used:,}", window=f"{window:,}",
              share=f"{used / window:.1%}"),
        app.t(inc, "info.prompt", label=_prompt_label(app, inc, session)),
        "",
        app.t(inc, "info.models"),
        _model_list(app, inc, model.id),
        "",
        app.t(inc, "info.presets"),
        *(f"{html.escape(p.name)}: {html.escape(p.description_in(lang) or p.title_in(lang))}"
          for p in app.presets.values()),
        "",
        app.t(inc, "info.commands"),
        _command_lines(app, inc),
    ]
    app.reply(inc, "\n".join(lines))


def cmd_tokens(app: App, inc: Incoming) -> None:
    """Tokens in the conversation by our count, the window and its share, and tokens the API reported."""
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    chat.sync_encoding(session, model)
    used, window = session.prompt_tokens(), model.context_window
    usage = session.usage
    approx = chat.approx(model)
    cost = team.tokens_cost_line(app, inc)
    app.reply(inc, "\n".join([
        app.t(inc, "tokens.title", model=html.escape(model.id),
              estimated=app.t(inc, "tokens.estimated") if approx else ""),
        app.t(inc, "tokens.conversation", approx=approx, used=f"{used:,}", count=len(session.messages)),
        app.t(inc, "tokens.window", window=f"{window:,}", share=f"{used / window:.1%}"),
        app.t(inc, "tokens.reserve", reserve=f"{model.reply_reserve(app.config.max_reply_tokens):,}"),
        app.t(inc, "tokens.strategy", name=app.config.context_strategy,
              what=app.t(inc, f"context.{app.config.context_strategy}")),
        app.t(inc, "tokens.spent", requests=f"{usage.requests:,}", prompt_tokens=f"{usage.prompt_tokens:,}",
              completion=f"{usage.completion_tokens:,}", total=f"{usage.total:,}"),
        *([cost] if cost else []),
    ]))


def cmd_model(app: App, inc: Incoming) -> None:
    """`/model` shows a picker; `/model <id>` switches the user's model."""
    session = app.session(inc)
    wanted = clean_arg(inc.args)
    if not wanted:
        app.reply(inc, app.t(inc, "model.current", model=html.escape(session.model)),
                  markup=_model_keyboard(app, session.model))
        return
    try:
        model = app.registry.get(wanted)
    except UnknownModel as exc:
        shown = wanted if len(wanted) <= 64 else wanted[:64] + "…"
        if exc.reason:  # described, but its provider is off: say why, not "unknown"
            app.reply(inc, app.t(inc, "model.unavailable", model=html.escape(shown),
                                 reason=html.escape(exc.reason)))
            return
        close = difflib.get_close_matches(wanted, exc.known, n=5, cutoff=0.5)
        offered = close or _featured_ids(app)
        codes = ", ".join(f"<code>{html.escape(m)}</code>" for m in offered[:MAX_LISTED_MODELS])
        if not close and len(offered) > MAX_LISTED_MODELS:
            codes += " " + app.t(inc, "model.more", count=len(offered) - MAX_LISTED_MODELS)
        hint = app.t(inc, "model.close" if close else "model.available", models=codes)
        app.reply(inc, app.t(inc, "model.unknown", model=html.escape(shown)) + "\n" + hint)
        return
    app.reply(inc, _switch_model(app, inc, session, model))


def _featured_ids(app: App) -> list[str]:
    return [m.id for m in app.registry.available(featured_only=True)]


def _switch_model(app: App, inc: Incoming, session: Session, model: ModelInfo) -> str:
    session.model = model.id
    chat.sync_encoding(session, model)
    key = "model.switched"
    # Only a reset drops the history here: trimming and summarising take care of it at the next turn.
    over = session.prompt_tokens() > model.context_window - model.reply_reserve(app.config.max_reply_tokens)
    app.store.save(session)
    if over and app.config.context_strategy is context.Strategy.RESET:
        app.store.new_conversation(session.place)  # the old one is kept in /history
        key = "model.switched_reset"
    return app.t(inc, key, model=html.escape(model.id), window=f"{model.context_window:,}")


def cmd_system(app: App, inc: Incoming) -> None:
    """`/system` shows the prompt, `/system <text>` sets it, `/system default` restores the default."""
    session = app.session(inc)
    text = clean_arg(inc.args, keep_newlines=True)
    if not text:
        app.reply(inc, app.t(inc, "system.show", label=_prompt_label(app, inc, session, preview_known=False),
                             prompt=html.escape(session.system_prompt)))
        return
    if text.lower() == "default":
        _set_prompt(app, session, app.config.system_prompt, None)
        app.reply(inc, app.t(inc, "system.restored"))
        return
    if len(text) > MAX_SYSTEM_PROMPT:
        app.reply(inc, app.t(inc, "system.too_long", length=f"{len(text):,}", limit=f"{MAX_SYSTEM_PROMPT:,}"))
        return
    model = app.registry.resolve(session.model)
    tokens = chat.counter(model).message("system", text)
    if tokens + model.reply_reserve(app.config.max_reply_tokens) >= model.context_window // 2:
        app.reply(inc, app.t(inc, "system.too_many_tokens", tokens=f"{tokens:,}",
                             model=html.escape(model.id)))
        return
    _set_prompt(app, session, text, None)
    app.reply(inc, app.t(inc, "system.set"))


def _set_prompt(app: App, session: Session, prompt: str, preset: str | None) -> None:
    model = app.registry.resolve(session.model)
    session.set_system_prompt(prompt, chat.counter(model).message("system", prompt), preset)
    app.store.save(session)
    app.store.new_conversation(session.place)  # the prompt applies from the start; the old one is kept


def cmd_preset(app: App, inc: Incoming) -> None:
    """`/preset` shows the presets as buttons; `/preset <name>` switches to one."""
    name = clean_arg(inc.args).lower()
    if not name:
        app.reply(inc, app.t(inc, "preset.pick"), markup=_preset_keyboard(app, inc, app.session(inc).preset))
        return
    preset = app.presets.get(name)
    if preset is None:
        app.reply(inc, app.t(inc, "preset.unknown", name=html.escape(name[:64]),
                             presets=", ".join(f"<code>{html.escape(p)}</code>" for p in app.presets)))
        return
    app.reply(inc, _apply_preset(app, inc, app.session(inc), preset))


def _apply_preset(app: App, inc: Incoming, session: Session, preset: Preset) -> str:
    switched = bool(preset.model and preset.model in app.registry.models)
    if switched:
        session.model = str(preset.model)
    prompt = preset.prompt
    language = inc.language
    if language and re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?", language):
        # "Into the user's language" (translator, teacher) needs to know it.
        prompt += f"\n\nThe user's Telegram app language code is {language}."
    _set_prompt(app, session, prompt, preset.name)
    lang = app.lang(inc)
    values = {"title": html.escape(preset.title_in(lang)),
              "description": html.escape(preset.description_in(lang))}
    if switched:
        return app.t(inc, "preset.on_model", model=html.escape(session.model), **values)
    return app.t(inc, "preset.on", **values)


def cmd_sessions(app: App, inc: Incoming) -> None:
    """Admins see every conversation in use; anyone else sees only their own here."""
    admin = app.config.is_admin(inc.user_id)
    sessions = app.store.all() if admin else [app.session(inc)]
    sessions.sort(key=lambda s: s.conversation.last_active, reverse=True)
    lines = [app.t(inc, "sessions.all", count=len(sessions)) if admin else app.t(inc, "sessions.own")]
    for s in sessions[:MAX_LISTED_SESSIONS]:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.conversation.last_active))
        lines.append(app.t(inc, "sessions.line", user_id=s.user_id, name=html.escape(s.profile.name or "?"),
                           model=html.escape(s.model), messages=len(s.messages),
                           tokens=f"{s.prompt_tokens():,}", when=when))
    if len(sessions) > MAX_LISTED_SESSIONS:
        lines.append(app.t(inc, "sessions.more", count=f"{len(sessions) - MAX_LISTED_SESSIONS:,}"))
    app.reply(inc, "\n".join(lines))


def cmd_lang(app: App, inc: Incoming) -> None:
    """`/lang` shows the language with buttons; `/lang en|ru` chooses it (kept for the user)."""
    wanted = clean_arg(inc.args).lower()
    if not wanted:
        app.reply(inc, app.t(inc, "lang.current"), markup=_lang_keyboard(app))
        return
    if wanted not in app.catalog.languages:
        app.reply(inc, app.t(inc, "lang.unknown", languages=", ".join(app.catalog.languages)))
        return
    app.reply(inc, _set_language(app, inc, wanted))


def _set_language(app: App, inc: Incoming, language: str) -> str:
    profile = app.store.profile(inc.user_id, inc.user_name)
    profile.language = language
    app.store.save_profile(profile)
    return app.t(inc, "lang.set")


def cmd_unknown(app: App, inc: Incoming) -> None:
    app.reply(inc, app.t(inc, "errors.unknown_command", name=html.escape(inc.command[:64])))


# -- buttons ----------------------------------------------------------------------------------------

def handle_callback(app: App, inc: Incoming) -> None:
    """Every inline button lands here: `model:<key>`, `preset:<name>`, `lang:<code>`, `settings:…` and
    /history's."""
    kind, _, value = inc.text.partition(":")
    if kind == "access":
        team.on_access_button(app, inc, value)
        return
    if kind == conversations.BUTTON:
        conversations.on_button(app, inc, value)
        return
    session = app.session(inc)
    markup: types.InlineKeyboardMarkup | None
    if kind == "model" and (model := app.registry.by_key(value)) is not None:
        confirmation = _switch_model(app, inc, session, model)
        markup = _model_keyboard(app, session.model)
    elif kind == "preset" and (preset := app.presets.get(value)) is not None:
        confirmation = _apply_preset(app, inc, session, preset)
        markup = _preset_keyboard(app, inc, session.preset)
    elif kind == "lang" and value in app.catalog.languages:
        confirmation, markup = _set_language(app, inc, value), None
    elif kind == "settings" and (page := settings.on_button(app, inc, value)) is not None:
        confirmation, markup = page
    else:
        app.sender.answer_callback(inc.callback_id, app.t(inc, "errors.button_expired"))
        return
    app.sender.answer_callback(inc.callback_id, app.t(inc, "buttons.done"))
    app.edit(inc, confirmation, markup)


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


def _preset_keyboard(app: App, inc: Incoming, current: str | None) -> types.InlineKeyboardMarkup:
    markup = types.InlineKeyboardMarkup(row_width=2)
    lang = app.lang(inc)
    markup.add(*(types.InlineKeyboardButton(f"{'✅ ' if p.name == current else ''}{p.title_in(lang)}",
                                            callback_data=f"preset:{p.name}")
                 for p in app.presets.values()))
    return markup


def _lang_keyboard(app: App) -> types.InlineKeyboardMarkup:
    markup = types.InlineKeyboardMarkup(row_width=2)
    markup.add(*(types.InlineKeyboardButton(LANGUAGE_NAMES.get(code, code), callback_data=f"lang:{code}")
                 for code in app.catalog.languages))
    return markup


# -- wording helpers --------------------------------------------------------------------------------



def _command_lines(app: App, inc: Incoming) -> str:
    admin = app.access.is_admin(inc.user_id)
    return "\n".join(f"/{c.name}: {html.escape(app.t(inc, f'commands.{c.name}'))}"
                     for c in app.commands.values() if admin or not c.admin)


def _model_list(app: App, inc: Incoming, current: str) -> str:
    lines = []
    featured = app.registry.available(featured_only=True)
    for model in featured:
        mark = " ✅" if model.id == current else ""
        when = app.t(inc, "info.retires", date=model.shutdown) if model.shutdown else ""
        lines.append(app.t(inc, "info.model_line", model=html.escape(model.id),
                           provider=html.escape(model.provider), window=f"{model.context_window:,}",
                           retires=when) + mark)
    if more := len(app.registry.models) - len(featured):
        lines.append(app.t(inc, "info.models_more", count=more))
    return "\n".join(lines) or app.t(inc, "info.none")


def _prompt_label(app: App, inc: Incoming, session: Session, preview_known: bool = True) -> str:
    """Which system prompt is in force, with its start so the user recognises it."""
    preview = " ".join(session.system_prompt.split())
    preview = html.escape(preview[:80] + ("…" if len(preview) > 80 else ""))
    if session.preset and session.preset in app.presets:
        title = app.presets[session.preset].title_in(app.lang(inc))
        label = app.t(inc, "prompt.preset", title=html.escape(title))
    elif session.system_prompt == app.config.system_prompt:
        label = app.t(inc, "prompt.default")
    else:
        return app.t(inc, "prompt.custom", preview=preview)
    return f"{label}: <i>{preview}</i>" if preview_known else label
