"""Voice notes, photos and files: made into a chat turn (transcript, image part, or file text).

The access check has been done by `commands.handle` before anything here runs, so a refused user
costs no download. Each attachment is checked against what can work (size, kind, model) before it
is downloaded; every failure is one clear sentence and leaves the conversation as it was.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import chat
import llm
import media
import team
from config import Config, ConfigError
from media import Kind, MediaError
from mediastore import MediaStore
from models import ModelInfo, Registry
from router import MEDIA_FIELDS, Incoming, Media
from sender import FileTooBig, TelegramError

if TYPE_CHECKING:
    from app import App

log = logging.getLogger(__name__)

OFF = ("off", "none", "false", "no", "0")
MAX_SHOWN_TRANSCRIPT = 3000  # characters of a transcript quoted back (the whole text goes to the model)
MAX_LISTED_MODELS = 8
# The transcription API tells formats by the file name's extension.
AUDIO_EXTENSIONS = {
    "voice": "ogg", "video_note": "mp4", "audio": "mp3", "audio/ogg": "ogg", "audio/mpeg": "mp3",
    "audio/mp4": "m4a", "audio/x-m4a": "m4a", "audio/wav": "wav", "audio/x-wav": "wav", "audio/webm": "webm",
    "audio/flac": "flac", "video/mp4": "mp4",
}  # fmt: skip


@dataclass(frozen=True)
class Transcription:
    """Where voice notes are sent: a provider's POST /audio/transcriptions with this model."""

    provider: str
    model: str


def transcription(config: Config, registry: Registry) -> Transcription | None:
    """TRANSCRIBE_PROVIDER / TRANSCRIBE_MODEL, else the first configured provider that has a
    transcription model (OpenAI, then Groq); None when off. Raises ConfigError for a bad setting."""
    model = config.transcribe_model
    if model is not None and model.lower() in OFF:
        return None
    configured = [p for p in registry.providers.values() if p.enabled]
    if config.transcribe_provider:
        provider = registry.providers.get(config.transcribe_provider)
        if provider is None or not provider.enabled:
            names = ", ".join(p.name for p in configured)
            raise ConfigError("TRANSCRIBE_PROVIDER", f"{config.transcribe_provider!r} is not a configured "
                                                     f"provider (configured: {names})")
    else:
        provider = next((p for p in configured if p.transcribe_model), None)
        if provider is None:
            if model:
                raise ConfigError("TRANSCRIBE_PROVIDER", "is needed with TRANSCRIBE_MODEL: no configured "
                                                         "provider has a transcription model of its own")
            return None
    model = model or provider.transcribe_model
    if not model:
        raise ConfigError("TRANSCRIBE_MODEL", f"is needed: provider {provider.name} has no default "
                                              "transcription model")
    return Transcription(provider.name, model)


@dataclass
class MediaSupport:
    """What the attachment handlers share: the image store, where voice notes go, and the models
    whose provider turned images down although nobody said they cannot see (learnt at run time)."""

    store: MediaStore = field(default_factory=lambda: MediaStore(None))
    transcription: Transcription | None = None
    text_only: set[str] = field(default_factory=set)

    def sees_images(self, model: ModelInfo) -> bool:
        return model.vision is not False and model.id not in self.text_only

    def image_url(self, model: ModelInfo) -> Callable[[str], str | None] | None:
        """How the history's images reach this model: data: URLs, or not at all."""
        return self.store.data_url if self.sees_images(model) else None


class Turn(Protocol):
    """`turns.handle_chat`: one streamed turn, here with what the attachment became."""

    def __call__(self, app: App, inc: Incoming, text: str | None = None, images: tuple[str, ...] = (),
                 file_name: str | None = None) -> None: ...


def handle(app: App, inc: Incoming, turn: Turn) -> None:
    """An attachment: checked (kind, size, model) before any download, then made into a turn."""
    item = inc.media or Media("other")
    kind = media.kind_of(item.field, item.mime_type, item.file_name)
    if kind is Kind.UNSUPPORTED:
        what = f"media.{item.field}" if item.field in MEDIA_FIELDS else "media.other"
        app.reply(inc, app.t(inc, "errors.unsupported", what=app.t(inc, what)))
        return
    if not item.file_id:  # a file Telegram described without an id: nothing to fetch
        app.reply(inc, app.t(inc, "files.download_failed"))
        return
    if kind is Kind.OTHER:
        name = html.escape(item.file_name or item.mime_type or "?")
        app.reply(inc, app.t(inc, "files.kind", name=f"<b>{name}</b>"))
        return
    if item.file_size is not None and item.file_size > media.TELEGRAM_DOWNLOAD_LIMIT:
        app.reply(inc, app.t(inc, "files.too_big", size=_megabytes(item.file_size)))
        return
    if (refusal := app.quotas.check(inc.user_id)) is not None:  # before any download or transcription
        app.reply(inc, team.quota_refusal(app, inc, refusal))
        return
    if kind is Kind.AUDIO:
        _voice(app, inc, item, turn)
    elif kind is Kind.IMAGE:
        _image(app, inc, item, turn)
    else:
        _document(app, inc, item, kind, turn)


