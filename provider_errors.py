"""The typed errors of the provider client, and the translation of every provider's error shapes into them.

Providers that speak "OpenAI-compatible" still answer errors their own way: `{"error": {...}}` (OpenAI),
`{"type": "error", "error": {...}}` (Anthropic), a JSON list (Gemini), a bare `{"object": "error", ...}`
(vLLM, Mistral), `{"error": "text"}` (Ollama); `code` may be a string, an integer or null, `type` null.
`classify` reads them all and decides by code and message, most specific first.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai


class LLMError(Exception):
    """A model request failed; subclasses say how."""


class RateLimited(LLMError):
    """Too many requests right now; `retry_after` is the provider's advice in seconds, when it gave one."""

    def __init__(self, detail: str = "rate limited", retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class QuotaExhausted(LLMError):
    """The bot's account has no credit left (OpenAI's insufficient_quota, Anthropic's credit balance, 402)."""


class ProviderDown(LLMError):
    """Connection refused, timeout, 5xx, or a stream that broke off."""


class ContextTooLong(LLMError):
    """The provider counted more tokens than its window holds; `window` is its size where it said so."""

    def __init__(self, detail: str, window: int | None = None) -> None:
        super().__init__(detail)
        self.window = window


class AuthFailed(LLMError):
    """The key was refused (401/403)."""


class ModelNotFound(LLMError):
    """The provider does not serve this model (404, a gateway's "Invalid model name", ...)."""

    def __init__(self, detail: str, model_id: str = "") -> None:
        super().__init__(detail)
        self.model_id = model_id


class BadRequest(LLMError):
    """Any other refusal of the request (400/422)."""


class ImagesNotSupported(BadRequest):
    """The model takes no image parts."""


class ProviderNotConfigured(LLMError):
    """The model's provider has no key or base URL."""


@dataclass(frozen=True)
class ErrorInfo:
    """What a provider said, whatever the shape it said it in."""

    status: int | None  # None: an error event inside a 200 stream
    message: str = ""
    code: str = ""
    type: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"{self.message} {self.code} {self.type}".lower()

    def describe(self) -> str:
        status = self.status if self.status is not None else "in-stream"
        code = f" [{self.code or self.type}]" if self.code or self.type else ""
        return f"{status}{code}: {self.message[:300]}"


# Context overflow, as each server words it; `window` is the size of the window where the text gives it.
OVERFLOW = [re.compile(p, re.IGNORECASE) for p in (
    r"maximum context length is (?P<window>[\d,]+)",  # OpenAI, vLLM, DeepSeek, OpenRouter, LiteLLM
    r"prompt is too long: [\d,]+ tokens > (?P<window>[\d,]+) maximum",  # Anthropic
    r"exceed context limit: [\d,]+ \+ [\d,]+ > (?P<window>[\d,]+)",  # Anthropic, counting max_tokens
    # Gemini
    r"input token count \([\d,]+\) exceeds the maximum number of tokens allowed \((?P<window>[\d,]+)\)",
    r"too large for model with (?P<window>[\d,]+) maximum context length",  # Mistral
    r"exceed context window of (?P<window>[\d,]+)",  # llama-cpp-python
    r"maximum prompt length is (?P<window>[\d,]+)",  # xAI
    r"context length of only (?P<window>[\d,]+)",  # LM Studio
    r"exceeds the available context size",  # llama.cpp's server (the window is in n_ctx)
    r"context ?window ?exceeded",  # LiteLLM's ContextWindowExceededError
    r"input is too long for requested model",  # Bedrock through gateways
)]
OVERFLOW_CODES = {"context_length_exceeded", "exceed_context_size_error", "contextwindowexceedederror"}
# Not "exceeded your current quota": Gemini says that of its per-minute limits too; OpenAI's code tells.
QUOTA = re.compile(r"insufficient_quota|credit balance is too low|insufficient (credits|balance)", re.I)
MODEL_MISSING = re.compile(
    r"model_not_found|invalid model name|model[ `'\"]+\S+[`'\"]? does not exist|model not exist|"
    r"is not a valid model id|^invalid model\b|model ['\"`]?\S+?['\"`]? not found|models/\S+ is not found|"
    r"unknown model", re.IGNORECASE)
IMAGES_REFUSED = re.compile(
    r"image_url is only supported by certain models|unknown variant .?image_url|does not support image|"
    r"image input is not supported|not a multimodal model|images? (are|is) not supported|"
    r"no (vision|image) support", re.IGNORECASE)
RETRY_IN = re.compile(r"try again in (?:(?P<m>\d+)m)?(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s)\b", re.IGNORECASE)


def error_info(status: int | None, body: object) -> ErrorInfo:
    """Dig the error object out of any of the shapes above."""
    for _ in range(4):  # unwrap lists and {"error": ...} envelopes
        if isinstance(body, list) and body:
            body = body[0]
        elif isinstance(body, Mapping) and isinstance(body.get("error"), Mapping | list | str):
            body = body["error"]
        else:
            break
    if isinstance(body, str):
        return ErrorInfo(status, body)
    if not isinstance(body, Mapping):
        return ErrorInfo(status, str(body or ""))
    code, type_ = body.get("code"), body.get("type") or body.get("status")
    return ErrorInfo(status, str(body.get("message") or body.get("detail") or ""),
                     "" if code is None else str(code), "" if type_ is None else str(type_), body)


def translate(exc: openai.APIError, *, model_id: str = "", images: bool = False) -> LLMError:
    """The typed error for an SDK error."""
    if isinstance(exc, openai.APIConnectionError):
        return ProviderDown(f"{exc.__class__.__name__}: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        return classify(error_info(exc.status_code, exc.body), exc.response.headers,
                        model_id=model_id, images=images)
    return classify(error_info(None, exc.body or exc.message), {}, model_id=model_id, images=images)


def classify(info: ErrorInfo, headers: Mapping[str, str], *, model_id: str = "",
             images: bool = False) -> LLMError:
    """Decide what went wrong, most specific first: an insufficient quota is also a 429, and so on."""
    detail, text, status = info.describe(), info.text, info.status
    if status == 402 or QUOTA.search(text):
        return QuotaExhausted(detail)
    if status == 429:
        return RateLimited(detail, retry_after(headers, info.message))
    if images and IMAGES_REFUSED.search(text):
        return ImagesNotSupported(detail)
    if overflow(info):
        return ContextTooLong(detail, stated_window(info))
    if MODEL_MISSING.search(info.message) or info.code == "model_not_found" or status == 404:
        return ModelNotFound(detail, model_id)
    if status in (401, 403):
        return AuthFailed(detail)
    if status is None or status >= 500 or status in (408, 409, 425, 529):
        return ProviderDown(detail)
    return BadRequest(detail)


def overflow(info: ErrorInfo) -> bool:
    return (info.code.lower() in OVERFLOW_CODES or info.type.lower() in OVERFLOW_CODES
            or any(p.search(info.message) for p in OVERFLOW))


def stated_window(info: ErrorInfo) -> int | None:
    """The context window an overflow error states, if it states one."""
    n_ctx = info.fields.get("n_ctx")  # llama.cpp's server
    if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0:
        return n_ctx
    for pattern in OVERFLOW:
        match = pattern.search(info.message)
        if match and "window" in pattern.groupindex and match["window"]:
            return int(match["window"].replace(",", ""))
    return None


def retry_after(headers: Mapping[str, str], message: str = "") -> float | None:
    """Seconds to wait: the retry-after(-ms) header (seconds or HTTP date), else OpenAI's "try again in"."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := headers.get("retry-after")) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (ValueError, TypeError):
        pass
    match = RETRY_IN.search(message)
    if match is None:
        return None
    seconds = float(match["n"]) / (1000 if match["unit"].lower() == "ms" else 1)
    return seconds + 60 * int(match["m"] or 0)
