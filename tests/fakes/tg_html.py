"""Telegram's parse_mode=HTML, re-implemented after TDLib's `parse_html` (td/telegram/MessageEntity.cpp).

Error reasons and byte offsets match TDLib's (checked against its test vectors); the Bot API prefixes
them with "Bad Request: can't parse entities: ". Two rules are stricter than Telegram when
`strict=True` (the default), because what Telegram silently accepts there is a formatting bug:

* an "&" that does not start &lt; &gt; &amp; &quot; or &#N; / &#xH; is shown as-is by Telegram, so
  unescaped text like "&lt;" or "&nbsp;" is silently altered or shown raw: strict mode rejects it;
* `<a>` without href is accepted by Telegram (a link only if its text is a URL): strict mode rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUPPORTED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji", "span"}
    | {"pre", "code", "blockquote"}
)
_SIMPLE_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_SPACE = " \t\r\n\0\v\f"  # TDLib's is_space(); "\0" also stands for the end of the text
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class HtmlParseError(ValueError):
    """The text is not valid Telegram HTML; `reason` is TDLib's wording."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Open:
    tag: str
    argument: str
    utf16_offset: int
    result_pos: int  # index in the visible text where the tag's content starts
    has_href: bool
    byte_offset: int


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _decode_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode the entity at text[pos] == "&" as TDLib does: (character, next position) or None."""
    n = len(text)
    end = pos + 1
    code = 0
    if end < n and text[end] == "#":
        end += 1
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF":
                code = code * 16 + int(text[end], 16)
                end += 1
        else:
            while end < n and text[end] in "0123456789":
                code = code * 10 + int(text[end])
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED.get(text[pos + 1 : end])
        if named is None:
            return None
        char = named
    if end < n and text[end] == ";":  # the semicolon is optional, as in TDLib
        end += 1
    return char, end


def parse_html(text: str, strict: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Return (visible text, Bot API entities) or raise HtmlParseError."""
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    def byte_offset(k: int) -> int:
        return len(text[:k].encode("utf-8", "surrogatepass"))

    result: list[str] = []
    utf16 = 0
    stack: list[_Open] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_entity(text, i)
            if decoded is not None:
                char, i = decoded
                result.append(char)
                utf16 += utf16_len(char)
                continue
            if strict:
                raise HtmlParseError(
                    f'Unescaped "&" at byte offset {byte_offset(i)} (strict fake: write it as "&amp;")'
                )
        if c != "<":
            result.append(c)
            utf16 += utf16_len(c)
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while at(i) not in _SPACE and at(i) != ">":
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
            tag = text[begin + 1 : i].lower()
            if tag not in SUPPORTED_TAGS:
                raise HtmlParseError(f'Unsupported start tag "{tag}" at byte offset {byte_offset(begin)}')
            argument, has_href, i = _parse_attributes(text, i, tag, begin, byte_offset)
            if tag == "span" and argument != "spoiler":
                raise HtmlParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset(begin)}'
                )
            if strict and tag == "a" and not has_href:
                raise HtmlParseError(
                    f'Tag "a" must have an "href" attribute at byte offset {byte_offset(begin)} (strict fake)'
                )
            stack.append(_Open(tag, argument, utf16, len(result), has_href, byte_offset(begin)))
            continue

        # an end tag
        if not stack:
            raise HtmlParseError(f"Unexpected end tag at byte offset {byte_offset(begin)}")
        while at(i) not in _SPACE and at(i) != ">":
            i += 1
        end_name = text[begin + 2 : i].lower()
        while i < n and at(i) in _SPACE:
            i += 1
        if at(i) != ">":
            raise HtmlParseError(f"Unclosed end tag at byte offset {byte_offset(begin)}")
        i += 1
        opened = stack.pop()
        if end_name and end_name != opened.tag:
            raise HtmlParseError(
                f"Unmatched end tag at byte offset {byte_offset(begin)}, "
                f'expected "</{opened.tag}>", found "</{end_name}>"'
            )
        if utf16 > opened.utf16_offset:
            _close_entity(opened, utf16, "".join(result[opened.result_pos :]), entities)

    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    visible = "".join(result)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in visible):
        raise HtmlParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units"
        )
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)  # a language only survives inside <pre>
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return visible, entities


