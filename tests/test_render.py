"""Tests for render.py: Markdown → Telegram HTML and message splitting."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest

from render import (
    TELEGRAM_LIMIT,
    html_to_text,
    markdown_to_html,
    render,
    split_html,
    utf16_len,
)

ALLOWED_TAGS = {"b", "i", "u", "s", "code", "pre", "a", "blockquote", "tg-spoiler"}
CODE_PREFIX = '<pre><code class="language-python">'


class _BalanceChecker(HTMLParser):
    """Strict checker: allowed tags/attributes only, properly nested, nothing left open."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.errors.append(f"disallowed tag <{tag}>")
        names = [name for name, _ in attrs]
        if tag == "a" and names != ["href"]:
            self.errors.append(f"bad <a> attrs {attrs}")
        elif (
            tag == "code"
            and attrs
            and not (names == ["class"] and re.fullmatch(r"language-[\w+#.-]+", attrs[0][1] or ""))
        ):
            self.errors.append(f"bad <code> attrs {attrs}")
        elif tag not in ("a", "code") and attrs:
            self.errors.append(f"unexpected attrs on <{tag}>")
        if tag in ("a", "blockquote") and tag in self.stack:
            self.errors.append(f"nested <{tag}>")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack}")
        else:
            self.stack.pop()


def assert_valid_html(html: str) -> None:
    checker = _BalanceChecker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, (checker.errors, html)
    assert not checker.stack, (f"unclosed {checker.stack}", html)
    # Outside tags only &lt; &gt; &amp; &quot; may appear; no raw < or >.
    text = re.sub(r"<[^<>]*>", "", html)
    assert "<" not in text and ">" not in text, html
    assert not re.search(r"&(?!(?:lt|gt|amp|quot);)", html), html


def squash(text: str) -> str:
    return "".join(text.split())


def assert_parts_ok(parts: list[str], limit: int) -> None:
    for part in parts:
        assert utf16_len(part) <= limit, (utf16_len(part), part[:80])
        assert html_to_text(part).strip(), repr(part)
        assert part == part.strip("\n")
        assert_valid_html(part)


# ------------------------------------------------------------------- basics


def test_utf16_len() -> None:
    assert utf16_len("") == 0
    assert utf16_len("abc") == 3
    assert utf16_len("é€") == 2
    assert utf16_len("😀") == 2
    assert utf16_len("a𝔘b") == 4


def test_html_to_text() -> None:
    assert html_to_text('<b>a &amp; b</b> <a href="x">&lt;c&gt;</a>') == "a & b <c>"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __also__", "<b>bold</b> and <b>also</b>"),
        ("*it* and _it_", "<i>it</i> and <i>it</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("use `x < 1 && y`", "use <code>x &lt; 1 &amp;&amp; y</code>"),
        ("***both***", "<i><b>both</b></i>"),
        ("# Title\n\ntext", "<b>Title</b>\n\ntext"),
        ("Setext\n===", "<b>Setext</b>"),
        ("## **Bold** head", "<b><b>Bold</b> head</b>"),
        ("one\n\n\n\ntwo", "one\n\ntwo"),
        ("soft\nbreak", "soft\nbreak"),
        ("hard  \nbreak", "hard\nbreak"),
        ("hard\\\nbreak", "hard\nbreak"),
        ("a\n\n---\n\nb", "a\n\n———\n\nb"),
        ("trailing   \n\n\n", "trailing"),
        ("", ""),
    ],
)
def test_inline_and_simple_blocks(markdown: str, expected: str) -> None:
    assert markdown_to_html(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[site](https://example.com/a?b=1&c=2)", '<a href="https://example.com/a?b=1&amp;c=2">site</a>'),
        ('[q](http://x.y/"z")', '<a href="http://x.y/%22z%22">q</a>'),
        ("[chat](tg://resolve?domain=x)", '<a href="tg://resolve?domain=x">chat</a>'),
        ("<me@example.com>", '<a href="mailto:me@example.com">me@example.com</a>'),
        ("<https://a.b>", '<a href="https://a.b">https://a.b</a>'),
        ("[](https://a.b)", '<a href="https://a.b">https://a.b</a>'),
        ("[rel](/path) [ftp](ftp://x.y)", "rel ftp"),
        ("[js](javascript:alert(1))", "[js](javascript:alert(1))"),
        ("![a *cat*](https://i.example/cat.png)", '<a href="https://i.example/cat.png">a cat</a>'),
        ("![local](cat.png)", "local"),
        ("[![img](https://i/x.png)](https://l)", '<a href="https://l">img</a>'),
    ],
)
def test_links_and_images(markdown: str, expected: str) -> None:
    assert markdown_to_html(markdown) == expected


def test_lists() -> None:
    assert markdown_to_html("- a\n- b\n  - c\n    - d\n- e") == "• a\n• b\n  • c\n    • d\n• e"
    assert markdown_to_html("1. x\n2. y") == "1. x\n2. y"
    assert markdown_to_html("7. x\n8. y\n   1. inner") == "7. x\n8. y\n  1. inner"
    assert markdown_to_html("para\n\n* a\n* b\n\nafter") == "para\n\n• a\n• b\n\nafter"
    assert markdown_to_html("- **bold** item") == "• <b>bold</b> item"