def _download(app: App, inc: Incoming, item: Media) -> bytes | None:
    """The file's bytes, or None once the user has been told why not."""
    try:
        return app.sender.download(item.file_id, media.TELEGRAM_DOWNLOAD_LIMIT, media.DOWNLOAD_TIMEOUT)
    except FileTooBig:
        app.reply(inc, app.t(inc, "files.too_big_unknown"))
    except TelegramError as exc:
        log.warning("update %s: download of a %s failed: %s", inc.update_id, item.field, exc.description)
        app.reply(inc, app.t(inc, "files.download_failed"))
    return None


def _voice(app: App, inc: Incoming, item: Media, turn: Turn) -> None:
    """Transcribed, shown as a quote, then answered as if typed."""
    target = app.media.transcription
    if target is None:
        app.reply(inc, app.t(inc, "voice.off"))
        return
    app.typing.start(inc.chat_id, inc.thread_id)
    try:
        data = _download(app, inc, item)
        if data is None:
            return
        try:
            transcript = app.llm.transcribe(target.provider, target.model, _audio_name(item), data)
        except llm.LLMError as exc:
            log.warning("update %s: transcription by %s/%s failed: %r", inc.update_id, target.provider,
                        target.model, exc)
            provider = app.registry.provider_title(target.provider)
            app.reply(inc, app.t(inc, "voice.failed", provider=html.escape(provider)))
            return
    finally:
        app.typing.stop(inc.chat_id, inc.thread_id)
    app.quotas.record(inc.user_id, transcript.prompt_tokens, transcript.completion_tokens)
    heard = transcript.text.strip()
    if not heard:
        app.reply(inc, app.t(inc, "voice.silent"))
        return
    shown = heard if len(heard) <= MAX_SHOWN_TRANSCRIPT else heard[:MAX_SHOWN_TRANSCRIPT].rstrip() + "…"
    app.reply(inc, app.t(inc, "voice.heard", text=html.escape(shown)))
    turn(app, inc, text=f"{inc.text}\n\n{heard}" if inc.text else heard)


def _audio_name(item: Media) -> str:
    """A file name whose extension tells the transcription API the format (it goes by the name)."""
    if item.file_name and "." in item.file_name:
        return item.file_name
    extension = AUDIO_EXTENSIONS.get(item.mime_type or "") or AUDIO_EXTENSIONS.get(item.field, "ogg")
    return f"{item.field}.{extension}"


def _image(app: App, inc: Incoming, item: Media, turn: Turn) -> None:
    """A photo (or an image file) for a model that can see it, with the caption as the question."""
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    if not app.media.sees_images(model):
        # The default first, then in the catalog's order (newest first).
        offered = sorted((m for m in app.registry.models.values() if m.featured),
                         key=lambda m: m.id != app.registry.default_model)
        seeing = [m.id for m in offered if m.vision and m.id not in app.media.text_only]
        if not seeing:
            app.reply(inc, app.t(inc, "images.text_only_none", model=html.escape(model.id)))
            return
        listed = ", ".join(f"<code>{html.escape(m)}</code>" for m in seeing[:MAX_LISTED_MODELS])
        app.reply(inc, app.t(inc, "images.text_only", model=html.escape(model.id), models=listed))
        return
    data = _download(app, inc, item)
    if data is None:
        return
    try:
        image = media.prepare_image(data)
    except MediaError as exc:
        log.info("update %s: unreadable image: %s", inc.update_id, exc)
        app.reply(inc, app.t(inc, "images.unreadable"))
        return
    ref = app.media.store.put(image.data, image.width, image.height)
    turn(app, inc, text=inc.text or app.t(inc, "images.question"), images=(ref,))


def _document(app: App, inc: Incoming, item: Media, kind: Kind, turn: Turn) -> None:
    """A PDF's text or a text file's content, named, in the user's message."""
    data = _download(app, inc, item)
    if data is None:
        return
    file_name = item.file_name or ("document.pdf" if kind is Kind.PDF else "document.txt")
    name = f"<b>{html.escape(file_name)}</b>"
    session = app.session(inc)
    model = app.registry.resolve(session.model)
    reserve = model.reply_reserve(app.config.max_reply_tokens)
    room = max(0, model.context_window - reserve - session.system_tokens)
    try:
        if kind is Kind.PDF:
            # Extraction stops well past what could fit: 4 characters a token is typical, 8 is ample.
            extracted = media.pdf_text(data, max_chars=room * 8)
        else:
            extracted = media.Extracted(media.decode_text(data))
    except MediaError as exc:
        log.info("update %s: unreadable %s: %s", inc.update_id, file_name, exc)
        app.reply(inc, app.t(inc, f"files.{exc.reason}", name=name))
        return
    if not extracted.complete:
        counted = chat.counter(model).count(extracted.text)
        app.reply(inc, app.t(inc, "files.too_large_partial", name=name, model=html.escape(model.id),
                             approx=chat.approx(model), tokens=f"{counted:,}",
                             pages=extracted.pages, window=f"{model.context_window:,}",
                             reserve=f"{reserve:,}"))
        return
    question = inc.text or app.t(inc, "files.question")
    turn(app, inc, text=media.file_message(file_name, extracted.text, question), file_name=file_name)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"
