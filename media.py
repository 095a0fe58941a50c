"""What users attach, made readable for a model: limits, images, PDFs, text files, image token counts.

Pure functions on bytes: the download is the sender's (`Sender.download`), storage is `mediastore`'s,
the wording is the handler's. Every way a file can be unreadable is a `MediaError` with a reason.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import re
from dataclasses import dataclass
from enum import Enum

from PIL import Image, ImageOps, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from render import clean_text

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # bots may download files of up to 20 MB
DOWNLOAD_TIMEOUT = 60.0  # seconds for getFile + the download together
MAX_IMAGE_SIDE = 2048  # the long side sent to the model; OpenAI scales anything larger down to this anyway
JPEG_QUALITY = 85
# A decompression bomb (a small file that decodes to billions of pixels) is refused, not decoded.
MAX_IMAGE_PIXELS = 120_000_000
MAX_PDF_PAGES = 2000
_BINARY_SAMPLE = 8192

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow raises DecompressionBombError at twice this


class Kind(Enum):
    AUDIO = "audio"  # transcribed
    IMAGE = "image"  # shown to a vision model
    PDF = "pdf"  # text extracted
    TEXT = "text"  # decoded
    OTHER = "other"  # a document we cannot read
    UNSUPPORTED = "unsupported"  # stickers, videos, locations...: not files we read at all


class MediaError(Exception):
    """A file that cannot be made readable; `reason` says why (the handler words it)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # "image", "encrypted", "no_text", "pdf", "binary"


# Source and text formats people send; anything with a text/* MIME type is text too.
TEXT_EXTENSIONS = frozenset({
    "txt", "text", "md", "markdown", "rst", "adoc", "org", "tex", "csv", "tsv", "json", "jsonl", "ndjson",
    "yaml", "yml", "toml", "ini", "cfg", "conf", "env", "properties", "log", "xml", "html", "htm", "css",
    "scss", "sass", "less", "svg", "py", "pyi", "ipynb", "js", "mjs", "cjs", "ts", "tsx", "jsx", "vue",
    "svelte", "java", "kt", "kts", "scala", "groovy", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "cs", "go",
    "rs", "swift", "m", "mm", "rb", "php", "pl", "pm", "lua", "r", "jl", "dart", "ex", "exs", "erl", "hs",
    "ml", "fs", "clj", "sh", "bash", "zsh", "fish", "ps1", "bat", "cmd", "sql", "graphql", "proto",
    "gradle", "cmake", "mk", "makefile", "dockerfile", "gitignore", "diff", "patch", "srt", "vtt", "bib",
})  # fmt: skip
TEXT_MIME_TYPES = frozenset({
    "application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
    "application/javascript", "application/x-javascript", "application/x-sh", "application/sql",
    "application/x-python", "application/x-python-code", "application/ld+json", "application/x-ndjson",
})  # fmt: skip
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
# Telegram fields that hold something to listen to; "video" is left out (a film is not a voice note).
AUDIO_FIELDS = frozenset({"voice", "audio", "video_note"})


def kind_of(field: str, mime_type: str | None = None, file_name: str | None = None) -> Kind:
    """What to do with an attachment, from the message field it came in, its MIME type and name."""
    if field in AUDIO_FIELDS:
        return Kind.AUDIO
    if field == "photo":
        return Kind.IMAGE
    if field != "document":
        return Kind.UNSUPPORTED
    mime = (mime_type or "").lower()
    extension = _extension(file_name)
    if (mime.startswith("image/") and mime != "image/svg+xml") or extension in IMAGE_EXTENSIONS:
        return Kind.IMAGE
    if mime == "application/pdf" or extension == "pdf":
        return Kind.PDF
    if mime.startswith("audio/"):
        return Kind.AUDIO
    if mime.startswith("text/") or mime in TEXT_MIME_TYPES or extension in TEXT_EXTENSIONS:
        return Kind.TEXT
    if file_name and file_name.lower() in ("makefile", "dockerfile", "readme", "license"):
        return Kind.TEXT
    return Kind.OTHER


def _extension(file_name: str | None) -> str:
    return file_name.rsplit(".", 1)[1].lower() if file_name and "." in file_name else ""


# -- images -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedImage:
    """An image as sent to the model: JPEG bytes whose long side is at most MAX_IMAGE_SIDE."""

    data: bytes
    width: int
    height: int


