"""System-prompt presets: the shipped `presets.toml`, extended or overridden by `PRESETS_FILE`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import ConfigError, check_keys

BUILTIN_PRESETS = Path(__file__).with_name("presets.toml")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
PRESET_KEYS = frozenset({"title", "description", "prompt", "model", "temperature"})
_TRANSLATED = re.compile(r"(title|description)_[a-z]{2}")  # title_ru, description_ru, ...


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    prompt: str
    description: str = ""
    model: str | None = None
    temperature: float | None = None
    # language -> (title, description), from title_<language> and description_<language>
    translations: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def title_in(self, language: str) -> str:
        return self.translations.get(language, (self.title, ""))[0]

    def description_in(self, language: str) -> str:
        return self.translations.get(language, ("", self.description))[1]


def load_presets(user_file: Path | None, builtin: Path = BUILTIN_PRESETS) -> dict[str, Preset]:
    """Presets by name, the user's file overriding the shipped ones."""
    presets: dict[str, Preset] = {}
    for path, label in ((builtin, "presets.toml"), (user_file, "PRESETS_FILE")):
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(label, f"cannot load {path}: {exc}") from None
        check_keys(label, str(path), data, ("presets",))
        table = data.get("presets", {})
        if not isinstance(table, dict):
            raise ConfigError(label, "[presets.NAME] entries must be tables")
        for name, spec in table.items():
            presets[name] = _preset(name, spec, label, str(path))
    return presets


def _preset(name: str, spec: Any, label: str, path: str) -> Preset:
    if not _NAME.match(name):
        raise ConfigError(label, f"preset name {name!r} must be lowercase letters, digits and _")
    if isinstance(spec, dict):
        check_keys(label, f"{path}: [presets.{name}]", spec,
                   PRESET_KEYS | {k for k in spec if _TRANSLATED.fullmatch(k)})
    if not isinstance(spec, dict) or not isinstance(spec.get("prompt"), str) or not spec["prompt"].strip():
        raise ConfigError(label, f"preset {name!r} needs a prompt")
    temperature = spec.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        raise ConfigError(label, f"preset {name!r}: temperature must be a number from 0 to 2")
    model = spec.get("model")
    title, description = str(spec.get("title", name)), str(spec.get("description", ""))
    languages = {k.partition("_")[2] for k in spec if _TRANSLATED.fullmatch(k)}
    translations = {lang: (str(spec.get(f"title_{lang}", title)),
                           str(spec.get(f"description_{lang}", description))) for lang in languages}
    return Preset(
        name=name,
        title=title,
        prompt=spec["prompt"].strip(),
        description=description,
        model=str(model) if model else None,
        temperature=float(temperature) if temperature is not None else None,
        translations=translations,
    )
