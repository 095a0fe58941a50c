"""Markdown → Telegram HTML rendering and message splitting (and `clean_text` for any text we take in).

Pure functions only: no I/O, no Telegram objects. The renderer walks the markdown-it
token stream and emits only the small tag set Telegram's ``parse_mode=HTML`` accepts,
so the output is well-formed for any input (including half-streamed Markdown).
"""

from __future__ import annotations

import html
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import NamedTuple

from markdown_it import MarkdownIt
from markdown_it.token import Token

TELEGRAM_LIMIT = 4096

# commonmark keeps html=True so raw HTML arrives as html_block/html_inline tokens,
# which we then show escaped (the model's "<script>" is text, not markup).
_MD = MarkdownIt("commonmark").enable("table").enable("strikethrough")
# markdown-it stops at this depth and drops whatever is nested deeper.
_MAX_NESTING = int(_MD.options["maxNesting"])

_SAFE_URL = re.compile(r"(?i)(?:https?|tg|mailto):")
_MAX_HREF = 2048  # longer hrefs become plain text: a giant tag can't be reopened in every part
_LANG_JUNK = re.compile(r"[^A-Za-z0-9_+#.-]")
_TAG_RE = re.compile(r"<(/?)([A-Za-z][\w-]*)[^<>]*>")
_ENTITY_RE = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_INLINE_TAGS = {
    "strong_open": "<b>", "strong_close": "</b>",
    "em_open": "<i>", "em_close": "</i>",
    "s_open": "<s>", "s_close": "</s>",
}  # fmt: skip
# Cut-point groups in order of preference; within a group the latest match wins.
# Each entry: (separator, how many of its chars stay at the end of the part).
_BOUNDARIES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("\n\n", 0),),
    (("\n", 0),),
    ((". ", 1), ("! ", 1), ("? ", 1)),
    ((" ", 0),),
)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (how Telegram counts message length)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def clean_text(text: str) -> str:
    """Text without lone surrogates (a faulty proxy's or provider's), which no encoder downstream accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _esc_attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _safe_url(url: str) -> bool:
    return bool(_SAFE_URL.match(url)) and len(url) <= _MAX_HREF


# ---------------------------------------------------------------- Markdown → HTML


@dataclass
class _Frame:
    """An open block container (root, blockquote, list, list item) collecting child blocks."""

    kind: str
    start: int = 1
    blocks: list[str] = field(default_factory=list)

    def add(self, block: str) -> None:
        if block:
            self.blocks.append(block)


def _plain(children: list[Token]) -> str:
    """Inline tokens as bare text (table cells, image alt text)."""
    out = []
    for tok in children:
        if tok.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif tok.type == "image":
            out.append(_plain(tok.children or []))
        else:
            out.append(tok.content)
    return "".join(out)


def _inline(children: list[Token]) -> str:
    out: list[str] = []
    links: list[bool] = []  # per open link: did we emit <a>? (Telegram can't nest links)
    for k, tok in enumerate(children):
        t = tok.type
        if t in _INLINE_TAGS:
            out.append(_INLINE_TAGS[t])
        elif t == "code_inline":
            out.append(f"<code>{_esc(tok.content)}</code>")
        elif t in ("softbreak", "hardbreak"):
            out.append("\n")
        elif t == "link_open":
            href = str(tok.attrGet("href") or "")
            ok = _safe_url(href) and not any(links)
            links.append(ok)
            if ok:
                out.append(f'<a href="{_esc_attr(href)}">')
                if k + 1 < len(children) and children[k + 1].type == "link_close":
                    out.append(_esc(href))  # [](url) would otherwise be an invisible link
        elif t == "link_close":
            if links and links.pop():
                out.append("</a>")
        elif t == "image":
            src, alt = str(tok.attrGet("src") or ""), _plain(tok.children or [])
            if _safe_url(src) and not any(links):
                out.append(f'<a href="{_esc_attr(src)}">{_esc(alt or src)}</a>')
            else:
                out.append(_esc(alt))
        else:  # text, html_inline (escaped, never passed through), anything unknown
            out.append(_esc(tok.content))
    return "".join(out)


def _code(tok: Token) -> str:
    code = tok.content.rstrip("\n")
    if not code.strip():
        return ""
    words = tok.info.split() if tok.type == "fence" else []
    lang = _LANG_JUNK.sub("", words[0]) if words else ""
    if lang:
        return f'<pre><code class="language-{lang}">{_esc(code)}</code></pre>'
    return f"<pre>{_esc(code)}</pre>"


def _table(tokens: list[Token], i: int) -> tuple[str, int]:
    """Render the table starting at tokens[i] as an aligned <pre>; return (html, next index)."""
    rows: list[list[str]] = []
    aligns: list[str] = []
    while i < len(tokens) and tokens[i].type != "table_close":
        tok = tokens[i]
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type in ("th_open", "td_open") and rows:
            if tok.type == "th_open":
                aligns.append(str(tok.attrGet("style") or ""))
            inline = tokens[i + 1] if i + 1 < len(tokens) else None
            cell = _plain(inline.children or []) if inline and inline.type == "inline" else ""
            rows[-1].append(cell.strip())
        i += 1
    ncols = max((len(r) for r in rows), default=0)
    widths = [max((len(r[c]) for r in rows if c < len(r)), default=0) for c in range(ncols)]
    lines = []
    for r, row in enumerate(rows):
        cells = []
        for c, width in enumerate(widths):
            text, align = (row[c] if c < len(row) else ""), (aligns[c] if c < len(aligns) else "")
            pad = text.rjust if "right" in align else text.center if "center" in align else text.ljust
            cells.append(pad(width))
        lines.append(" | ".join(cells).rstrip())
        if r == 0:
            lines.append("-+-".join("-" * w for w in widths))
    body = "\n".join(lines).strip("\n")
    return (f"<pre>{_esc(body)}</pre>" if body.strip() else ""), i + 1


def _close_frame(frame: _Frame, stack: list[_Frame]) -> str:
    parent = stack[-1]
    if frame.kind == "list_item":
        level = sum(f.kind in ("bullet_list", "ordered_list") for f in stack) - 1
        n = parent.start + len(parent.blocks)
        marker = "• " if parent.kind == "bullet_list" else f"{n}. "
        return ("  " * level + marker + "\n".join(frame.blocks)).rstrip()
    if frame.kind == "blockquote":
        inner = "\n\n".join(frame.blocks)
        # Telegram rejects nested blockquotes, so only the outermost one gets the tag.
        if not inner or any(f.kind == "blockquote" for f in stack):
            return inner
        return f"<blockquote>{inner}</blockquote>"
    return "\n".join(frame.blocks)  # bullet_list / ordered_list / anything unexpected


def markdown_to_html(markdown: str) -> str:
    """Render Markdown as Telegram-safe HTML (only Telegram's tags, always well-formed)."""
    tokens = _MD.parse(markdown)
    if any(tok.level >= _MAX_NESTING - 1 for tok in tokens):
        return _esc(markdown.strip())  # too deep to parse without losing text: shown as written
    stack = [_Frame("root")]
    i = 0
    while i < len(tokens):
        tok, top = tokens[i], stack[-1]
        t = tok.type
        if t == "inline":
            text = _inline(tok.children or [])
            heading = i > 0 and tokens[i - 1].type == "heading_open"
            top.add(f"<b>{text}</b>" if heading and text else text)
        elif t in ("fence", "code_block"):
            top.add(_code(tok))
        elif t == "html_block":
            top.add(_esc(tok.content.rstrip("\n")))
        elif t == "hr":
            top.add("———")
        elif t == "table_open":
            block, i = _table(tokens, i)
            top.add(block)
            continue
        elif t in ("blockquote_open", "bullet_list_open", "ordered_list_open", "list_item_open"):
            stack.append(_Frame(t.removesuffix("_open"), start=int(tok.attrGet("start") or 1)))
        elif t in ("blockquote_close", "bullet_list_close", "ordered_list_close", "list_item_close"):
            frame = stack.pop()
            block = _close_frame(frame, stack)
            if frame.kind == "list_item":
                stack[-1].blocks.append(block)  # keep even empty items so numbering stays right
            else:
                stack[-1].add(block)
        i += 1
    return "\n\n".join(stack[0].blocks).rstrip()


# ---------------------------------------------------------------------- splitting


class _Tag(NamedTuple):
    start: int
    end: int
    closing: bool
    name: str
    text: str


def html_to_text(html_text: str) -> str:
    """Strip tags and unescape entities (plain-text fallback for a rendered part)."""
    return html.unescape(_TAG_RE.sub("", html_text))


def _fit(text: str, start: int, budget: int) -> int:
    """Largest end with utf16_len(text[start:end]) <= budget, in O(budget)."""
    chunk = text[start : start + max(budget, 0)]
    data = chunk.encode("utf-16-le", "surrogatepass")
    if len(data) <= 2 * budget:
        return start + len(chunk)
    units = budget
    if 0xD800 <= int.from_bytes(data[2 * units - 2 : 2 * units], "little") <= 0xDBFF:
        units -= 1  # don't split a surrogate pair
    return start + len(data[: 2 * units].decode("utf-16-le", "surrogatepass"))


class _Splitter:
    """Greedy splitter, aware of tags and entities."""

    def __init__(self, text: str, limit: int) -> None:
        self.text, self.limit = text, limit
        self.tags = [
            _Tag(m.start(), m.end(), m.group(1) == "/", m.group(2).lower(), m.group(0))
            for m in _TAG_RE.finditer(text)
        ]
        self.tag_starts = [t.start for t in self.tags]

    def _tag_at(self, pos: int) -> _Tag | None:
        """The tag strictly containing pos (cutting there would break it), if any."""
        j = bisect_left(self.tag_starts, pos) - 1
        return self.tags[j] if j >= 0 and self.tags[j].end > pos else None

    def _hard_cut(self, start: int, end: int) -> int:
        if tag := self._tag_at(end):
            end = tag.start
        amp = self.text.rfind("&", max(start, end - 12), end)
        if amp >= 0 and (m := _ENTITY_RE.match(self.text, amp)) and m.end() > end:
            end = amp
        return end

    def _cut(self, start: int, end: int) -> tuple[int, int]:
        """Choose (end of this part, start of the next) within text[start:end]."""
        if end >= len(self.text):
            return len(self.text), len(self.text)
        lo = start + (end - start) // 2  # a boundary must keep at least half the window
        for group in _BOUNDARIES:
            pos, sep, keep = max((self.text.rfind(sep, lo, end), sep, keep) for sep, keep in group)
            if pos > start and not self._tag_at(pos):
                cut, nxt = pos + keep, pos + len(sep)
                break
        else:
            cut = nxt = self._hard_cut(start, end)
        # Don't end a part with a just-opened tag (it would close empty); move it to the next part.
        j = bisect_left(self.tag_starts, cut) - 1
        while j >= 0 and self.tags[j].end == cut and not self.tags[j].closing and self.tags[j].start > start:
            cut = nxt = self.tags[j].start
            j -= 1
        return cut, nxt

    def _advance(self, stack: list[_Tag], ti: int, cut: int) -> tuple[list[_Tag], int]:
        """Apply tags ending at or before cut to a copy of the open-tag stack."""
        stack = list(stack)
        while ti < len(self.tags) and self.tags[ti].end <= cut:
            tag = self.tags[ti]
            if tag.closing:
                names = [t.name for t in stack]
                if tag.name in names:  # tolerate stray closers in hand-written HTML
                    del stack[len(names) - 1 - names[::-1].index(tag.name) :]
            elif not tag.text.endswith("/>"):
                stack.append(tag)
            ti += 1
        return stack, ti

    def split(self) -> list[str]:
        text, parts = self.text, []
        stack: list[_Tag] = []
        start, ti = 0, 0
        while start < len(text):
            prefix = "".join(t.text for t in stack)
            reserve = 0  # room kept for closing tags; grows until the chosen cut's closers fit
            while True:
                end = _fit(text, start, self.limit - utf16_len(prefix) - reserve)
                cut, nxt = self._cut(start, end)
                new_stack, new_ti = self._advance(stack, ti, cut)
                closers = "".join(f"</{t.name}>" for t in reversed(new_stack))
                if utf16_len(closers) <= reserve or cut <= start:
                    break
                reserve = utf16_len(closers)
            if cut <= start:
                if self.tags:  # formatting overhead alone exceeds the limit: drop the markup
                    rest = _TAG_RE.sub("", text[start:])
                    return parts + _Splitter(rest, self.limit).split()
                cut = nxt = start + 1  # only reachable with absurdly small limits
            body = text[start:cut].strip("\n")
            if html_to_text(body).strip():
                parts.append(prefix + body + closers)
            stack, ti, start = new_stack, new_ti, nxt
        return parts


def split_html(html: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split Telegram HTML into well-formed parts of at most `limit` UTF-16 units.

    Cuts prefer paragraph, line, sentence, then word boundaries; tags open at a cut are
    closed at the end of the part and reopened (same attributes) at the next one.
    """
    return _Splitter(html, limit).split()


def render(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Markdown → list of Telegram HTML message parts (empty list for blank input)."""
    return split_html(markdown_to_html(markdown), limit)
