"""The provider client: the only code that talks to model APIs.

Every provider is reached through the openai SDK with its own base URL. The
client holds no conversation state: it takes the messages of one request and
returns the answer, calling `on_delta` with each piece of text while streaming.
Failures come out as the typed errors below. Known provider quirks (no
`stream_options`, `max_completion_tokens` instead of `max_tokens`) are learnt
from the first refusal, remembered, and the request is retried at once.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import openai

from models import ModelInfo, Provider

log = logging.getLogger(__name__)

CANCEL_POLL = 0.2  # seconds: how soon a stop is noticed while the model is silent


class LLMError(Exception):
    """A model request failed; subclasses say how."""


class RateLimited(LLMError):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


class ProviderDown(LLMError):
    """Connection refused, timeout, 5xx, or a stream that broke off."""


class ContextTooLong(LLMError):
    """The provider counted more tokens than its window holds."""


class AuthFailed(LLMError):
    """The key was refused (401/403)."""


class ModelNotFound(LLMError):
    """The provider does not serve this model (404)."""


class BadRequest(LLMError):
    """Any other refusal of the request (400/422)."""


class ProviderNotConfigured(LLMError):
    """The model's provider has no key or base URL."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    cancelled: bool = False
    interrupted: bool = False  # the stream broke off after some text: `text` is what arrived


@dataclass(frozen=True)
class Request:
    model: ModelInfo
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float | None = None
    stream: bool = True


class LLMClient:
    """Sends chat requests to the configured providers."""

    def __init__(self, providers: dict[str, Provider], timeout: float, max_retries: int = 1) -> None:
        self._providers = providers
        self._timeout = timeout
        self._max_retries = max_retries
        self._clients: dict[str, openai.OpenAI] = {}
        self._lock = threading.Lock()
        # Learnt quirks: providers refusing stream_options, models wanting max_completion_tokens.
        self._no_stream_options: set[str] = {n for n, p in providers.items() if not p.stream_options}
        # Model id -> the name its provider wants for the answer's length limit.
        self._length_param: dict[str, str] = {}
        self._no_temperature: set[str] = set()

    def complete(self, request: Request, on_delta: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None) -> Completion:
        """Run one chat request; streams when `request.stream`, calling `on_delta(piece)` per piece."""
        client = self._client(request.model.provider)
        for _attempt in range(4):  # each retry removes one learnt quirk
            params = self._params(request)
            try:
                if request.stream:
                    return self._stream(client, params, on_delta, cancel)
                return self._plain(client, params)
            except openai.APIStatusError as exc:
                if not self._learn(request, params, exc):
                    raise _translate(exc) from exc
            except openai.APIError as exc:  # connection errors, and errors sent inside a stream
                raise _translate(exc) from exc
        raise BadRequest("the provider refused every variant of the request")

    def list_models(self, provider: str) -> list[tuple[str, int | None]]:
        """Model ids the provider lists, with the context length where it reports one."""
        client = self._client(provider)
        try:
            page = client.models.list()
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise _translate(exc) from exc
        found = []
        for item in page.data:
            extra = item.model_extra or {}
            # OpenRouter reports context_length, vLLM max_model_len.
            window = _positive(extra.get("context_length") or extra.get("max_model_len"))
            if window is None and self._providers[provider].context_probe == "ollama":
                window = self._ollama_context(client, item.id)
            found.append((item.id, window))
        return found

    def _ollama_context(self, client: openai.OpenAI, model_id: str) -> int | None:
        """Ollama tells a model's context length in /api/show, beside its OpenAI-style /v1."""
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        try:
            info = client.post(f"{root}/api/show", body={"model": model_id}, cast_to=object)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            log.info("ollama /api/show failed for %s: %r", model_id, exc)
            return None
        details = info.get("model_info", {}) if isinstance(info, dict) else {}
        return next((_positive(v) for k, v in details.items() if k.endswith(".context_length")), None)

    def _client(self, provider_name: str) -> openai.OpenAI:
        provider = self._providers.get(provider_name)
        if provider is None or not provider.enabled:
            raise ProviderNotConfigured(provider_name)
        with self._lock:
            client = self._clients.get(provider_name)
            if client is None:
                client = self._clients[provider_name] = openai.OpenAI(
                    api_key=provider.api_key.value if provider.api_key else "not-needed",
                    base_url=provider.base_url,
                    timeout=self._timeout,
                    max_retries=self._max_retries,
                )
            return client

    def _params(self, request: Request) -> dict[str, Any]:
        model = request.model
        params: dict[str, Any] = {"model": model.id, "messages": request.messages}
        default = "max_completion_tokens" if model.reasoning else "max_tokens"
        params[self._length_param.get(model.id, default)] = request.max_tokens
        if request.temperature is not None and not model.reasoning and model.id not in self._no_temperature:
            params["temperature"] = request.temperature
        if request.stream:
            params["stream"] = True
            if model.provider not in self._no_stream_options:
                params["stream_options"] = {"include_usage": True}
        return params

    def _learn(self, request: Request, params: dict[str, Any], exc: openai.APIStatusError) -> bool:
        """Remember a quirk the refusal reveals; True when a retry is worth it."""
        if exc.status_code not in (400, 422):
            return False
        text = f"{exc.message} {exc.param or ''} {exc.code or ''}".lower()
        model = request.model
        if "stream_options" in params and "stream_options" in text:
            log.info("provider %s refuses stream_options: not sending it again", model.provider)
            self._no_stream_options.add(model.provider)
            return True
        for used, other in (("max_tokens", "max_completion_tokens"), ("max_completion_tokens", "max_tokens")):
            # OpenAI's reasoning models refuse max_tokens; some other providers max_completion_tokens.
            if used in params and model.id not in self._length_param and re.search(rf"\b{used}\b", text):
                log.info("model %s refuses %s: sending %s", model.id, used, other)
                self._length_param[model.id] = other
                return True
        if "temperature" in params and "temperature" in text:
            log.info("model %s takes only the default temperature", model.id)
            self._no_temperature.add(model.id)
            return True
        return False

    def _plain(self, client: openai.OpenAI, params: dict[str, Any]) -> Completion:
        response = client.chat.completions.create(**params)
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            text=_clean((choice.message.content if choice else None) or ""),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason if choice else None,
        )

    def _stream(self, client: openai.OpenAI, params: dict[str, Any],
                 on_delta: Callable[[str], None] | None, cancel: threading.Event | None) -> Completion:
        result = Completion(text="")
        parts: list[str] = []
        stream = client.chat.completions.create(**params)
        # A reader thread feeds a queue, so that a stop is seen at once even while the model is
        # silent (a sync stream cannot be interrupted from another thread).
        pieces: queue.Queue[str | BaseException | None] = queue.Queue()
        threading.Thread(target=_pump, args=(stream, result, pieces), name="llm-stream", daemon=True).start()
        try:
            while not (cancel is not None and cancel.is_set()):
                try:
                    piece = pieces.get(timeout=CANCEL_POLL)
                except queue.Empty:
                    continue
                if piece is None:
                    break
                if isinstance(piece, BaseException):
                    if not parts:
                        if isinstance(piece, openai.APIError):
                            raise piece
                        raise ProviderDown(f"stream broke off: {piece!r}") from piece
                    # Keep what arrived: the user sees it, marked as incomplete.
                    log.warning("stream broke off after %d chunks: %r", len(parts), piece)
                    result.interrupted = True
                    break
                parts.append(_clean(piece))
                if on_delta is not None:
                    on_delta(parts[-1])
            else:
                result.cancelled = True
        finally:
            stream.close()
        result.text = "".join(parts)
        return result