def prepare_image(data: bytes, max_side: int = MAX_IMAGE_SIDE) -> PreparedImage:
    """Decode any image Pillow reads, turn it upright (EXIF), downscale, and encode it as JPEG.

    Always re-encoded: a JPEG straight from a camera carries EXIF metadata (GPS position) that the
    provider has no business seeing.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaError("image", f"{width}x{height} pixels")
            if max(width, height) > max_side:
                # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale, five times faster for a 12 MP photo.
                # Any scale that keeps the long side above half the cap is taken: no provider looks
                # closer (OpenAI scales the short side to 768 px, Anthropic the long side to 1568).
                scale = (max_side // 2 + 1) / max(width, height)
                opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            image = ImageOps.exif_transpose(opened)
            if max(image.size) > max_side:
                # reducing_gap: a fast integer reduction first, then a high-quality resample.
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
            image = _rgb(image)
            out = io.BytesIO()
            image.save(out, "JPEG", quality=JPEG_QUALITY)
    except MediaError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError("image", repr(exc)) from None
    return PreparedImage(out.getvalue(), image.width, image.height)


def _rgb(image: Image.Image) -> Image.Image:
    """RGB for JPEG; transparency is laid on white (what a viewer shows), not on black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def openai_image_tokens(width: int, height: int) -> int:
    """OpenAI's published formula for a high-detail image (GPT-4o, GPT-4.1, GPT-5...): fit in
    2048x2048, scale the short side down to 768, then 170 tokens per 512-px tile plus 85."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's documented estimate: width x height / 750, after scaling to a long edge of at most
    1568 px and about 1.15 megapixels."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / 750))


def gemini_image_tokens(width: int, height: int) -> int:
    """Google's documented count: 258 tokens for an image within 384x384, else 258 per 768x768 tile."""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


# A provider's `image_tokens` fact names its formula; the OpenAI one is the estimate for the rest
# (most OpenAI-compatible servers follow OpenAI's shapes, and it is the largest of the three here).
IMAGE_TOKEN_FORMULAS = {
    "openai": openai_image_tokens, "anthropic": anthropic_image_tokens, "gemini": gemini_image_tokens,
}  # fmt: skip


def image_tokens(width: int, height: int, formula: str = "openai") -> int:
    return IMAGE_TOKEN_FORMULAS.get(formula, openai_image_tokens)(max(1, width), max(1, height))


# -- documents --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Extracted:
    """A document's text; `complete` is False when extraction stopped at `max_chars`."""

    text: str
    complete: bool = True
    pages: int = 0


def pdf_text(data: bytes, max_chars: int) -> Extracted:
    """The text layer of a PDF, page by page, stopping once it passes `max_chars`."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # many PDFs only lock editing (empty password)
            raise MediaError("encrypted")
        pages = reader.pages
        parts: list[str] = []
        size = 0
        complete = True
        for number, page in enumerate(pages):
            if size > max_chars or number >= MAX_PDF_PAGES:
                complete = False
                break
            text = (page.extract_text() or "").strip()
            parts.append(text)
            size += len(text) + 2
        count = len(pages)
    except MediaError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OSError,
            NotImplementedError) as exc:
        # pypdf raises assorted errors on broken files (and on encryption it does not implement).
        if "crypt" in str(exc).lower():
            raise MediaError("encrypted", repr(exc)) from None
        raise MediaError("pdf", repr(exc)) from None
    text = "\n\n".join(p for p in parts if p)
    if not text.strip():
        raise MediaError("no_text", f"{count} pages")
    return Extracted(_clean(text), complete, count)


def decode_text(data: bytes) -> str:
    """A text file's content: UTF-8 (with or without BOM), UTF-16 with a BOM, else a legacy 8-bit
    code page (Windows-1251 when the text looks Cyrillic, Windows-1252 otherwise). Binary is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return _clean(data.decode("utf-16"))
        except UnicodeDecodeError:
            raise MediaError("binary", "bad UTF-16") from None
    sample = data[:_BINARY_SAMPLE]
    if b"\x00" in sample:
        raise MediaError("binary", "NUL bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Cyrillic words are runs of high bytes; accented Latin letters mostly stand alone.
        high = sum(1 for b in sample if b >= 0x80)
        runs = sum(1 for a, b in itertools.pairwise(sample) if a >= 0x80 and b >= 0x80)
        text = data.decode("cp1251" if high and runs >= 0.5 * high else "cp1252", errors="replace")
    controls = sum(1 for c in text[:_BINARY_SAMPLE] if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    if controls > 0.05 * min(len(text), _BINARY_SAMPLE):
        raise MediaError("binary", f"{controls} control characters")
    return _clean(text)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    """Text any encoder downstream accepts: no lone surrogates, no stray control characters."""
    return _CONTROL.sub("", clean_text(text).replace("\r\n", "\n"))


def file_message(file_name: str, content: str, question: str) -> str:
    """The user's message for a document: the question, then the file named and fenced."""
    return f"{question}\n\n<file name=\"{file_name}\">\n{content}\n</file>"