def _parse_attributes(text: str, i: int, tag: str, begin: int, byte_offset: Any) -> tuple[str, bool, int]:
    """Parse the attributes of a start tag from text[i]; return (argument, has_href, index after ">")."""
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    argument = ""
    has_href = False
    while at(i) != ">":
        while i < n and at(i) in _SPACE:
            i += 1
        if at(i) == ">":
            break
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
        name_begin = i
        while at(i) not in _SPACE and at(i) not in "=>":
            i += 1
        name = text[name_begin:i]
        if not name:
            where = byte_offset(begin)
            raise HtmlParseError(f'Empty attribute name in the tag "{tag}" at byte offset {where}')
        while i < n and at(i) in _SPACE:
            i += 1
        if at(i) != "=":  # an attribute without a value: only <blockquote expandable> means something
            if tag == "blockquote" and name == "expandable":
                argument = "1"
            continue
        i += 1
        while i < n and at(i) in _SPACE:
            i += 1
        if i >= n:
            raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}')
        if at(i) not in "'\"":
            # a name token: letters, digits, periods and hyphens, case-insensitive
            token_begin = i
            while (at(i).isascii() and at(i).isalnum()) or at(i) in ".-":
                i += 1
            value = text[token_begin:i].lower()
            if at(i) not in _SPACE and at(i) != ">":
                where = byte_offset(token_begin)
                raise HtmlParseError(f"Unexpected end of name token at byte offset {where}")
        else:
            quote = at(i)
            i += 1
            chars: list[str] = []
            while i < n and at(i) != quote:
                if at(i) == "&" and (decoded := _decode_entity(text, i)) is not None:
                    chars.append(decoded[0])
                    i = decoded[1]
                    continue
                chars.append(at(i))
                i += 1
            if at(i) == quote:
                i += 1
            value = "".join(chars)
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
        if tag == "a" and name == "href":
            argument, has_href = value, True
        elif tag == "code" and name == "class" and value.startswith("language-"):
            argument = value[len("language-") :]
        elif tag == "span" and name == "class" and value.startswith("tg-"):
            argument = value[len("tg-") :]
        elif tag == "tg-emoji" and name == "emoji-id":
            argument = value
        elif tag == "blockquote" and name == "expandable":
            argument = "1"
    return argument, has_href, i + 1


def _close_entity(opened: _Open, utf16: int, content: str, entities: list[dict[str, Any]]) -> None:
    offset, length, tag = opened.utf16_offset, utf16 - opened.utf16_offset, opened.tag
    last = entities[-1] if entities else None
    same_span = last is not None and last["offset"] == offset and last["length"] == length
    if tag in _SIMPLE_TYPES:
        entities.append({"type": _SIMPLE_TYPES[tag], "offset": offset, "length": length})
    elif tag == "blockquote":
        kind = "expandable_blockquote" if opened.argument else "blockquote"
        entities.append({"type": kind, "offset": offset, "length": length})
    elif tag == "tg-emoji":
        if not opened.argument.isdigit() or int(opened.argument) == 0:
            raise HtmlParseError("Invalid custom emoji identifier specified")
        entities.append(
            {"type": "custom_emoji", "offset": offset, "length": length, "custom_emoji_id": opened.argument}
        )
    elif tag == "a":
        url = opened.argument if opened.has_href else content
        entity = _link_entity(url, offset, length)
        if entity is not None:
            entities.append(entity)
    elif tag == "pre":
        # <pre><code class="language-x">…</code></pre> is one "pre" entity with a language
        if same_span and last is not None and last["type"] == "code" and last.get("language"):
            last["type"] = "pre"
        else:
            entities.append({"type": "pre", "offset": offset, "length": length})
    elif tag == "code":
        if same_span and last is not None and last["type"] == "pre" and opened.argument:
            last["language"] = opened.argument
        else:
            entity = {"type": "code", "offset": offset, "length": length}
            if opened.argument:
                entity["language"] = opened.argument  # dropped again unless a <pre> wraps it
            entities.append(entity)


def _link_entity(url: str, offset: int, length: int) -> dict[str, Any] | None:
    if url.startswith("tg://user?id=") and url[len("tg://user?id=") :].isdigit():
        user = {"id": int(url[len("tg://user?id=") :]), "is_bot": False, "first_name": ""}
        return {"type": "text_mention", "offset": offset, "length": length, "user": user}
    if not url or any(ch in url for ch in " \n\t<>"):
        return None  # Telegram drops invalid links silently
    if "://" not in url and not url.startswith(("tg:", "mailto:")):
        if "." not in url:
            return None
        url = "http://" + url
    rest = url.partition("://")[2]
    if rest and "/" not in rest and "?" not in rest and "#" not in rest:
        url += "/"  # Telegram normalises "telegram.org" to "http://telegram.org/"
    return {"type": "text_link", "offset": offset, "length": length, "url": url}