def test_blockquote() -> None:
    assert markdown_to_html("> quoted\n> more\n\nout") == "<blockquote>quoted\nmore</blockquote>\n\nout"
    # Telegram can't nest blockquotes: inner ones are flattened.
    assert markdown_to_html("> a\n> > b") == "<blockquote>a\n\nb</blockquote>"


def test_code_blocks() -> None:
    assert markdown_to_html("```python\nif a < b:\n    pass\n```") == (
        '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>'
    )
    assert markdown_to_html("```\nplain & simple\n```") == "<pre>plain &amp; simple</pre>"
    assert markdown_to_html("    indented\n    code") == "<pre>indented\ncode</pre>"
    assert (
        markdown_to_html('```c++ "x"\nint a;\n```') == '<pre><code class="language-c++">int a;</code></pre>'
    )
    assert markdown_to_html('```"><script>\nx\n```') == '<pre><code class="language-script">x</code></pre>'
    assert markdown_to_html("```\n```") == ""


def test_unclosed_fence_streaming() -> None:
    assert markdown_to_html("```python\nprint(1)") == f"{CODE_PREFIX}print(1)</code></pre>"
    assert (
        markdown_to_html("Intro\n\n```python\nprint(1)\n") == f"Intro\n\n{CODE_PREFIX}print(1)</code></pre>"
    )


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold", "**bold"),
        ("some _italic", "some _italic"),
        ("**a _b** c_", "<b>a _b</b> c_"),
        ("`code", "`code"),
        ("[link](http://x", "[link](http://x"),
    ],
)
def test_unbalanced_markdown_is_literal(markdown: str, expected: str) -> None:
    assert markdown_to_html(markdown) == expected


def test_raw_html_is_escaped() -> None:
    assert markdown_to_html("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_to_html("a & b < c") == "a &amp; b &lt; c"
    assert markdown_to_html("x <b>y</b> <img src=x onerror=alert(1)>") == (
        "x &lt;b&gt;y&lt;/b&gt; &lt;img src=x onerror=alert(1)&gt;"
    )
    assert markdown_to_html("<div>\n*hi*\n</div>") == "&lt;div&gt;\n*hi*\n&lt;/div&gt;"
    assert markdown_to_html("&copy; &amp;lt;") == "© &amp;lt;"


def test_table() -> None:
    markdown = "| Name | Qty |\n|------|----:|\n| apple | 3 |\n| kiwi | 12 |\n| `x<y` | |"
    assert markdown_to_html(markdown) == (
        "<pre>Name  | Qty\n------+----\napple |   3\nkiwi  |  12\nx&lt;y   |</pre>"
    )


def test_table_in_context() -> None:
    html = markdown_to_html("Intro\n\n| a | b |\n|---|:-:|\n| long cell | c |\n\nDone")
    assert html == "Intro\n\n<pre>a         | b\n----------+--\nlong cell | c</pre>\n\nDone"


# ------------------------------------------------------------------- render / split


def test_render_blank_input() -> None:
    assert render("") == []
    assert render("   \n\n \t ") == []
    assert render("```\n   \n```") == []


def test_render_short() -> None:
    assert render("Hi **there**") == ["Hi <b>there</b>"]


def test_split_prefers_paragraphs() -> None:
    html = "aaaa bbbb.\n\ncccc dddd. eeee\nffff"
    assert split_html(html, 16) == ["aaaa bbbb.", "cccc dddd. eeee", "ffff"]
    assert split_html(html, 22) == ["aaaa bbbb.", "cccc dddd. eeee\nffff"]


def test_split_sentence_then_space_then_hard() -> None:
    assert split_html("Alpha beta gamma. Delta epsilon", 24) == ["Alpha beta gamma.", "Delta epsilon"]
    # A boundary in the first half of the window would waste the part; take a later space.
    assert split_html("One two. Three four five", 20) == ["One two. Three four", "five"]
    assert split_html("alpha beta gamma delta", 17) == ["alpha beta gamma", "delta"]
    assert split_html("x" * 40, 16) == ["x" * 16, "x" * 16, "x" * 8]


def test_split_reopens_tags_with_attributes() -> None:
    html = '<b>bold <a href="https://e.x/?a=1&amp;b=2">' + "word " * 10 + "</a></b> tail"
    parts = split_html(html, 64)
    assert len(parts) > 1
    assert_parts_ok(parts, 64)
    for part in parts[1:-1]:
        assert part.startswith('<b><a href="https://e.x/?a=1&amp;b=2">'), part
    assert squash("".join(map(html_to_text, parts))) == squash(html_to_text(html))


def test_split_never_cuts_entities() -> None:
    for shift in range(6):
        html = "x" * shift + "&amp;&lt;" * 1500
        for limit in (50, 97, 4096):
            parts = split_html(html, limit)
            assert_parts_ok(parts, limit)
            assert "".join(parts) == html


def test_split_never_leaves_empty_open_tag() -> None:
    parts = split_html("x" * 14 + "<b>yyyy</b>", 16)
    assert parts == ["x" * 14, "<b>yyyy</b>"]


def test_long_answer_with_code_block() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "&", "<tag>", "naïve", "café", "😀"]

    def paragraph() -> str:
        return " ".join(rng.choice(words) for _ in range(60)) + "."

    code_lines = [f"value_{i} = compute({i}, 'x' * {i % 7})  # step {i}" for i in range(220)]
    code = "\n".join(code_lines)
    assert 9000 <= len(code) <= 10500
    before = "\n\n".join(paragraph() for _ in range(20))
    after = "\n\n".join(paragraph() for _ in range(16))
    markdown = f"# Answer\n\n{before}\n\n```python\n{code}\n```\n\n{after}"
    assert len(markdown) >= 20000

    parts = render(markdown)
    assert_parts_ok(parts, TELEGRAM_LIMIT)
    code_parts = [i for i, p in enumerate(parts) if "value_" in p]
    assert len(code_parts) >= 3
    assert code_parts == list(range(code_parts[0], code_parts[-1] + 1))
    for i in code_parts[1:]:
        assert parts[i].startswith(CODE_PREFIX), parts[i][:60]
    for i in code_parts[:-1]:
        assert parts[i].endswith("</code></pre>")
    # Code is cut only at line boundaries, so every line survives intact and in order.
    code_text = "\n".join(html_to_text(parts[i]) for i in code_parts)
    found = [line for line in code_text.split("\n") if line.startswith("value_")]
    assert found == code_lines
    assert squash("".join(map(html_to_text, parts))) == squash(html_to_text(markdown_to_html(markdown)))


