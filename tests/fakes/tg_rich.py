"""Rich messages of the fake Telegram (Bot API 10.1): `rich_message` checked as strictly as Telegram does.

Only Markdown sources are supported (html and blocks answer a 400 here, a documented simplification).
Checked: exactly one source; the documented limits (32,768 characters of text, 500 blocks counting
nested blocks, list items and table rows, 20 table columns, nesting depth 16); raw HTML only with the
tags rich messages know (`<tg-thinking>` in drafts only); media only by `tg://` file links (drafts take
none); links only with schemes Telegram opens. The visible text is the Markdown rendered and stripped
of markup, which is what `FakeTelegram.messages` shows for a rich message.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from .tg_html import utf16_len
from .tg_wire import bad_request

MAX_CHARS = 32_768
MAX_BLOCKS = 500
MAX_COLUMNS = 20
MAX_DEPTH = 16
_BLOCKS = {"paragraph_open", "heading_open", "blockquote_open", "bullet_list_open", "ordered_list_open",
           "list_item_open", "table_open", "tr_open", "fence", "code_block", "html_block", "hr"}
_KNOWN_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "br", "p", "sub", "sup",
    "mark", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "details", "summary", "hr",
    "table", "thead", "tbody", "tr", "th", "td", "caption", "aside", "footer", "figure", "figcaption",
    "tg-spoiler", "tg-math", "tg-math-block", "tg-emoji", "tg-thinking",
}  # fmt: skip
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)[^<>]*>|<!--|<\?|<!")
_LINK_SCHEMES = re.compile(r"(?i)(?:https?|tg|mailto|tel)://?|#")
_MEDIA = re.compile(r"(?i)tg://(?:photo|video|document|audio)\?id=")
_MD = MarkdownIt("commonmark").enable("table").enable("strikethrough")


@dataclass(frozen=True)
class RichContent:
    source: str  # the Markdown as sent
    text: str  # what the user reads


def parse_rich(raw: Any, *, draft: bool) -> RichContent:
    """Validate an InputRichMessage (already JSON-decoded); raise Telegram's 400 if it is refused."""
    if not isinstance(raw, dict):
        raise bad_request("can't parse rich message JSON object")
    sources = [k for k in ("markdown", "html", "blocks") if raw.get(k) is not None]
    if len(sources) != 1:
        raise bad_request("RICH_MESSAGE_EMPTY" if not sources else "RICH_MESSAGE_INVALID")
    if sources != ["markdown"] or not isinstance(raw["markdown"], str):
        raise bad_request("RICH_MESSAGE_INVALID")  # this fake takes Markdown sources only
    source = raw["markdown"]
    tokens = _MD.parse(source)
    _check_html(tokens, draft)
    _check_inline(tokens, draft)
    if sum(1 for t in tokens if t.type in _BLOCKS) > MAX_BLOCKS:
        raise bad_request("RICH_MESSAGE_BLOCK_COUNT_INVALID")
    if max((t.level for t in tokens), default=0) >= MAX_DEPTH:
        raise bad_request("RICH_MESSAGE_DEPTH_INVALID")
    if _widest_row(tokens) > MAX_COLUMNS:
        raise bad_request("RICH_MESSAGE_TABLE_INVALID")
    text = visible_text(source)
    if not text.strip() and "tg-thinking" not in source:
        raise bad_request("RICH_MESSAGE_EMPTY")
    if utf16_len(text) > MAX_CHARS:
        raise bad_request("RICH_MESSAGE_TOO_LONG")
    return RichContent(source, text)


def visible_text(source: str) -> str:
    """The Markdown rendered, tags stripped and entities decoded: roughly what a client shows."""
    rendered = _MD.render(source)
    return html.unescape(re.sub(r"<[^<>]*>", "", rendered)).strip()


def _check_html(tokens: list[Token], draft: bool) -> None:
    for tok in _walk(tokens):
        if tok.type not in ("html_block", "html_inline"):
            continue
        for match in _TAG.finditer(tok.content):
            name = (match.group(2) or "").lower()
            if not name:
                raise bad_request("can't parse rich message: HTML comments and declarations are not allowed")
            if name not in _KNOWN_TAGS:
                raise bad_request(f'can\'t parse rich message: unsupported start tag "{name}"')
            if name == "tg-thinking" and not draft:
                raise bad_request("RICH_MESSAGE_BLOCK_INVALID")  # thinking blocks exist in drafts only


def _check_inline(tokens: list[Token], draft: bool) -> None:
    for tok in _walk(tokens):
        if tok.type == "image":
            src = str(tok.attrGet("src") or "")
            if draft or not _MEDIA.match(src):
                raise bad_request("RICH_MESSAGE_MEDIA_INVALID")  # no upload by URL; nothing in drafts
        elif tok.type == "link_open":
            href = str(tok.attrGet("href") or "")
            if not _LINK_SCHEMES.match(href):
                raise bad_request(f"can't parse rich message: unsupported URL \"{href[:64]}\"")


def _walk(tokens: list[Token]) -> list[Token]:
    out = []
    for tok in tokens:
        out.append(tok)
        out.extend(tok.children or [])
    return out


def _widest_row(tokens: list[Token]) -> int:
    """The most cells in any table row of the message."""
    widest = cells = 0
    for tok in tokens:
        if tok.type == "tr_open":
            cells = 0
        elif tok.type in ("th_open", "td_open"):
            cells += 1
            widest = max(widest, cells)
    return widest
