"""The provider client: the only code that talks to model APIs.

Every provider is reached through the openai SDK with its own base URL. The client holds no
conversation state: it takes the messages of one request and returns the answer, calling `on_delta`
with each piece of text and `on_reasoning` with each piece of reasoning while streaming (reasoning
never enters the answer). Failures come out as the typed errors of `provider_errors`. Known provider
quirks (no `stream_options`, `max_completion_tokens` instead of `max_tokens`) are learnt from the first
refusal, remembered, and the request is retried at once; so is a window a refusal states.

REQUEST_TIMEOUT bounds what the user waits: the SDK never retries (a request is sent once, except after
a refusal that says how to fix it, or a 429 asking to wait a few seconds), a non-streamed answer must
arrive within it, and a stream may not fall silent for longer. A stop cuts the connection at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai

import discovery
from models import ModelInfo, Provider, Registry
from provider_calls import END, Call, Cancelled, Cutter, Silent, sse_data
from provider_errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    ImagesNotSupported,
    LLMError,
    ModelNotFound,
    ProviderDown,
    ProviderNotConfigured,
    QuotaExhausted,
    RateLimited,
    classify,
    error_info,
    translate,
)
from reasoning import ThinkSplitter, content_parts, drop_orphan_close
from render import clean_text

__all__ = [
    "AuthFailed", "BadRequest", "Completion", "ContextTooLong", "ImagesNotSupported", "LLMClient", "LLMError",
    "ModelNotFound", "ProviderDown", "ProviderNotConfigured", "QuotaExhausted", "RateLimited", "Request",
    "Stopped", "Transcript",
]

log = logging.getLogger(__name__)

SHORT_WAIT = 10.0  # seconds: a 429 asking to wait this long or less is waited out once; longer ones are told
DRAIN_WAIT = 1.0  # seconds for the rest of a body after [DONE]; a slower server loses its connection


class Stopped(LLMError):
    """The caller's stop flag cut a request that has no partial result (a transcription)."""


