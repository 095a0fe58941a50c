"""Running the bot for a team: usage and quotas, and access granted from Telegram.

Thin handlers for /usage, /limit, /allow and /deny, the Allow / Ignore buttons admins get when
someone who is not allowed writes, and the wording of a quota refusal and of costs. The
decisions and the bookkeeping live in quotas.py and access.py; only admins may change them,
whatever a button claims.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from telebot import types

from quotas import MONTHLY, Refusal, Tally, money
from router import Incoming

if TYPE_CHECKING:
    from app import App

MAX_LISTED_USERS = 50  # /usage all: the heaviest users, so the answer stays one message


# -- quotas -------------------------------------------------------------------------------------------

def quota_refusal(app: App, inc: Incoming, refusal: Refusal) -> str:
    """The one sentence a user past a limit gets instead of an answer."""
    wait = app.catalog.duration(app.lang(inc), refusal.wait + 59)  # "in 0m" would be wrong until it is
    timezone = html.escape(app.quotas.timezone)
    if refusal.limit == MONTHLY:
        return app.t(inc, "quota.monthly", limit=_usd(refusal.allowed), used=_usd(refusal.used),
                     date=refusal.resets.date().isoformat(), timezone=timezone, wait=wait)
    return app.t(inc, "quota.daily", limit=f"{int(refusal.allowed):,}", used=f"{int(refusal.used):,}",
                 timezone=timezone, wait=wait)


def cost_note(app: App, inc: Incoming, tally: Tally) -> str:
    """`, ≈$0.0123` for a period's cost where prices are known; nothing at all where none is."""
    if not tally.priced:
        return ""
    return app.t(inc, "usage.cost", amount=_usd(tally.cost)) + _unpriced(app, inc, tally)


def tokens_cost_line(app: App, inc: Incoming) -> str | None:
    """/t's estimated cost line, or None when no price is known for what was used."""
    today, month = app.quotas.today(inc.user_id), app.quotas.month(inc.user_id)
    if not month.priced:
        return None
    return app.t(inc, "tokens.cost", today=_usd(today.cost), month=_usd(month.cost),
                 unpriced=_unpriced(app, inc, month))


def _unpriced(app: App, inc: Incoming, tally: Tally) -> str:
    if not tally.unpriced_tokens:
        return ""
    return app.t(inc, "usage.unpriced", tokens=f"{tally.unpriced_tokens:,}")


def cmd_usage(app: App, inc: Incoming) -> None:
    """`/usage`: your tokens and costs today and this month against the limits; `/usage all` for admins."""
    if inc.args.strip().lower() == "all":
        if not app.access.is_admin(inc.user_id):
            app.reply(inc, app.t(inc, "admin.only"))
            return
        app.reply(inc, _usage_all(app, inc))
        return
    quotas, user_id = app.quotas, inc.user_id
    today, month = quotas.today(user_id), quotas.month(user_id)
    lines = [
        app.t(inc, "usage.title", timezone=html.escape(quotas.timezone)),
        app.t(inc, "usage.today", tokens=f"{today.tokens:,}", requests=f"{today.requests:,}",
              cost=cost_note(app, inc, today)),
        app.t(inc, "usage.month", tokens=f"{month.tokens:,}", requests=f"{month.requests:,}",
              cost=cost_note(app, inc, month)),
    ]
    if quotas.exempt(user_id):
        lines.append(app.t(inc, "usage.exempt"))
    else:
        limit = quotas.daily_limit(user_id)
        left = max(limit - today.tokens, 0)
        lines.append(app.t(inc, "usage.daily_limit", limit=f"{limit:,}", left=f"{left:,}")
                     if limit else app.t(inc, "usage.no_daily_limit"))
        if quotas.monthly_cost:
            lines.append(app.t(inc, "usage.monthly_limit", limit=_usd(quotas.monthly_cost),
                               left=_usd(max(quotas.monthly_cost - month.cost, 0))))
    app.reply(inc, "\n".join(lines))


def _usage_all(app: App, inc: Incoming) -> str:
    quotas = app.quotas
    rows = [(uid, quotas.today(uid), quotas.month(uid)) for uid in quotas.users()]
    if not rows:
        return app.t(inc, "usage.all_none")
    rows.sort(key=lambda row: row[2].tokens, reverse=True)
    lines = [app.t(inc, "usage.all_title", count=len(rows))]
    for uid, today, month in rows[:MAX_LISTED_USERS]:
        own = quotas.own_limit(uid)
        limit = "" if own is None else app.t(inc, "usage.all_limit", limit=_limit_text(app, inc, own))
        lines.append(app.t(inc, "usage.all_line", user_id=uid, name=html.escape(_name(app, uid) or "?"),
                           today=f"{today.tokens:,}", month=f"{month.tokens:,}",
                           cost=cost_note(app, inc, month), limit=limit))
    if len(rows) > MAX_LISTED_USERS:
        lines.append(app.t(inc, "usage.more", count=f"{len(rows) - MAX_LISTED_USERS:,}"))
    return "\n".join(lines)