def _pump(stream: Iterable[Any], result: Completion, pieces: queue.Queue[str | BaseException | None]) -> None:
    """Put a stream's text deltas on `pieces`, then None, or the error that ended it."""
    try:
        for piece in _chunks(stream, result):
            pieces.put(piece)
    except Exception as exc:  # the SDK's errors, or raw transport errors of a broken stream
        pieces.put(exc)
    else:
        pieces.put(None)


def _positive(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and value > 0 else None


def _chunks(stream: Iterable[Any], result: Completion) -> Iterable[str]:
    """Text deltas of a stream; usage and finish reason are stored on `result`."""
    for chunk in stream:
        if chunk.usage is not None:
            result.prompt_tokens = chunk.usage.prompt_tokens
            result.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices or ():
            if choice.finish_reason:
                result.finish_reason = choice.finish_reason
            if choice.delta and choice.delta.content:
                yield choice.delta.content


def _clean(text: str) -> str:
    # Lone surrogates from a broken provider would make every Telegram call fail.
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(text) else text


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _translate(exc: openai.APIError) -> LLMError:
    """The typed error for an SDK error; the message keeps what the log needs."""
    detail = f"{exc.__class__.__name__}: {exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        return ProviderDown(detail)
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after")
        try:
            return RateLimited(float(retry) if retry else None)
        except ValueError:
            return RateLimited(None)
    if isinstance(exc, openai.APIStatusError):
        if exc.code == "context_length_exceeded" or "maximum context length" in exc.message.lower():
            return ContextTooLong(detail)
        if exc.status_code in (401, 403):
            return AuthFailed(detail)
        if exc.status_code == 404:
            return ModelNotFound(detail)
        if exc.status_code >= 500 or exc.status_code in (408, 409, 425, 529):
            return ProviderDown(detail)
        return BadRequest(detail)
    return ProviderDown(detail)
