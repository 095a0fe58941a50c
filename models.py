"""The model registry: one table of providers and models, built once at start.

Sources, later ones overriding earlier: the catalog shipped with the bot
(`builtin_models.toml`), the user's `MODELS_FILE`, and what providers report
about their own models at run time. `Registry.get()` raises `UnknownModel`
for ids it does not know; `Registry.resolve()` gives any id a conservative entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from config import Config, ConfigError, Secret, check_keys
from media import IMAGE_TOKEN_FORMULAS
from tokens import FALLBACK_ENCODING, known_encoding

log = logging.getLogger(__name__)

BUILTIN_CATALOG = Path(__file__).with_name("builtin_models.toml")
PREFERRED_DEFAULTS = ("gpt-5.4-mini", "gpt-5.4", "gpt-5.5")
# Words in ids of listed models that do not chat.
NOT_CHAT = ("embed", "whisper", "tts", "moderation", "dall-e", "image", "transcribe", "realtime", "rerank",
            "guard", "audio", "search", "sora")
# The keys an entry may have: anything else is a typo that must not pass silently.
PROVIDER_KEYS = frozenset({"title", "base_url", "base_url_env", "api_key_env", "key_optional",
                           "stream_options", "discover", "tiktoken", "context_probe",
                           "gateway_when_overridden", "image_tokens", "transcribe_model"})
MODEL_KEYS = frozenset({"id", "provider", "context_window", "max_output", "title", "encoding", "reasoning",
                        "shutdown", "source", "vision", "price_in", "price_out", "price_cached_in",
                        "discover"})
# For models nobody describes: small enough for any current chat model.
CONSERVATIVE_WINDOW = 8192
CONSERVATIVE_OUTPUT = 1024


class UnknownModel(LookupError):
    """A model id the registry does not offer."""

    def __init__(self, model_id: str, known: list[str], reason: str | None = None) -> None:
        super().__init__(f"unknown model {model_id!r}")
        self.model_id = model_id
        self.known = known
        self.reason = reason  # why a described model is not offered, e.g. its provider's key is unset


@dataclass(frozen=True)
class Provider:
    name: str
    title: str
    base_url: str | None
    api_key: Secret | None = field(default=None, repr=False)
    needs_key: bool = True
    stream_options: bool = True
    discover: bool = True
    exact_tokens: bool = False
    context_probe: str | None = None  # "ollama": ask /api/show and /api/ps for each model's running context
    # Its base URL was pointed elsewhere (OPENAI_BASE_URL at LiteLLM, a company proxy): that server's list
    # is what it serves, so its models are offered and catalog models it does not list are not.
    gateway: bool = False
    image_tokens: str = "openai"  # whose formula counts an image's tokens (media.IMAGE_TOKEN_FORMULAS)
    transcribe_model: str | None = None  # its speech-to-text model at POST /audio/transcriptions
    # The variables that configure it, so that a provider left off can say which one is missing.
    api_key_env: str | None = None
    base_url_env: str | None = None

    @property
    def enabled(self) -> bool:
        return self.missing is None

    @property
    def missing(self) -> str | None:
        """Why the provider is off ("LAB_API_KEY is not set"); None when it is on."""
        if not self.base_url:
            return f"{self.base_url_env} is not set" if self.base_url_env else "it has no base_url"
        if self.needs_key and not self.api_key:
            return f"{self.api_key_env} is not set"
        return None


@dataclass(frozen=True)
class ModelInfo:
    id: str
    provider: str
    context_window: int
    max_output: int
    title: str = ""
    encoding: str = FALLBACK_ENCODING
    exact_tokens: bool = False
    reasoning: bool = False
    shutdown: dt.date | None = None
    known: bool = True
    # Shown in the picker and /info; discovered models of a described provider are reachable by id only.
    featured: bool = True
    vision: bool | None = None  # takes image input; None: nobody says, so an image is tried
    image_tokens: str = "openai"  # its provider's image-token formula (Provider.image_tokens)
    # USD per million tokens, where the provider's price is known (None: unknown, no cost is shown).
    price_in: float | None = None
    price_out: float | None = None
    price_cached_in: float | None = None  # cached prompt tokens; unknown: charged as price_in

    @property
    def label(self) -> str:
        return self.title or self.id

    @property
    def key(self) -> str:
        """A short stable token for callback data (Telegram allows 64 bytes)."""
        return hashlib.sha1(f"{self.provider}/{self.id}".encode()).hexdigest()[:12]

    @property
    def priced(self) -> bool:
        return self.price_in is not None and self.price_out is not None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float | None:
        """Estimated USD for one request's reported tokens; None when the price is not known."""
        if self.price_in is None or self.price_out is None:
            return None
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.price_in if self.price_cached_in is None else self.price_cached_in
        return ((prompt_tokens - cached) * self.price_in + cached * cached_price
                + completion_tokens * self.price_out) / 1_000_000

    def reply_reserve(self, cap: int) -> int:
        """Tokens kept free for the answer (and asked for as its maximum).

        A reasoning model's hidden reasoning counts against the same budget, so `cap` would leave a hard
        question with no room to answer: such models keep their own output limit.
        """
        limit = self.max_output if self.reasoning else min(self.max_output, cap)
        return max(1, min(limit, self.context_window // 2))


@dataclass
class Registry:
    providers: dict[str, Provider]
    models: dict[str, ModelInfo]
    default_model: str
    # Ids described by the user's MODELS_FILE: what providers report does not override them.
    user_defined: frozenset[str] = frozenset()
    default_pinned: bool = False  # DEFAULT_MODEL set: kept even where a gateway does not list it
    # Set once providers have been asked for their lists: until then an unknown id may still appear.
    discovered: threading.Event = field(default_factory=threading.Event)
    # Described models whose provider is off: id -> why, so that choosing one says so.
    unavailable: dict[str, str] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)

    def get(self, model_id: str) -> ModelInfo:
        try:
            return self.models[model_id]
        except KeyError:
            raise UnknownModel(model_id, sorted(self.models), self.unavailable.get(model_id)) from None

    def by_key(self, key: str) -> ModelInfo | None:
        return next((m for m in self.models.values() if m.key == key), None)

    def resolve(self, model_id: str) -> ModelInfo:
        """The entry for a model id; unknown ids get a conservative one on the default provider."""
        if model_id in self.models:
            return self.models[model_id]
        if model_id not in self._warned:
            self._warned.add(model_id)
            log.warning("model %s is not in the registry: assuming a %d-token window", model_id,
                        CONSERVATIVE_WINDOW)
        provider = self.models[self.default_model].provider if self.default_model in self.models else "openai"
        return ModelInfo(model_id, provider, CONSERVATIVE_WINDOW, CONSERVATIVE_OUTPUT,
                         encoding=FALLBACK_ENCODING, known=False, image_tokens=self._image_tokens(provider))

    def provider_title(self, provider: str) -> str:
        """The provider's name as users know it ("OpenAI"); its key for one nobody describes."""
        known = self.providers.get(provider)
        return known.title if known else provider

    def _image_tokens(self, provider: str) -> str:
        known = self.providers.get(provider)
        return known.image_tokens if known else "openai"

    def available(self, featured_only: bool = False) -> list[ModelInfo]:
        """Offered models, grouped by provider in catalog order."""
        order = {name: i for i, name in enumerate(self.providers)}
        models = [m for m in self.models.values() if m.featured or not featured_only]
        return sorted(models, key=lambda m: (order.get(m.provider, 99), m.id))

    def add_discovered(self, provider: str, found: Iterable[tuple[str, int | None]]) -> int:
        """Add models a provider lists; a reported window overrides the catalog's, not the user's.

        A gateway's list is what it serves: all its chat models are offered, and the catalog's models
        of that provider it does not list are not (the default moves to a listed one unless DEFAULT_MODEL
        pins it).
        """
        found = list(found)
        added = 0
        models = dict(self.models)  # swapped in whole: handlers iterate the old one meanwhile
        described = any(m.provider == provider for m in models.values())
        gateway = self.providers[provider].gateway and bool(found)
        openai_tokenizers = self.providers[provider].exact_tokens
        for model_id, window in found:
            current = models.get(model_id)
            if current is None:
                if any(w in model_id.lower() for w in NOT_CHAT) or (openai_tokenizers and window is None
                                                                     and not gateway):
                    continue  # OpenAI lists embeddings, audio, images...: offer only chat models
                encoding = known_encoding(model_id) if openai_tokenizers else None
                models[model_id] = ModelInfo(
                    model_id, provider, window or CONSERVATIVE_WINDOW,
                    min(CONSERVATIVE_OUTPUT * 4, (window or CONSERVATIVE_WINDOW) // 4),
                    encoding=encoding or FALLBACK_ENCODING, exact_tokens=encoding is not None,
                    featured=gateway or not described, image_tokens=self._image_tokens(provider),
                )
                added += 1
            elif window and current.provider == provider and model_id not in self.user_defined:
                models[model_id] = replace(current, context_window=window)
        if gateway:
            kept = {model_id for model_id, _ in found} | self.user_defined
            gone = [m for m, info in models.items() if info.provider == provider and m not in kept]
            for model_id in gone:
                del models[model_id]
            if gone:
                log.info("gateway %s does not list %d catalog models: not offered", provider, len(gone))
            if self.default_model in gone and not self.default_pinned:
                listed = [m for m, _ in found if m in models]
                self.default_model = listed[0] if listed else self.default_model
                log.info("default model: %s (the first that gateway %s lists)", self.default_model, provider)
        self.models = models
        return added

    def learn_window(self, provider: str, model_id: str, window: int) -> bool:
        """The window the provider really runs the model with (stated in a refusal, or Ollama's /api/ps).

        It beats every other source, the user's MODELS_FILE too: the provider has just shown it.
        """
        current = self.models.get(model_id)
        if current is None or current.provider != provider or window < 256:
            return False
        if current.context_window == window:
            return False
        if model_id in self.user_defined:
            log.warning("%s runs %s with a %d-token window, not the %d in MODELS_FILE: using %d", provider,
                        model_id, window, current.context_window, window)
        else:
            log.info("%s runs %s with a %d-token window (was %d)", provider, model_id, window,
                     current.context_window)
        self.models = {**self.models, model_id: replace(current, context_window=window)}
        return True


def load_registry(config: Config, today: dt.date | None = None,
                  builtin: Path = BUILTIN_CATALOG) -> Registry:
    """Build the registry from the shipped catalog and the user's MODELS_FILE."""
    today = today or dt.date.today()
    sources = [(_read_toml(builtin, "builtin catalog"), "builtin catalog", str(builtin))]
    if config.models_file:
        user = _read_toml(config.models_file, "MODELS_FILE")
        sources.append((user, "MODELS_FILE", str(config.models_file)))

    providers: dict[str, Provider] = {}
    user_providers: set[str] = set()
    for source, label, path in sources:
        check_keys(label, path, source, ("providers", "models"))
        for name, spec in _table(source, "providers", label).items():
            providers[name] = _provider(name, spec, config.provider_env, label, path)
            if label == "MODELS_FILE":
                user_providers.add(name)

    models: dict[str, ModelInfo] = {}
    user_defined: set[str] = set()
    for source, label, path in sources:
        for spec in _array(source, "models", label):
            info = _model(spec, providers, label, path)
            if label == "MODELS_FILE":
                user_defined.add(info.id)
            if info.shutdown and info.shutdown <= today:
                log.info("model %s was shut down on %s: not offered", info.id, info.shutdown)
                models.pop(info.id, None)
                continue
            models[info.id] = info

    enabled = {name for name, p in providers.items() if p.enabled}
    offered = {mid: m for mid, m in models.items() if m.provider in enabled}
    unavailable = {mid: f"its provider {m.provider} is off: {providers[m.provider].missing}"
                   for mid, m in models.items() if m.provider not in enabled}
    if not enabled:
        yours = "".join(f"; provider {name} from MODELS_FILE is off: {providers[name].missing}"
                        for name in sorted(user_providers))
        raise ConfigError("OPENAI_API_KEY",
                          f"is required (or configure another provider's key or base URL{yours})")

    default = config.default_model or _pick_default(offered, today)
    if default and default not in offered:
        if default in models:
            raise ConfigError("DEFAULT_MODEL", f"{default} needs provider {models[default].provider}, "
                                               "which has no key or base URL configured")
        log.warning("DEFAULT_MODEL %s is not in the registry: using a conservative context window", default)
    _log_disabled(providers, user_providers)
    # An empty default means only a local provider with nothing described yet: discovery fills it.
    return Registry(providers, offered, default, frozenset(user_defined), bool(config.default_model),
                    unavailable=unavailable)


def _log_disabled(providers: Mapping[str, Provider], user_providers: set[str]) -> None:
    """Say at start which providers are off and why: loudly for the user's own."""
    quiet = []
    for name, provider in providers.items():
        if provider.missing is None:
            continue
        if name in user_providers:
            log.warning("provider %s from MODELS_FILE is off: %s; its models are not offered",
                        name, provider.missing)
        else:
            quiet.append(f"{name} ({provider.missing.removesuffix(' is not set')})")
    if quiet:
        log.info("providers off for want of a setting: %s", ", ".join(quiet))


def _pick_default(models: Mapping[str, ModelInfo], today: dt.date) -> str:
    """A current, cheap model that is not announced for shutdown within half a year."""
    soon = today + dt.timedelta(days=180)
    for model_id in PREFERRED_DEFAULTS:
        info = models.get(model_id)
        if info and (info.shutdown is None or info.shutdown > soon):
            return model_id
    lasting = [m for m in models.values() if m.shutdown is None or m.shutdown > soon]
    candidates = lasting or list(models.values())
    return candidates[0].id if candidates else ""


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(label, f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(label, f"{path} is not valid TOML: {exc}") from None


def _table(source: Mapping[str, Any], key: str, label: str) -> dict[str, Any]:
    value = source.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(label, f"[{key}.NAME] entries must be tables")
    return value


def _array(source: Mapping[str, Any], key: str, label: str) -> list[dict[str, Any]]:
    value = source.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(label, f"[[{key}]] entries must be tables")
    return value


def _provider(name: str, spec: Mapping[str, Any], env: Mapping[str, Secret | str], label: str,
              path: str) -> Provider:
    check_keys(label, f"{path}: [providers.{name}]", spec, PROVIDER_KEYS)
    key_var, url_var = spec.get("api_key_env"), spec.get("base_url_env")
    for key, value in (("api_key_env", key_var), ("base_url_env", url_var)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(label, f"{path}: [providers.{name}]: {key} must be a variable name")
    key = env.get(key_var) if key_var else None
    url = env.get(url_var) if url_var else None
    base_url = (url if isinstance(url, str) else None) or spec.get("base_url")
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigError(label, f"providers.{name}.base_url must be a string")
    return Provider(
        name=name,
        title=str(spec.get("title", name)),
        base_url=base_url.rstrip("/") if base_url else None,
        api_key=key if isinstance(key, Secret) else None,
        needs_key=bool(key_var) and spec.get("key_optional") is not True,
        stream_options=bool(spec.get("stream_options", True)),
        discover=bool(spec.get("discover", True)),
        exact_tokens=bool(spec.get("tiktoken", False)),
        context_probe=spec.get("context_probe"),
        gateway=bool(spec.get("gateway_when_overridden")) and isinstance(url, str) and bool(url)
        and url.rstrip("/") != str(spec.get("base_url", "")).rstrip("/"),
        image_tokens=_image_tokens(spec.get("image_tokens", "openai"), f"providers.{name}", label),
        transcribe_model=str(spec["transcribe_model"]) if spec.get("transcribe_model") else None,
        api_key_env=key_var,
        base_url_env=url_var,
    )


def _image_tokens(value: object, where: str, label: str) -> str:
    if value not in IMAGE_TOKEN_FORMULAS:
        raise ConfigError(label, f"{where}.image_tokens must be one of {', '.join(IMAGE_TOKEN_FORMULAS)}")
    return str(value)


def _model(spec: Mapping[str, Any], providers: Mapping[str, Provider], label: str, path: str) -> ModelInfo:
    model_id, provider = spec.get("id"), spec.get("provider", "openai")
    where = f"model {model_id!r}"
    check_keys(label, f"{path}: [[models]] {where}", spec, MODEL_KEYS)
    if not isinstance(model_id, str) or not model_id.strip():
        raise ConfigError(label, f"{path}: every [[models]] entry needs an id")
    if provider not in providers:
        raise ConfigError(label, f"{where}: unknown provider {provider!r} (known: {', '.join(providers)})")
    window, output = spec.get("context_window"), spec.get("max_output", CONSERVATIVE_OUTPUT)
    if not isinstance(window, int) or window < 256:
        raise ConfigError(label, f"{where}: context_window must be a whole number of tokens >= 256")
    if not isinstance(output, int) or not output >= 1:
        raise ConfigError(label, f"{where}: max_output must be a positive whole number")
    shutdown = spec.get("shutdown")
    if shutdown is not None and not isinstance(shutdown, dt.date):
        raise ConfigError(label, f"{where}: shutdown must be a TOML date like 2027-01-14")
    vision = spec.get("vision")
    if vision is not None and not isinstance(vision, bool):
        raise ConfigError(label, f"{where}: vision must be true or false")
    # Exact only where the provider uses OpenAI's tokenizers and tiktoken knows the model (or is told).
    openai_tokenizers = providers[provider].exact_tokens
    encoding = spec.get("encoding") or (known_encoding(model_id) if openai_tokenizers else None)
    return ModelInfo(
        id=model_id,
        provider=provider,
        context_window=window,
        max_output=output,
        title=str(spec.get("title", "")),
        encoding=str(encoding or FALLBACK_ENCODING),
        exact_tokens=encoding is not None,
        reasoning=bool(spec.get("reasoning", False)),
        shutdown=shutdown,
        vision=vision,
        image_tokens=providers[provider].image_tokens,
        **_prices(spec, where, label),
    )


PRICE_KEYS = ("price_in", "price_out", "price_cached_in")


def _prices(spec: Mapping[str, Any], where: str, label: str) -> dict[str, float]:
    """price_in / price_out (both or neither) and price_cached_in, USD per million tokens."""
    prices = {}
    for key in PRICE_KEYS:
        value = spec.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 10_000:
            raise ConfigError(label, f"{where}: {key} must be a number of USD per million tokens")
        prices[key] = float(value)
    if prices and not {"price_in", "price_out"} <= prices.keys():
        raise ConfigError(label, f"{where}: give both price_in and price_out (USD per million tokens)")
    return prices
