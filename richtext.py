"""The model's Markdown as Telegram rich messages (Bot API 10.1): made safe, then split within the limits.

Pure functions, no I/O. Telegram's rich Markdown takes raw HTML, images (media it fetches) and links of
any scheme; a model writing "<div>" or "![chart](https://…)" means text and a link, not markup or an
upload. So, outside code, `<` that would open a tag is escaped, images become links, and links that are
not http(s)/mailto become text. Tables wider than Telegram allows become code blocks.

Limits (rich messages, Bot API 10.1): 32,768 characters, 500 blocks (nested ones, list items and table
rows included), 20 table columns, nesting depth 16. Longer answers are split at top-level block
boundaries (a giant block at line boundaries, a code block into several fenced ones); the source length
is counted, which is never less than the text Telegram counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from render import utf16_len

MAX_CHARS = 32_768
MAX_BLOCKS = 500
MAX_COLUMNS = 20
MAX_DEPTH = 16

_MD = MarkdownIt("commonmark").enable("table").enable("strikethrough")
# Tokens that are blocks in Telegram's count (cells are not: rows are).
_BLOCKS = {"paragraph_open", "heading_open", "blockquote_open", "bullet_list_open", "ordered_list_open",
           "list_item_open", "table_open", "tr_open", "fence", "code_block", "html_block", "hr"}
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_LINK = re.compile(r"(!?)\[([^\[\]\n]*)\]\(\s*<?([^\s)>]*)")
_SAFE_LINK = re.compile(r"(?i)(?:https?://|mailto:)")
_BACKTICKS = re.compile(r"`+")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


# ---------------------------------------------------------------------------------------- escaping


def escape(markdown: str) -> str:
    """Markdown whose HTML, images and odd links show as the model wrote them; code stays verbatim."""
    lines = markdown.split("\n")
    tokens = _MD.parse(markdown)
    literal = [False] * len(lines)  # lines inside code blocks: nothing to escape there
    wide_tables: list[tuple[int, int]] = []
    for i, tok in enumerate(tokens):
        if tok.type in ("fence", "code_block") and tok.map:
            for n in range(*tok.map):
                literal[n] = True
        elif tok.type == "table_open" and tok.map and tok.level == 0 and _columns(tokens, i) > MAX_COLUMNS:
            wide_tables.append((tok.map[0], tok.map[1]))
    out: list[str] = []
    paragraph: list[str] = []
    for n, line in enumerate(lines):
        if literal[n] or not line.strip():  # code, or the blank line that ends a block
            out.extend(_escape_text("\n".join(paragraph)).split("\n") if paragraph else [])
            paragraph = []
            out.append(line)
        else:
            paragraph.append(line)
    if paragraph:
        out.extend(_escape_text("\n".join(paragraph)).split("\n"))
    for start, end in reversed(wide_tables):  # as code, so nothing is lost
        out[start:end] = ["```", *out[start:end], "```"]
    return "\n".join(out)


def _columns(tokens: list[Token], i: int) -> int:
    count = 0
    for tok in tokens[i + 1:]:
        if tok.type == "th_open":
            count += 1
        elif tok.type in ("tr_close", "table_close"):
            break
    return count


def _escape_text(text: str) -> str:
    """Escape one block's text outside its code spans (a backtick run closes at a run of equal length)."""
    out, pos = [], 0
    while (opening := _BACKTICKS.search(text, pos)) is not None:
        closing = re.compile(rf"(?<!`){opening.group()}(?!`)").search(text, opening.end())
        if closing is None:
            out.append(_escape_plain(text[pos:opening.end()]))
            pos = opening.end()
            continue
        out.append(_escape_plain(text[pos:opening.start()]))
        out.append(text[opening.start():closing.end()])
        pos = closing.end()
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    def link(match: re.Match[str]) -> str:
        bang, label, url = match.groups()
        opening = "\\[" if not _SAFE_LINK.match(url) else "["
        return ("\\!" if bang else "") + opening + label + match.group()[len(bang) + 1 + len(label):]

    return _LINK.sub(link, _TAG_START.sub(r"\\<", text))


