"""Voice notes, photos and files: made into a chat turn (transcript, image part, or file text).

The access check has been done by `commands.handle` before anything here runs, so a refused user
costs no download. Each attachment is checked against what can work (size, kind, model) before it
is downloaded; every failure is one clear sentence and leaves the conversation as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from config import Config, ConfigError
from models import Registry

log = logging.getLogger(__name__)

OFF = ("off", "none", "false", "no", "0")


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
