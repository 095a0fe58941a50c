"""media.py (kinds, images, image tokens, PDFs, text files) and mediastore.py, on real bytes."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import struct
import time
import tomllib
import zlib
from pathlib import Path

import pytest
from PIL import Image

import media
from attachments import Transcription, transcription
from config import Config, ConfigError, load_config
from media import Kind, MediaError
from mediastore import MediaStore, image_size, is_ref
from models import BUILTIN_CATALOG, Registry, load_registry
from tests import media_samples as samples

# -- kinds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "mime", "name", "kind"), [
    ("voice", "audio/ogg", None, Kind.AUDIO),
    ("audio", "audio/mpeg", "song.mp3", Kind.AUDIO),
    ("video_note", None, None, Kind.AUDIO),
    ("photo", None, None, Kind.IMAGE),
    ("document", "image/png", "screen.png", Kind.IMAGE),
    ("document", "application/octet-stream", "IMG_1.JPG", Kind.IMAGE),
    ("document", "application/pdf", "paper.pdf", Kind.PDF),
    ("document", None, "paper.PDF", Kind.PDF),
    ("document", "text/markdown", "notes.md", Kind.TEXT),
    ("document", "application/octet-stream", "main.py", Kind.TEXT),
    ("document", "application/json", "data", Kind.TEXT),
    ("document", "text/csv", None, Kind.TEXT),
    ("document", None, "Dockerfile", Kind.TEXT),
    ("document", "audio/x-wav", "memo.wav", Kind.AUDIO),
    ("document", "application/zip", "code.zip", Kind.OTHER),
    ("document", None, "blob.bin", Kind.OTHER),
    ("sticker", None, None, Kind.UNSUPPORTED),
    ("video", "video/mp4", None, Kind.UNSUPPORTED),
    ("location", None, None, Kind.UNSUPPORTED),
])
def test_kind_of(field: str, mime: str | None, name: str | None, kind: Kind) -> None:
    assert media.kind_of(field, mime, name) is kind


# -- images -----------------------------------------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_12_megapixel_photo_is_downscaled_to_a_jpeg_within_2048() -> None:
    prepared = media.prepare_image(samples.jpeg(4000, 3000))
    image = decode(prepared.data)
    assert image.format == "JPEG" and image.size == (prepared.width, prepared.height)
    assert 1024 < max(image.size) <= 2048 and image.size[0] / image.size[1] == pytest.approx(4 / 3, rel=0.01)


def test_a_huge_png_is_downscaled_to_exactly_2048() -> None:
    prepared = media.prepare_image(samples.png(5000, 1000))
    assert (prepared.width, prepared.height) == (2048, 410)
    assert decode(prepared.data).format == "JPEG"


def test_a_small_image_keeps_its_size_and_pixels() -> None:
    prepared = media.prepare_image(samples.png(64, 48))
    image = decode(prepared.data)
    assert image.size == (64, 48)
    assert image.getpixel((1, 1)) == pytest.approx((10, 220, 40), abs=12)  # the corner marker
    assert image.getpixel((60, 40)) == pytest.approx((200, 30, 30), abs=12)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    prepared = media.prepare_image(samples.jpeg(300, 200, orientation=6))
    image = decode(prepared.data)
    assert image.size == (200, 300)
    assert 0x0112 not in image.getexif()


def test_transparency_is_laid_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    assert decode(media.prepare_image(out.getvalue()).data).getpixel((10, 10)) == pytest.approx(
        (255, 255, 255), abs=3)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds no pixels (what a decompression bomb looks like up front)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("data", [b"not an image at all", samples.pdf("x"), _png_header(20000, 20000),
                                  samples.png()[:60]])
def test_unreadable_images_are_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError) as caught:
        media.prepare_image(data)
    assert caught.value.reason == "image"


@pytest.mark.parametrize(("size", "tokens"), [
    ((1024, 1024), 765), ((2048, 4096), 1105), ((512, 512), 255), ((4000, 3000), 765), ((100, 3000), 765),
])
def test_openai_tile_formula(size: tuple[int, int], tokens: int) -> None:
    # 1024x1024 and 2048x4096 are the worked examples of OpenAI's vision guide.
    assert media.image_tokens(*size, "openai") == tokens


def test_documented_estimates_of_other_providers() -> None:
    assert media.image_tokens(1000, 1000, "anthropic") == 1334  # 1000*1000/750, rounded up
    assert media.image_tokens(4000, 3000, "anthropic") == 1534  # capped at about 1.15 megapixels
    assert media.image_tokens(300, 300, "gemini") == 258
    assert media.image_tokens(1000, 800, "gemini") == 4 * 258
    assert media.image_tokens(1000, 800, "some-new-provider") == media.image_tokens(1000, 800, "openai")


# -- documents --------------------------------------------------------------------------------------


def test_pdf_text_layer_is_extracted() -> None:
    extracted = media.pdf_text(samples.pdf("Quarterly report", "Revenue grew (a lot)"), max_chars=10_000)
    assert extracted == media.Extracted("Quarterly report\nRevenue grew (a lot)", True, 1)


def test_pdf_extraction_stops_past_the_budget() -> None:
    extracted = media.pdf_text(samples.pdf("page text", pages=50), max_chars=30)
    assert not extracted.complete and extracted.pages == 50 and extracted.text.count("page text") < 50


@pytest.mark.parametrize(("data", "reason"), [
    (samples.pdf(), "no_text"),
    (samples.encrypted_pdf("secret plans"), "encrypted"),
    (b"%PDF-1.4\nthis is not really a pdf", "pdf"),
])
def test_unreadable_pdfs(data: bytes, reason: str) -> None:
    with pytest.raises(MediaError) as caught:
        media.pdf_text(data, max_chars=10_000)
    assert caught.value.reason == reason


def test_a_pdf_locked_only_for_editing_is_read() -> None:
    assert media.pdf_text(samples.encrypted_pdf("open to all", password=""), 1000).text == "open to all"


@pytest.mark.parametrize(("data", "text"), [
    ("# Title\nplain text ✓\n".encode(), "# Title\nplain text ✓\n"),
    ("\ufeffwith BOM".encode(), "with BOM"),
    ("UTF-16 текст".encode("utf-16"), "UTF-16 текст"),
    ("Привет, мир! Это старый файл.".encode("cp1251"), "Привет, мир! Это старый файл."),
    ("café crème, naïve".encode("cp1252"), "café crème, naïve"),
    (b"line one\r\nline two\r\n", "line one\nline two\n"),
])
def test_text_files_are_decoded(data: bytes, text: str) -> None:
    assert media.decode_text(data) == text


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 10,  # NUL bytes
    samples.png(),
    bytes((i * 7 + 1) % 32 for i in range(4000)),  # control characters, no NUL
])
def test_binary_is_refused(data: bytes) -> None:
    with pytest.raises(MediaError) as caught:
        media.decode_text(data)
    assert caught.value.reason == "binary"


def test_file_message_names_the_file() -> None:
    text = media.file_message("notes.md", "# Notes\n- one", "Summarise this")
    assert text == 'Summarise this\n\n<file name="notes.md">\n# Notes\n- one\n</file>'


# -- mediastore -------------------------------------------------------------------------------------


def test_images_are_stored_once_by_content(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    data = media.prepare_image(samples.png(30, 20)).data
    ref = store.put(data, 30, 20)
    assert is_ref(ref) and image_size(ref) == (30, 20) and ref.endswith("-30x20.jpg")
    assert store.put(data, 30, 20) == ref
    assert [p.name for p in (tmp_path / "media").rglob("*.jpg")] == [ref]
    assert store.get(ref) == data
    url = store.data_url(ref)
    assert url is not None and url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_a_missing_or_forged_reference_gives_nothing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    ref = store.put(b"jpeg bytes", 1, 1)
    (tmp_path / "media" / ref[:2] / ref).unlink()
    assert store.get(ref) is None and store.data_url(ref) is None
    assert store.get("../../etc/passwd") is None


def test_collect_removes_only_old_unreferenced_files(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    kept, dropped, fresh = (store.put(bytes([i]) * 100, 10, 10) for i in range(3))
    old = time.time() - 7200
    for ref in (kept, dropped):
        os.utime(tmp_path / "media" / ref[:2] / ref, (old, old))
    assert store.collect({kept}) == 1
    assert store.get(kept) is not None and store.get(fresh) is not None and store.get(dropped) is None


def test_storing_again_protects_a_file_from_collection(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    ref = store.put(b"same", 5, 5)
    path = tmp_path / "media" / ref[:2] / ref
    os.utime(path, (time.time() - 7200,) * 2)
    store.put(b"same", 5, 5)  # a new turn with the same picture, not saved yet
    assert store.collect(set()) == 0 and path.exists()


def test_memory_store_keeps_nothing_on_disk(tmp_path: Path) -> None:
    store = MediaStore(None)
    ref = store.put(b"in memory", 2, 2)
    assert store.get(ref) == b"in memory"
    assert store.collect(set(), grace=0) == 1 and store.get(ref) is None


# -- settings: vision and image formulas in the model table, TRANSCRIBE_* -------------------------------

def _registry(tmp_path: Path, models_toml: str = "", **env: str) -> tuple[Config, Registry]:
    base = {"TELEGRAM_BOT_TOKEN": "1:abc", **env}
    if models_toml:
        (tmp_path / "models.toml").write_text(models_toml, encoding="utf-8")
        base["MODELS_FILE"] = str(tmp_path / "models.toml")
    config = load_config(base, tmp_path / "absent.env")
    return config, load_registry(config, today=dt.date(2026, 11, 25))


def test_vision_is_a_fact_of_the_model_table(tmp_path: Path) -> None:
    _, registry = _registry(tmp_path, """