def cmd_limit(app: App, inc: Incoming) -> None:
    """`/limit <user id> <tokens per day>` (admins): a user's own daily limit (0 = none, or `default`)."""
    if not app.access.is_admin(inc.user_id):
        app.reply(inc, app.t(inc, "admin.only"))
        return
    args = inc.args.split()
    default = _limit_text(app, inc, app.quotas.daily_tokens)
    if not args or len(args) > 2:
        app.reply(inc, app.t(inc, "limit.help", limit=default))
        return
    user_id = _user_id(app, inc, args[0])
    if user_id is None:
        return
    if len(args) == 1:
        app.reply(inc, app.t(inc, "limit.show", user_id=user_id,
                             limit=_limit_text(app, inc, app.quotas.daily_limit(user_id)),
                             used=f"{app.quotas.today(user_id).tokens:,}"))
        return
    value = args[1].lower().replace("_", "").replace(",", "")
    if value == "default":
        app.quotas.set_daily_limit(user_id, None)
        app.reply(inc, app.t(inc, "limit.default", user_id=user_id, limit=default))
    elif value.isascii() and value.isdigit() and len(value) <= 12:
        tokens = int(value)
        app.quotas.set_daily_limit(user_id, tokens)
        key = "limit.set" if tokens else "limit.unlimited"
        app.reply(inc, app.t(inc, key, user_id=user_id, limit=f"{tokens:,}"))
    else:
        app.reply(inc, app.t(inc, "limit.bad_number", value=html.escape(args[1][:32])))


def _limit_text(app: App, inc: Incoming, tokens: int) -> str:
    return f"{tokens:,}" if tokens else app.t(inc, "limit.none")


# -- access -------------------------------------------------------------------------------------------

def on_stranger(app: App, inc: Incoming) -> None:
    """Someone who is not allowed wrote (and was refused): ask every admin, once per user."""
    admins = app.config.admin_user_ids
    if not admins or not app.access.ask(inc.user_id):
        return
    notifier = app.notifier
    for admin in sorted(admins):
        markup = types.InlineKeyboardMarkup(row_width=2)
        markup.add(
            types.InlineKeyboardButton(notifier.text(admin, "access.allow_button"),
                                       callback_data=f"access:allow:{inc.user_id}"),
            types.InlineKeyboardButton(notifier.text(admin, "access.ignore_button"),
                                       callback_data=f"access:ignore:{inc.user_id}"))
        notifier.tell(admin, notifier.text(admin, "access.request", who=_who(app, inc.user_id)), markup)


def on_access_button(app: App, inc: Incoming, value: str) -> None:
    """Allow / Ignore under an access request. Anyone but an admin gets a refusal and changes nothing."""
    if not app.access.is_admin(inc.user_id):
        app.sender.answer_callback(inc.callback_id, app.t(inc, "admin.only_button"))
        return
    action, _, raw = value.partition(":")
    user_id = _parse_id(raw)
    if action not in ("allow", "ignore") or user_id is None:
        app.sender.answer_callback(inc.callback_id, app.t(inc, "errors.button_expired"))
        return
    if action == "allow":
        confirmation = _grant(app, inc, user_id)
    else:
        app.access.ignore(user_id, by=inc.user_id)
        confirmation = app.t(inc, "access.ignored", who=_who(app, user_id), user_id=user_id)
    app.sender.answer_callback(inc.callback_id, app.t(inc, "buttons.done"))
    if inc.message_id is not None:
        app.sender.edit_part(inc.chat_id, inc.message_id, confirmation)


def cmd_allow(app: App, inc: Incoming) -> None:
    """`/allow <user id>` (admins): let a user in at once, also one taken away with /deny."""
    if (user_id := _admin_target(app, inc)) is not None:
        app.reply(inc, _grant(app, inc, user_id))


def cmd_deny(app: App, inc: Incoming) -> None:
    """`/deny <user id>` (admins): take access away, also from a user of ALLOWED_USER_IDS, until /allow."""
    if (user_id := _admin_target(app, inc)) is None:
        return
    if app.access.is_admin(user_id):
        app.reply(inc, app.t(inc, "access.admin", who=_who(app, user_id)))
        return
    app.access.deny(user_id, by=inc.user_id)
    app.reply(inc, app.t(inc, "access.denied", who=_who(app, user_id), user_id=user_id))


def _grant(app: App, inc: Incoming, user_id: int) -> str:
    if not app.access.grant(user_id, by=inc.user_id):
        return app.t(inc, "access.already", who=_who(app, user_id))
    notifier = app.notifier
    notifier.tell(user_id, notifier.text(user_id, "access.welcome"))
    return app.t(inc, "access.allowed", who=_who(app, user_id))


def _admin_target(app: App, inc: Incoming) -> int | None:
    """The user id an admin command names; None after telling why there is none."""
    if not app.access.is_admin(inc.user_id):
        app.reply(inc, app.t(inc, "admin.only"))
        return None
    args = inc.args.split()
    if len(args) != 1:
        app.reply(inc, app.t(inc, "access.help", command=inc.command))
        return None
    return _user_id(app, inc, args[0])


def _user_id(app: App, inc: Incoming, raw: str) -> int | None:
    user_id = _parse_id(raw)
    if user_id is None:
        app.reply(inc, app.t(inc, "admin.bad_id", value=html.escape(raw[:32]), command=inc.command))
    return user_id


def _parse_id(raw: str) -> int | None:
    # Telegram user ids are positive and below 2^52.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 16 and int(raw) > 0 else None


def _name(app: App, user_id: int) -> str:
    profile = app.store.find_profile(user_id)
    return (profile.name if profile else "") or app.access.name(user_id)


def _who(app: App, user_id: int) -> str:
    """`Alice (@alice) (<code>42</code>)`, or the bare id for someone the bot has never seen."""
    name = _name(app, user_id)
    return f"<b>{html.escape(name)}</b> (<code>{user_id}</code>)" if name else f"<code>{user_id}</code>"


def _usd(usd: float) -> str:
    """A cost for HTML text ("<$0.0001" must not read as a tag)."""
    return html.escape(money(usd))