def html_text(text: str) -> str:
    """Text for inside a raw HTML tag of rich Markdown (e.g. <tg-thinking>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> str:
    """One paragraph of text shown as is: every character Markdown would read as markup is escaped."""
    return re.sub(r"([\\`*_\[\]<>#!|~$&])", r"\\\1", " ".join(text.split()))


def italic_note(text: str) -> str:
    """A one-paragraph note in italics, its text shown as is."""
    flat = plain(text)
    return f"*{flat}*" if flat else ""


# ---------------------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class _Block:
    start: int  # first line
    end: int  # line after the last
    blocks: int
    depth: int


def fits(markdown: str) -> bool:
    """Whether one rich message can hold this (escaped) Markdown."""
    tokens = _MD.parse(markdown)
    return (utf16_len(markdown) <= MAX_CHARS and _count(tokens) <= MAX_BLOCKS
            and max((t.level for t in tokens), default=0) < MAX_DEPTH)


def split(markdown: str) -> list[str]:
    """Escaped Markdown → rich message sources, each within the limits (blank input: no parts)."""
    if not markdown.strip():
        return []
    lines = markdown.split("\n")
    tokens = _MD.parse(markdown)
    parts: list[str] = []
    current: list[str] = []
    size = blocks = 0
    for block in _top_level(tokens, len(lines)):
        text = "\n".join(lines[block.start:block.end]).strip("\n")
        if not text.strip():
            continue
        for piece, count in _fit_block(text, block):
            cost = utf16_len(piece) + 2
            if current and (size + cost > MAX_CHARS or blocks + count > MAX_BLOCKS):
                parts.append("\n\n".join(current))
                current, size, blocks = [], 0, 0
            current.append(piece)
            size, blocks = size + cost, blocks + count
    if current:
        parts.append("\n\n".join(current))
    return parts


def _count(tokens: list[Token]) -> int:
    return sum(1 for t in tokens if t.type in _BLOCKS)


def _top_level(tokens: list[Token], n_lines: int) -> list[_Block]:
    """Top-level blocks by line range; lines no block claims (link definitions…) join the next one."""
    found: list[_Block] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.level != 0 or tok.map is None:
            i += 1
            continue
        j, depth, count = i, 0, 0
        if tok.nesting == 1:  # find the matching close
            level = 1
            while level:
                j += 1
                level += tokens[j].nesting
        for t in tokens[i:j + 1]:
            count += t.type in _BLOCKS
            depth = max(depth, t.level)
        found.append(_Block(tok.map[0], tok.map[1], count, depth))
        i = j + 1
    blocks, start = [], 0
    for b in found:
        blocks.append(_Block(start, b.end, b.blocks, b.depth))
        start = b.end
    if start < n_lines and blocks:
        last = blocks[-1]
        blocks[-1] = _Block(last.start, n_lines, last.blocks, last.depth)
    elif not blocks:
        blocks.append(_Block(0, n_lines, 1, 0))
    return blocks


def _fit_block(text: str, block: _Block) -> list[tuple[str, int]]:
    """One top-level block as pieces that each fit a message: itself, or cut at line boundaries."""
    if utf16_len(text) <= MAX_CHARS - 2 and (block.blocks <= MAX_BLOCKS or "\n" not in text):
        return [(text, block.blocks)]
    fence = _FENCE.match(text.split("\n", 1)[0])
    if fence:  # a huge code block: several code blocks with the same fence and language
        indent, marker, info = fence.groups()
        body = text.split("\n")[1:]
        if body and body[-1].strip().startswith(marker[0] * 3):
            body = body[:-1]
        overhead = utf16_len(f"{indent}{marker}{info}\n\n{indent}{marker}") + 2
        return [(f"{indent}{marker}{info}\n{chunk}\n{indent}{marker}", 1)
                for chunk in _chunks(body, MAX_CHARS - overhead)]
    pieces = []
    for chunk in _chunks(text.split("\n"), MAX_CHARS - 2):
        count = _count(_MD.parse(chunk))
        if count <= MAX_BLOCKS:
            pieces.append((chunk, count))
            continue
        lines = chunk.split("\n")  # too many blocks (a list of 600 items): halve until each fits
        half = len(lines) // 2
        for lines_half in (lines[:half], lines[half:]):
            pieces += _fit_block("\n".join(lines_half), _Block(0, 0, count // 2 + 1, 0))
    return pieces


def _chunks(lines: list[str], limit: int) -> list[str]:
    """Lines joined greedily into chunks of at most `limit` UTF-16 units; a longer line is cut at spaces."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        for piece in _cut_line(line, limit):
            cost = utf16_len(piece) + 1
            if current and size + cost > limit:
                chunks.append("\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += cost
    if current:
        chunks.append("\n".join(current))
    return chunks


def _cut_line(line: str, limit: int) -> list[str]:
    pieces = []
    while utf16_len(line) > limit:
        cut = line.rfind(" ", 0, limit // 2 * 2)
        cut = cut if cut > limit // 4 else limit // 2  # no space: a hard cut (limit/2 code points fit)
        pieces.append(line[:cut])
        line = line[cut:].lstrip(" ")
    return [*pieces, line]