[[models]]
id = "my-vision-model"
provider = "openai"
context_window = 16000
max_output = 1000
vision = true

[[models]]
id = "gpt-4o"
provider = "openai"
context_window = 16000
vision = false
""", OPENAI_API_KEY="sk-x", GROQ_API_KEY="gsk-x")
    assert registry.get("my-vision-model").vision is True
    assert registry.get("gpt-4o").vision is False  # the user's file overrides the catalog
    assert registry.get("gpt-5.4-mini").vision is True
    assert registry.get("openai/gpt-oss-120b").vision is False
    assert registry.resolve("never-heard-of-it").vision is None  # unknown: an image is tried
    assert registry.providers["openai"].image_tokens == "openai"


def test_every_shipped_model_says_whether_it_sees_images() -> None:
    catalog = tomllib.loads(BUILTIN_CATALOG.read_text(encoding="utf-8"))
    assert all(isinstance(m.get("vision"), bool) for m in catalog["models"])
    formulas = {name: p.get("image_tokens", "openai") for name, p in catalog["providers"].items()}
    assert formulas["anthropic"] == "anthropic" and formulas["gemini"] == "gemini"
    assert set(formulas.values()) <= set(media.IMAGE_TOKEN_FORMULAS)


@pytest.mark.parametrize(("toml", "problem"), [
    ('[[models]]\nid = "m"\ncontext_window = 1000\nvision = "yes"\n', "vision must be true or false"),
    ('[providers.lab]\nbase_url = "http://x/v1"\nimage_tokens = "pixels"\n', "image_tokens must be one of"),
])
def test_bad_media_facts_stop_the_start(tmp_path: Path, toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _registry(tmp_path, toml, OPENAI_API_KEY="sk-x")
    assert caught.value.variable == "MODELS_FILE" and problem in caught.value.problem


@pytest.mark.parametrize(("env", "expected"), [
    ({"OPENAI_API_KEY": "sk-x", "GROQ_API_KEY": "g"}, Transcription("openai", "gpt-4o-mini-transcribe")),
    ({"GROQ_API_KEY": "g", "ANTHROPIC_API_KEY": "a"}, Transcription("groq", "whisper-large-v3-turbo")),
    ({"ANTHROPIC_API_KEY": "a"}, None),
    ({"OPENAI_API_KEY": "sk-x", "TRANSCRIBE_MODEL": "off"}, None),
    ({"OPENAI_API_KEY": "sk-x", "GROQ_API_KEY": "g", "TRANSCRIBE_PROVIDER": "groq"},
     Transcription("groq", "whisper-large-v3-turbo")),
    ({"OPENAI_API_KEY": "sk-x", "TRANSCRIBE_MODEL": "whisper-1"}, Transcription("openai", "whisper-1")),
    ({"OPENAI_API_KEY": "sk-x", "LAB_API_KEY": "k", "TRANSCRIBE_PROVIDER": "LAB",
      "TRANSCRIBE_MODEL": "faster-whisper-small"}, Transcription("lab", "faster-whisper-small")),
])
def test_transcription_defaults_and_settings(tmp_path: Path, env: dict[str, str],
                                             expected: Transcription | None) -> None:
    config, registry = _registry(tmp_path, LAB_PROVIDER, **env)
    assert transcription(config, registry) == expected


@pytest.mark.parametrize(("env", "variable"), [
    ({"OPENAI_API_KEY": "sk-x", "TRANSCRIBE_PROVIDER": "groq"}, "TRANSCRIBE_PROVIDER"),  # not configured
    ({"OPENAI_API_KEY": "sk-x", "TRANSCRIBE_PROVIDER": "nosuch"}, "TRANSCRIBE_PROVIDER"),
    ({"OPENAI_API_KEY": "sk-x", "LAB_API_KEY": "k", "TRANSCRIBE_PROVIDER": "lab"}, "TRANSCRIBE_MODEL"),
    ({"ANTHROPIC_API_KEY": "a", "TRANSCRIBE_MODEL": "whisper-1"}, "TRANSCRIBE_PROVIDER"),
])
def test_bad_transcription_settings_name_the_variable(tmp_path: Path, env: dict[str, str],
                                                      variable: str) -> None:
    config, registry = _registry(tmp_path, LAB_PROVIDER, **env)
    with pytest.raises(ConfigError) as caught:
        transcription(config, registry)
    assert caught.value.variable == variable


LAB_PROVIDER = """
[providers.lab]
base_url = "http://localhost:8000/v1"
api_key_env = "LAB_API_KEY"
"""