@pytest.mark.parametrize("char", ["😀", "𝔘", "👍🏽", "é"])
def test_non_bmp_around_limit(char: str) -> None:
    for k in range(TELEGRAM_LIMIT - 12, TELEGRAM_LIMIT + 4):
        for markdown in (
            "x" * k + char * 30 + " tail",
            "**" + "y" * k + char * 7 + "** end",
            char * (k // 2),
        ):
            parts = render(markdown)
            assert_parts_ok(parts, TELEGRAM_LIMIT)
            joined = squash("".join(map(html_to_text, parts)))
            assert joined == squash(html_to_text(markdown_to_html(markdown)))


def test_huge_href_does_not_break_splitting() -> None:
    url = "https://example.com/" + "a" * 300
    html = f'<a href="{url}">' + "link text " * 40 + "</a>"
    parts = split_html(html, 200)  # the opening tag alone exceeds the limit: markup is dropped
    assert_parts_ok(parts, 200)
    assert squash("".join(parts)) == squash("link text " * 40)
    long = "https://e.x/" + "b" * 3000
    assert markdown_to_html(f"[t]({long})") == "t"


# ------------------------------------------------------------------- properties / speed

FRAGMENTS = [
    "**", "__", "_", "*", "~~", "`", "```", "```python\n", "<", ">", "&", "&amp;", "#", "# ", "## ",
    "- ", "* ", "1. ", "> ", "|", "| a | b |\n|---|---|\n", "---", "\n", "\n\n", "  \n", "    ",
    "[", "]", "(", ")", "[link](https://example.com/?q=1&r=2)", "![img](http://i.x/a.png)",
    "<script>", "</b>", "<b>", "😀", "𝔘", "👍🏽", "word", "hello", "world", "x", ".", "! ", "? ", " ",
    '"', "'", "\\", "\t", "tg://", "&#128512;",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_random_markdown_properties(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        markdown = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 120)))
        html = markdown_to_html(markdown)
        assert_valid_html(html)
        assert html == html.rstrip()
        for limit in (48, 100, 333, TELEGRAM_LIMIT):
            parts = split_html(html, limit)
            assert_parts_ok(parts, limit)
            assert squash("".join(map(html_to_text, parts))) == squash(html_to_text(html))
        assert render(markdown) == split_html(html)


def test_a_100k_answer_splits_into_valid_parts() -> None:
    rng = random.Random(1)
    words = ["the", "model", "answer", "**bold**", "`code`", "_it_", "value."]
    words += ["😀", "a<b", "[l](https://x.y)"]
    chunks = []
    while sum(map(len, chunks)) < 100_000:
        chunks.append(" ".join(rng.choice(words) for _ in range(120)))
        chunks.append("```python\n" + "\n".join(f"x = {i} * 2" for i in range(60)) + "\n```")
    markdown = "\n\n".join(chunks)[:100_000]
    parts = render(markdown)  # how long it takes is a benchmark's business (bench/long_stream.py)
    assert_parts_ok(parts, TELEGRAM_LIMIT)
    assert "".join(parts).count("x = 59 * 2") == markdown.count("x = 59 * 2")


def test_markdown_nested_deeper_than_the_parser_goes_keeps_all_its_text() -> None:
    deep_list = "\n".join("  " * i + f"- level{i}" for i in range(20))
    deep_quote = ">" * 30 + " the point"
    assert all(f"level{i}" in markdown_to_html(deep_list) for i in range(20))
    assert markdown_to_html(deep_quote).endswith("the point")
