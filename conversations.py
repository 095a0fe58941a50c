"""Several conversations per user: /new (and /clear), /history with its buttons, /export.

Each place (a private chat or one of its topics, a group or forum topic with one of its members) has
one current conversation. /new keeps it in the archive and starts another; /history lists the
user's conversations in this chat (all its topics), most recent first, to continue one (it becomes
this place's current one) or delete it; /export sends the current one, or all of them, as a Markdown
document. Asking again (/retry) is a chat turn: it lives with the turn in commands.py.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from telebot import types

import context
from sessions import Conversation, Message

if TYPE_CHECKING:
    from app import App
    from router import Incoming

log = logging.getLogger(__name__)

PAGE_SIZE = 8  # conversations per /history page: two buttons each, well under Telegram's 100
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024  # what a bot may upload through the Bot API
BUTTON = "hist"  # callback data: hist:<action>:<number>, see on_button


# -- /new -------------------------------------------------------------------------------------------

def cmd_new(app: App, inc: Incoming) -> None:
    """Start a new conversation here; the current one stays in /history. Model and prompt stay."""
    before = app.session(inc).conversation
    after = app.store.new_conversation(inc.place).conversation
    if after is before:
        app.reply(inc, app.t(inc, "new.already"))
    else:
        app.reply(inc, app.t(inc, "new.done", count=len(before.messages)))


# -- /history ---------------------------------------------------------------------------------------

def cmd_history(app: App, inc: Incoming) -> None:
    """`/history` lists the conversations as buttons; `/history clear` deletes every one of them."""
    argument = inc.args.strip().lower()
    if argument == "clear":
        count = app.store.delete_all(inc.place)
        log.info("user %s deleted their %d conversations in chat %s", inc.user_id, count, inc.chat_id)
        app.reply(inc, app.t(inc, "history.cleared", count=count))
    elif argument:
        app.reply(inc, app.t(inc, "history.usage"))
    else:
        text, markup = _listing(app, inc, page=0)
        app.reply(inc, text, markup=markup)


def on_button(app: App, inc: Incoming, value: str) -> None:
    """A /history button: `page:<n>`, `open:<id>`, `del:<id>` (asks to confirm), `delok:<id>`."""
    action, _, number = value.partition(":")
    if not (number.isascii() and number.isdigit()) or action not in ("page", "open", "del", "delok"):
        app.sender.answer_callback(inc.callback_id, app.t(inc, "errors.button_expired"))
        return
    target = app.store.find(inc.place, int(number)) if action != "page" else None
    if action != "page" and target is None:
        app.sender.answer_callback(inc.callback_id, app.t(inc, "history.gone"))
        app.edit(inc, *_listing(app, inc, page=0))
        return
    app.sender.answer_callback(inc.callback_id, app.t(inc, "buttons.done"))
    if action == "page":
        app.edit(inc, *_listing(app, inc, page=int(number)))
    elif action == "open" and target is not None:
        session = app.store.resume(inc.place, target.id)
        header = app.t(inc, "history.resumed", title=_title(app, inc, target),
                       count=len(session.messages) if session else 0)
        app.edit(inc, *_listing(app, inc, page=0, header=header))
    elif action == "del" and target is not None:
        markup = types.InlineKeyboardMarkup()
        markup.row(*(types.InlineKeyboardButton(app.t(inc, key), callback_data=f"{BUTTON}:{data}")
                     for key, data in (("history.delete_yes", f"delok:{target.id}"),
                                       ("history.delete_no", "page:0"))))
        app.edit(inc, app.t(inc, "history.confirm", title=_title(app, inc, target),
                              count=len(target.messages)), markup)
    elif action == "delok" and target is not None:
        app.store.delete(inc.place, target.id)
        header = app.t(inc, "history.deleted", title=_title(app, inc, target))
        app.edit(inc, *_listing(app, inc, page=0, header=header))


def _listing(app: App, inc: Incoming, page: int,
             header: str = "") -> tuple[str, types.InlineKeyboardMarkup | None]:
    """The text and buttons of one /history page (the place's current conversation marked ✅)."""
    found = [c for c in app.store.conversations(inc.place) if c.messages]
    lead = f"{header}\n\n" if header else ""
    if not found:
        return lead + app.t(inc, "history.empty"), None
    pages = (len(found) + PAGE_SIZE - 1) // PAGE_SIZE
    page = min(max(page, 0), pages - 1)
    markup = types.InlineKeyboardMarkup()
    for conversation in found[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]:
        here = conversation.place == inc.place and app.store.is_current(conversation)
        when = time.strftime("%Y-%m-%d", time.gmtime(conversation.last_active))
        label = f"{'✅ ' if here else ''}{conversation.title or app.t(inc, 'history.untitled')} · {when}"
        markup.row(types.InlineKeyboardButton(label, callback_data=f"{BUTTON}:open:{conversation.id}"),
                   types.InlineKeyboardButton("🗑", callback_data=f"{BUTTON}:del:{conversation.id}"))
    if pages > 1:
        markup.row(*[types.InlineKeyboardButton(arrow, callback_data=f"{BUTTON}:page:{target}")
                     for arrow, target in (("◀", page - 1), ("▶", page + 1)) if 0 <= target < pages])
    text = lead + app.t(inc, "history.title")
    if pages > 1:
        text += " " + app.t(inc, "history.page", page=page + 1, pages=pages)
    return text, markup


def _title(app: App, inc: Incoming, conversation: Conversation) -> str:
    return html.escape(conversation.title or app.t(inc, "history.untitled"))


# -- /export ----------------------------------------------------------------------------------------

def cmd_export(app: App, inc: Incoming) -> None:
    """`/export`: the current conversation as a Markdown file; `/export all`: every one here."""
    argument = inc.args.strip().lower()
    if argument not in ("", "all"):
        app.reply(inc, app.t(inc, "export.usage"))
        return
    if argument == "all":
        found = sorted((c for c in app.store.conversations(inc.place) if c.messages), key=lambda c: c.created)
        name, empty = "conversations", "export.empty_all"
    else:
        current = app.session(inc).conversation
        found = [current] if current.messages else []
        name, empty = "conversation", "export.empty"
    if not found:
        app.reply(inc, app.t(inc, empty))
        return
    data = export_markdown(app, inc, found).encode("utf-8")
    if len(data) > MAX_DOCUMENT_BYTES:
        app.reply(inc, app.t(inc, "export.too_large", size=f"{len(data) / 2**20:,.0f}"))
        return
    count = sum(len(c.messages) for c in found)
    if argument == "all":
        caption = app.t(inc, "export.caption_all", conversations=len(found), count=count)
    else:
        caption = app.t(inc, "export.caption_one", title=_title(app, inc, found[0]), count=count)
    filename = f"{name}-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    app.sender.send_document(inc.chat_id, filename, data, inc.thread_id, caption_html=caption,
                             reply_to=None if inc.private else inc.message_id)


def export_markdown(app: App, inc: Incoming, found: Sequence[Conversation]) -> str:
    """The conversations as one Markdown text: each with its title and dates, then every message
    under its role, in order (a summary note as the summary it is)."""
    single = len(found) == 1
    parts = [] if single else [f"# {app.t(inc, 'export.title_all')}"]
    for conversation in found:
        heading = "#" if single else "##"
        parts.append(f"{heading} {conversation.title or app.t(inc, 'history.untitled')}")
        meta = app.t(inc, "export.meta", started=_when(conversation.created),
                     last=_when(conversation.last_active), count=len(conversation.messages))
        parts.append(f"_{meta}_")
        parts += [_message_markdown(app, inc, m, heading + "#") for m in conversation.messages]
    return "\n\n".join(parts) + "\n"


def _message_markdown(app: App, inc: Incoming, message: Message, heading: str) -> str:
    if context.is_summary(message):
        return f"{heading} {app.t(inc, 'export.summary')}\n\n{context.summary_body(message)}"
    role = app.t(inc, f"export.{message.role}") if message.role in ("user", "assistant") else message.role
    images = f"\n\n{app.t(inc, 'export.images', count=len(message.images))}" if message.images else ""
    return f"{heading} {role}\n\n{message.content}{images}"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))