class _EmptyStream(Exception):
    """A 200 stream that ended with no event at all (llama-cpp-python's answer to an over-long prompt)."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None  # hidden reasoning, as the API reported it
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache
    finish_reason: str | None = None
    cancelled: bool = False
    interrupted: bool = False  # the stream broke off after some text: `text` is what arrived

    @property
    def cut_without_text(self) -> bool:
        """The output budget ran out before any answer (a reasoning model that spent it all thinking)."""
        return self.finish_reason == "length" and not self.text.strip()


@dataclass(frozen=True)
class Transcript:
    text: str
    # Tokens the API reported (gpt-4o-*-transcribe); whisper models report seconds, counted as none.
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Request:
    model: ModelInfo
    messages: list[dict[str, Any]]  # content is a string or a list of parts (text, image_url)
    max_tokens: int
    temperature: float | None = None
    stream: bool = True


class LLMClient:
    """Sends chat requests to the configured providers; reports learnt windows to `registry`."""

    def __init__(self, providers: dict[str, Provider], timeout: float,
                 registry: Registry | None = None) -> None:
        self._providers = providers
        self._timeout = timeout
        self._registry = registry
        self._clients: dict[str, openai.OpenAI] = {}
        self._lock = threading.Lock()
        self._cutter = Cutter()
        # Learnt quirks: providers refusing stream_options, models wanting max_completion_tokens.
        self._no_stream_options: set[str] = {n for n, p in providers.items() if not p.stream_options}
        # Model id -> the name its provider wants for the answer's length limit.
        self._length_param: dict[str, str] = {}
        self._no_temperature: set[str] = set()
        self._ollama_checked: set[str] = set()  # models whose running context /api/ps was asked for

    def complete(self, request: Request, on_delta: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None,
                 on_reasoning: Callable[[str], None] | None = None) -> Completion:
        """Run one chat request; streams when `request.stream`, calling `on_delta(piece)` per piece."""
        client = self._client(request.model.provider)
        stream, waited = request.stream, False
        for _attempt in range(6):  # each retry removes one learnt quirk, or follows one short wait
            params = self._params(request, stream)
            try:
                completion = self._exchange(client, params, request, on_delta, on_reasoning, cancel)
            except _EmptyStream:
                log.warning("%s/%s: the stream ended with no event at all; asking once more, not streamed",
                            request.model.provider, request.model.id)
                stream = False
                continue
            except (openai.APIError, LLMError) as exc:
                if isinstance(exc, openai.APIStatusError) and self._learn(request, params, exc):
                    continue
                error = self._typed(exc, request)
                wait = error.retry_after if isinstance(error, RateLimited) else None
                if wait is None or wait > SHORT_WAIT or waited:
                    raise error from exc
                waited = True
                log.info("%s asks to wait %.1f s: waiting once", request.model.provider, wait)
                if (cancel or threading.Event()).wait(wait):
                    return Completion("", cancelled=True)
                continue
            self._after_answer(client, request.model)
            return completion
        raise BadRequest("the provider refused every variant of the request")

    def transcribe(self, provider: str, model: str, filename: str, data: bytes,
                   cancel: threading.Event | None = None) -> Transcript:
        """The text of an audio file (POST /audio/transcriptions), with the tokens it cost."""
        client = self._client(provider)

        def work(emit: Callable[[object], None]) -> None:
            emit(client.audio.transcriptions.create(model=model, file=(filename, data)))

        try:
            text = Call(self._cutter, work).next(cancel, self._timeout)
        except Cancelled:
            raise Stopped("transcription stopped") from None
        except Silent:
            raise ProviderDown(f"no transcription within {self._timeout:.0f} s") from None
        except openai.APIError as exc:
            raise translate(exc, model_id=model) from exc
        usage = getattr(text, "usage", None) or {}
        if not isinstance(usage, dict):
            usage = usage.model_dump() if hasattr(usage, "model_dump") else {}
        heard = getattr(text, "text", None)
        return Transcript(heard if isinstance(heard, str) else "",
                          _count(usage.get("input_tokens")) or 0, _count(usage.get("output_tokens")) or 0)

    def list_models(self, provider: str) -> list[tuple[str, int | None]]:
        """Model ids the provider lists, with the context window where it reports one."""
        client = self._client(provider)
        try:
            return discovery.list_models(client, self._providers[provider].context_probe)
        except openai.APIError as exc:
            raise translate(exc) from exc

    # -- one exchange ----------------------------------------------------------------------------------

    def _exchange(self, client: openai.OpenAI, params: dict[str, Any], request: Request,
                  on_delta: Callable[[str], None] | None, on_reasoning: Callable[[str], None] | None,
                  cancel: threading.Event | None) -> Completion:
        stream = bool(params.get("stream"))

        def work(emit: Callable[[object], None]) -> None:
            with client.chat.completions.with_streaming_response.create(**params) as response:
                if not stream or response.headers.get("content-type", "").startswith("application/json"):
                    emit(response.json())
                    return
                finished = False
                for data in sse_data(response.iter_lines()):
                    if not finished:  # after [DONE], read on to the end: the connection is then reused
                        finished = data.strip() == "[DONE]"
                        emit("[DONE]" if finished else data)

        call = Call(self._cutter, work)
        answer = _Answer(request, on_delta if stream else None, on_reasoning if stream else None)
        try:
            while (event := call.next(cancel, self._timeout)) is not END:
                if event == "[DONE]":
                    answer.done = True
                    _settle(call)
                    break
                answer.take(event)
        except Cancelled:
            answer.completion.cancelled = True
        except Silent:
            if not answer.parts:
                raise ProviderDown(f"no answer within {self._timeout:.0f} s") from None
            answer.broke_off(f"silent for {self._timeout:.0f} s")
        except LLMError as exc:  # an error event, or an unreadable one
            if not answer.parts:
                raise
            answer.broke_off(repr(exc))
        except (httpx2.HTTPError, ValueError) as exc:  # the connection broke off, or the body is not JSON
            if not answer.parts:
                raise ProviderDown(f"stream broke off: {exc!r}") from exc
            answer.broke_off(repr(exc))
        if stream and answer.events == 0 and not answer.completion.cancelled:
            raise _EmptyStream
        return answer.finish()

    def _params(self, request: Request, stream: bool) -> dict[str, Any]:
        model = request.model
        params: dict[str, Any] = {"model": model.id, "messages": request.messages}
        default = "max_completion_tokens" if model.reasoning else "max_tokens"
        params[self._length_param.get(model.id, default)] = request.max_tokens
        if request.temperature is not None and not model.reasoning and model.id not in self._no_temperature:
            params["temperature"] = request.temperature
        if stream:
            params["stream"] = True
            if model.provider not in self._no_stream_options:
                params["stream_options"] = {"include_usage": True}
        return params

    def _learn(self, request: Request, params: dict[str, Any], exc: openai.APIStatusError) -> bool:
        """Remember a quirk the refusal reveals; True when a retry is worth it."""
        if exc.status_code not in (400, 422):
            return False
        info = error_info(exc.status_code, exc.body)
        text = f"{info.message} {exc.param or ''} {info.code}".lower()
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

    def _typed(self, exc: openai.APIError | LLMError, request: Request) -> LLMError:
        """The typed error, logged where the owner must act, and a stated window learnt."""
        model = request.model
        error = exc if isinstance(exc, LLMError) else translate(
            exc, model_id=model.id, images=_has_images(request.messages))
        if isinstance(error, QuotaExhausted):
            log.error("provider %s: the account is out of credit (%s); top it up", model.provider, error)
        elif isinstance(error, ContextTooLong) and error.window and self._registry is not None:
            self._registry.learn_window(model.provider, model.id, error.window)
        return error

    def _after_answer(self, client: openai.OpenAI, model: ModelInfo) -> None:
        """The model is loaded now: ask Ollama once which context it really runs with."""
        provider = self._providers.get(model.provider)
        if provider is None or provider.context_probe != "ollama" or model.id in self._ollama_checked:
            return
        self._ollama_checked.add(model.id)
        window = discovery.running_context(client, model.id)
        if window and self._registry is not None:
            self._registry.learn_window(model.provider, model.id, window)

    def _client(self, provider_name: str) -> openai.OpenAI:
        provider = self._providers.get(provider_name)
        if provider is None or not provider.enabled:
            raise ProviderNotConfigured(provider_name)
        with self._lock:
            client = self._clients.get(provider_name)
            if client is None:
                http = openai.DefaultHttpxClient()
                self._cutter.install(http)
                client = self._clients[provider_name] = openai.OpenAI(
                    api_key=provider.api_key.value if provider.api_key else "not-needed",
                    base_url=provider.base_url, timeout=self._timeout, max_retries=0, http_client=http)
            return client


class _Answer:
    """A completion built from stream chunks (or one whole response), passing text and reasoning on."""

    def __init__(self, request: Request, on_delta: Callable[[str], None] | None,
                 on_reasoning: Callable[[str], None] | None) -> None:
        self.model_id = request.model.id
        self.images = _has_images(request.messages)
        self.on_delta, self.on_reasoning = on_delta, on_reasoning
        self.completion = Completion("")
        self.parts: list[str] = []
        self.events = 0
        self.done = False  # [DONE] arrived
        self._think = ThinkSplitter()

    def take(self, event: object) -> None:
        self.events += 1
        try:
            data = json.loads(event) if isinstance(event, str) else event
        except ValueError:
            raise ProviderDown(f"unreadable event from the provider: {str(event)[:200]!r}") from None
        if not isinstance(data, dict):
            raise ProviderDown(f"unexpected answer from the provider: {str(data)[:200]!r}")
        if data.get("error") and not data.get("choices"):
            raise classify(error_info(None, data), {}, model_id=self.model_id, images=self.images)
        usage = data.get("usage") or (data.get("x_groq") or {}).get("usage")  # Groq puts it in x_groq
        if isinstance(usage, dict):
            self._usage(usage)
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.completion.finish_reason = choice.get("finish_reason") or self.completion.finish_reason
            delta = choice.get("delta") or choice.get("message") or {}
            for key in ("reasoning_content", "reasoning"):  # DeepSeek's, OpenRouter's
                if isinstance(delta.get(key), str) and delta[key]:
                    self._emit("reasoning", delta[key])
            for kind, piece in content_parts(delta.get("content")):
                for sort, part in self._think.feed(piece) if kind == "content" else [(kind, piece)]:
                    self._emit(sort, part)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.completion.prompt_tokens = _count(usage.get("prompt_tokens"))
        self.completion.completion_tokens = _count(usage.get("completion_tokens"))
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict):
            self.completion.reasoning_tokens = _count(details.get("reasoning_tokens"))
        cached = usage.get("prompt_tokens_details")
        if isinstance(cached, dict):
            self.completion.cached_tokens = _count(cached.get("cached_tokens")) or 0

    def _emit(self, kind: str, piece: str) -> None:
        piece = clean_text(piece)  # lone surrogates from a broken provider would fail every Telegram call
        if kind == "text":
            self.parts.append(piece)
            if self.on_delta is not None:
                self.on_delta(piece)
        elif self.on_reasoning is not None:
            self.on_reasoning(piece)

    def broke_off(self, why: str) -> None:
        """Keep what arrived: the user sees it, marked as incomplete."""
        log.warning("stream of %s broke off after %d pieces: %s", self.model_id, len(self.parts), why)
        self.completion.interrupted = True

    def finish(self) -> Completion:
        for kind, piece in self._think.flush():
            self._emit(kind, piece)
        completion = self.completion
        ended = self.done or completion.finish_reason or completion.cancelled or completion.interrupted
        if not ended and self.parts and self.events > 1:  # a stream that ended without [DONE] or a finish
            self.broke_off("ended without [DONE]")
        completion.text = drop_orphan_close("".join(self.parts))
        return completion


def _settle(call: Call) -> None:
    """Let the body's end arrive, so the connection is back in the pool before the next request."""
    with contextlib.suppress(Exception):  # Silent or Cancelled: the call is cut, the answer stands
        call.next(None, DRAIN_WAIT)


def _has_images(messages: list[dict[str, Any]]) -> bool:
    return any(isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "image")
               for m in messages if isinstance(m.get("content"), list) for part in m["content"])


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

