"""The interface's wording in every language: keys in the code, texts in `locales/<language>.toml`.

Texts are HTML (Telegram's parse mode) with `{name}` placeholders; callers escape the values they
fill in. A user's language is the one they chose with /lang, else their Telegram app's language
when there is a translation for it, else English.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCALES = Path(__file__).with_name("locales")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "ru": "Русский"}  # each in its own language, for the buttons
# How a language writes numbers the code formats the English way ("400,000", "12.5%"): its
# thousands separator and decimal mark. Languages not listed write them as English does. Only the
# placeholders below hold numbers the code formatted; anything else (a user's text, an id, a name,
# a version) is never rewritten, even when it looks like a number.
NUMBER_MARKS = {"ru": ("\u00a0", ",")}
NUMBER_PLACEHOLDERS = frozenset({
    "amount", "completion", "conversations", "count", "days", "hours", "left", "length", "limit", "messages",
    "minutes", "month", "page", "pages", "prompt_tokens", "requests", "reserve", "seconds", "share", "size",
    "today", "tokens", "total", "used", "window",
})
_NUMBER = re.compile(r"((?:&lt;)?[$≈]*)(\d{1,3}(?:,\d{3})*|\d+)(\.\d+)?(%?)")


class CatalogError(Exception):
    """A locale file is unreadable, or a text is missing from the default language."""


@dataclass(frozen=True)
class Catalog:
    texts: Mapping[str, Mapping[str, str]]  # language -> key -> text

    @property
    def languages(self) -> list[str]:
        return sorted(self.texts)

    def language(self, chosen: str | None, app_language: str | None) -> str:
        """The language to speak: the user's choice, else their app's when translated, else English."""
        if chosen in self.texts:
            return chosen
        base = (app_language or "").split("-")[0].lower()
        return base if base in self.texts else DEFAULT_LANGUAGE

    def text(self, language: str, key: str, /, **values: object) -> str:
        template = self.texts.get(language, {}).get(key) or self.texts[DEFAULT_LANGUAGE].get(key)
        if template is None:
            raise CatalogError(f"no text for {key!r}")
        if not values:
            return template
        if language in NUMBER_MARKS:
            marks = NUMBER_MARKS[language]
            values = {name: _number(value, *marks) if name in NUMBER_PLACEHOLDERS else value
                      for name, value in values.items()}
        return template.format(**values)

    def duration(self, language: str, seconds: float) -> str:
        """A span of time as `1d 2h`, `3h 4m` or `5m`, in the units of `language`."""
        minutes = max(int(seconds // 60), 0)
        days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
        if days:
            return self.text(language, "units.days_hours", days=days, hours=hours)
        if hours:
            return self.text(language, "units.hours_minutes", hours=hours, minutes=minutes)
        return self.text(language, "units.minutes", minutes=minutes)


def load_catalog(folder: Path = LOCALES) -> Catalog:
    """Every `<language>.toml` in `folder`, nested tables flattened to dotted keys."""
    texts: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            with open(path, "rb") as f:
                texts[path.stem] = _flatten(tomllib.load(f))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"cannot read {path}: {exc}") from None
    if DEFAULT_LANGUAGE not in texts:
        raise CatalogError(f"{folder} has no {DEFAULT_LANGUAGE}.toml")
    return Catalog(texts)


def placeholders(template: str) -> set[str]:
    """The names a text fills in (for the catalog's completeness test)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            raise CatalogError(f"{name} must be text")
    return flat


def _number(value: object, thousands: str, decimal: str) -> object:
    """A value that is a number formatted the English way, written with another language's marks."""
    if not isinstance(value, str) or not (match := _NUMBER.fullmatch(value)):
        return value
    prefix, whole, fraction, percent = match.groups()
    written = whole.replace(",", thousands) + (fraction or "").replace(".", decimal)
    return prefix + written + ("\u00a0%" if percent else "")
