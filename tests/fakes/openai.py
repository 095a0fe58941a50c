"""A strict fake OpenAI-compatible API over real HTTP: POST /v1/chat/completions, GET /v1/models,
POST /v1/audio/transcriptions, and Ollama's /api/show and /api/ps.

Answers are scripted (`script(Reply(...))`, FIFO) or come from `default` (echo). Bodies, SSE streaming,
error shapes and status codes follow api.openai.com so the real `openai` SDK parses everything; the
constructor toggles emulate the other servers where they differ: no stream_options, no max_tokens, a
small context and each server's overflow error (`OVERFLOW`), no usage when streaming, a usage chunk
with an empty delta, a first delta without content, a 400 for unknown models (LiteLLM), text-only
models refusing image parts. `Reply` adds what single answers do: reasoning deltas, `: ping` comments
and silences, an empty 200 stream (llama-cpp-python), raw error bodies (Gemini's JSON list, ...).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import select
import socket
import time
import tomllib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._server import Abort, BaseHandler, FakeServer

ROLES = ("system", "user", "assistant", "developer", "tool")
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
AUDIO_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
AUDIO_LIMIT = 25 * 1024 * 1024  # OpenAI's limit on an uploaded audio file
OMIT = object()  # in a /v1/models entry: leave that default field out (servers that send no `created`)
# Non-chat models OpenAI lists beside the catalog's chat models (GET /v1/models lists everything).
OPENAI_OTHER_MODELS = ("text-embedding-3-small", "whisper-1", "tts-1", "dall-e-3", "omni-moderation-latest",
                       "gpt-4o-mini-transcribe")


def _error(
    message: str, type_: str | None = "invalid_request_error", param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """An error object as OpenAI nests it in {"error": ...}."""
    return {"message": message, "type": type_, "param": param, "code": code}


def _openai_overflow(window: int, prompt: int, completion: int | None) -> tuple[int, Any]:
    return 400, {"error": _context_error(window, prompt, completion)}


# Each server's answer to a prompt over its window: (status, raw body), as captured from the real ones.
OVERFLOW: dict[str, Callable[[int, int, int | None], tuple[int, Any]]] = {
    "openai": _openai_overflow,
    "anthropic": lambda window, prompt, _c: (400, {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": f"prompt is too long: {prompt} tokens > {window} maximum"}, "request_id": "req_fake"}),
    "gemini": lambda window, prompt, _c: (400, [{"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": f"The input token count ({prompt}) exceeds the maximum number of tokens allowed "
                   f"({window})."}}]),
    "llama.cpp": lambda window, prompt, _c: (400, {"error": {
        "code": 400, "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": window}}),
    "llama-cpp-python": lambda window, prompt, _c: (400, {"error": {
        "message": f"Requested tokens ({prompt}) exceed context window of {window}",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
    "vllm": lambda window, prompt, completion: (400, {"error": {
        "message": f"This model's maximum context length is {window} tokens. However, you requested "
                   f"{prompt + (completion or 0)} tokens ({prompt} in the messages, {completion or 0} in the "
                   "completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError", "param": None, "code": 400}}),
    "mistral": lambda window, prompt, _c: (400, {"object": "error", "message": (
        f"Prompt contains {prompt} tokens and 0 draft tokens, too large for model with {window} maximum "
        "context length"), "type": "invalid_request_error", "param": None, "code": None}),
    "litellm": lambda window, prompt, _c: (400, {"error": {
        "message": "litellm.ContextWindowExceededError: litellm.BadRequestError: ContextWindowExceededError: "
                   f"OpenAIException - This model's maximum context length is {window} tokens. However, your "
                   f"messages resulted in {prompt} tokens. Please reduce the length of the messages.",
        "type": None, "param": None, "code": "400"}}),
    "openrouter": lambda window, prompt, _c: (400, {"error": {
        "message": f"This endpoint's maximum context length is {window} tokens. However, you requested "
                   f"about {prompt} tokens ({prompt} of text input). Please reduce the length of either one, "
                   'or use the "middle-out" transform to compress your prompt automatically.',
        "code": 400, "metadata": {"provider_name": None}}}),
}


@dataclass
class Request:
    """One HTTP request as received (body is the decoded JSON, or {} if there was none)."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    time: float
    method: str = "POST"


@dataclass
class Reply:
    """What the fake answers to one chat completion request."""

    text: str = ""
    chunks: list[str] | None = None  # explicit stream pieces; default: ~3 words per chunk
    delay: float = 0.0  # before the first byte of the answer
    chunk_delay: float = 0.0  # between content chunks when streaming
    status: int = 200
    error: dict[str, Any] | None = None  # OpenAI error object, sent as {"error": error}
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the client gives up or the server stops)
    cut_after: int | None = None  # streaming: close the connection after N content chunks, no [DONE]
    error_after: int | None = None  # streaming: an error event after N content chunks, then the end
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None  # default: estimated from the request and the text
    body: Any = None  # an error's raw body, sent as JSON as it is (a list, a bare object...)
    page: str | None = None  # an HTML page instead of an answer (a proxy or portal in the way), any status
    reasoning: str = ""  # streamed before the answer in `reasoning_field` deltas (or in message)
    reasoning_field: str = "reasoning_content"  # DeepSeek's; OpenRouter's is "reasoning"
    pings: int = 0  # ": ping" comment lines before the first chunk, `ping_interval` apart
    ping_interval: float = 0.0
    empty_stream: bool = False  # 200 with no event at all, no [DONE] (llama-cpp-python, prompt too long)
    stall_after: int | None = None  # streaming: after N content chunks, silence until the client hangs up

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1, header: bool = True) -> Reply:
        """OpenAI's 429 (retry-after in whole seconds, retry-after-ms, and the wait in the message);
        `header=False` sends no header, None no wait at all."""
        wait = ""
        if retry_after is not None:
            wait = f" Please try again in {round(retry_after * 1000)}ms." if retry_after < 1 else \
                f" Please try again in {retry_after:g}s."
        message = (
            "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
            f"Limit 30000, Used 30000, Requested 500.{wait}"
        )
        headers = {}
        if header and retry_after is not None:
            headers = {"retry-after": str(math.ceil(retry_after)),
                       "retry-after-ms": str(round(retry_after * 1000))}
        return cls(status=429, error=_error(message, "tokens", None, "rate_limit_exceeded"), headers=headers)

    @classmethod
    def insufficient_quota(cls) -> Reply:
        """OpenAI's answer for an account without credit: a 429, but waiting does not help."""
        message = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes."
        )
        return cls(status=429, error=_error(message, "insufficient_quota", None, "insufficient_quota"))

    @classmethod
    def out_of_credits(cls) -> Reply:
        """OpenRouter's 402 (integer code, no type)."""
        message = ("Insufficient credits. This account never purchased credits. Make sure your key is on the "
                   "correct account or org, and if so, purchase more at https://openrouter.ai/settings/credits")
        return cls(status=402, body={"error": {"code": 402, "message": message}})

    @classmethod
    def credit_balance_too_low(cls) -> Reply:
        """Anthropic's 400 for an account without credit."""
        message = ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
                   "to upgrade or purchase credits.")
        return cls(status=400, body={"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": message}})

    @classmethod
    def overflow(cls, shape: str, window: int = 8192, prompt: int = 9000) -> Reply:
        """A server's context-overflow answer, in its own shape (see OVERFLOW)."""
        status, body = OVERFLOW[shape](window, prompt, None)
        return cls(status=status, body=body)

    @classmethod
    def server_error(cls) -> Reply:
        message = "The server had an error while processing your request. Sorry about that!"
        return cls(status=500, error=_error(message, "server_error"))

    @classmethod
    def context_too_long(cls, limit: int = 8192, requested: int = 9000) -> Reply:
        return cls(status=400, error=_context_error(limit, requested))

    @classmethod
    def auth_error(cls) -> Reply:
        return cls(status=401, error=_auth_error("sk-****"))

    def pieces(self) -> list[str]:
        """The content deltas of a streamed answer; they always join back to `text`."""
        if self.chunks is not None:
            return list(self.chunks)
        words = re.findall(r"\s*\S+", self.text)
        pieces = ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]
        rest = self.text[len("".join(words)) :]  # trailing whitespace
        if rest:
            pieces = [*pieces[:-1], pieces[-1] + rest] if pieces else [rest]
        return pieces


def _auth_error(key: str) -> dict[str, Any]:
    masked = key[:3] + "*" * 4 + key[-4:] if len(key) > 10 else key[:3] + "****"
    message = (
        f"Incorrect API key provided: {masked}. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    return _error(message, code="invalid_api_key")


def _context_error(limit: int, requested: int, completion: int | None = None) -> dict[str, Any]:
    if completion:
        detail = (
            f"However, you requested {requested + completion} tokens ({requested} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or completion."
        )
    else:
        detail = (
            f"However, your messages resulted in {requested} tokens. "
            "Please reduce the length of the messages."
        )
    message = f"This model's maximum context length is {limit} tokens. {detail}"
    return _error(message, param="messages", code="context_length_exceeded")


def rough_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap token estimate: 4 characters per token plus 3 per message (OpenAI's framing overhead)."""
    total = 3
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        total += len(content or "") // 4 + 3
    return total


def echo(body: dict[str, Any]) -> Reply:
    """Default answer: "echo: " + the content of the last user message."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content
                           if isinstance(part, dict) and part.get("type") == "text")
    return Reply(text=f"echo: {content}")


class _Handler(BaseHandler):
    def setup(self) -> None:
        super().setup()
        fake = self.server.fake
        if isinstance(fake, FakeOpenAI):
            with fake.conns_lock:
                fake.connections += 1


class FakeOpenAI(FakeServer):
    """Fake OpenAI API; use `openai.OpenAI(base_url=fake.url, api_key=...)`."""

    handler_class = _Handler

    def __init__(
        self,
        api_key: str | None = None,
        port: int = 0,
        *,
        models: list[dict[str, Any]] | None = None,
        context_window: int | None = None,
        reject_stream_options: bool = False,
        reject_max_tokens: bool = False,
        count_tokens: Callable[[list[dict[str, Any]]], int] = rough_tokens,
        default: Callable[[dict[str, Any]], Reply] = echo,
        ollama_contexts: dict[str, int] | None = None,
        ollama_running: dict[str, int] | None = None,
        ollama_num_ctx: dict[str, int] | None = None,
        overflow: str = "openai",
        stream_usage: bool = True,
        usage_with_empty_delta: bool = False,
        first_delta: dict[str, Any] | None = None,
        unknown_model_400: bool = False,
        text_only: Collection[str] = (),
        transcript: Callable[[str, bytes], str] | None = None,
    ) -> None:
        """api_key=None accepts any bearer key; models=None lists OpenAI's models and accepts any name.

        ollama_contexts also serves Ollama's POST /api/show (each model's maximum context; ollama_num_ctx
        adds a Modelfile's num_ctx) and GET /api/ps (ollama_running: the loaded models and their context).
        overflow: the shape of the context error (a key of OVERFLOW; "llama-cpp-python" answers an
        over-long streamed prompt with an empty 200 stream). stream_usage=False ignores include_usage.
        """
        super().__init__(port)
        self.api_key = api_key
        self.strict_models = models is not None
        self.models = models if models is not None else _openai_listing()
        self.context_window = context_window
        self.reject_stream_options = reject_stream_options
        self.reject_max_tokens = reject_max_tokens
        self.count_tokens = count_tokens
        self.default = default
        self.ollama_contexts = ollama_contexts
        self.ollama_running = ollama_running if ollama_running is not None else {}
        self.ollama_num_ctx = ollama_num_ctx or {}
        self.overflow = overflow
        self.stream_usage = stream_usage
        self.usage_with_empty_delta = usage_with_empty_delta
        self.first_delta = first_delta if first_delta is not None else {"role": "assistant", "content": "",
                                                                        "refusal": None}
        self.unknown_model_400 = unknown_model_400
        self.text_only = set(text_only)
        self.transcript = transcript or (lambda name, data: f"transcript of {name} ({len(data)} bytes)")
        self.stats: dict[str, int] = {"requests": 0, "streams": 0, "errors": 0}
        self.connections = 0  # TCP connections accepted
        self.hangups: list[float] = []  # when a client closed a connection the fake was holding silent
        self.transcriptions: list[dict[str, Any]] = []  # model, filename, data (the file's bytes)
        self._requests: list[Request] = []
        self._replies: deque[Reply] = deque()
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        """Base URL for the SDK (ends in /v1)."""
        return self.root_url + "/v1"

    def script(self, *replies: Reply | str) -> None:
        """Queue replies for the next chat completion requests (a str is Reply(text=...))."""
        with self._lock:
            self._replies.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[Request]:
        """Requests to /v1/chat/completions only."""
        with self._lock:
            return [r for r in self._requests if r.path.endswith("/chat/completions")]

    def _debug_summary(self) -> str:
        lines = [f"  {r.method} {r.path} {json.dumps(r.body)[:150]}" for r in self._requests[-10:]]
        return "last requests:\n" + "\n".join(lines) if lines else "no requests received"

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, request: BaseHandler, verb: str) -> None:
        path = urlsplit(request.path).path.rstrip("/")
        raw = request.read_body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        if headers.get("content-type", "").startswith("multipart/form-data"):
            body: Any = _form(headers["content-type"], raw)
        else:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = None
        with self._cond:
            recorded = ({k: v for k, v in body.items() if not isinstance(v, tuple)} if isinstance(body, dict)
                        else {"_raw": raw.decode(errors="replace")})
            self._requests.append(Request(path, recorded, headers, time.time(), verb))
            self.stats["requests"] += 1
            self._cond.notify_all()

        auth = headers.get("authorization", "")
        key = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        if not key:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return self._fail(request, 401, _error(message))
        if self.api_key is not None and key != self.api_key:
            return self._fail(request, 401, _auth_error(key))

        if verb == "GET" and path == "/v1/models":
            defaults = {"object": "model", "created": 0, "owned_by": "fake"}
            data = [{k: v for k, v in {"id": m["id"], **defaults, **m}.items() if v is not OMIT}
                    for m in self.models]
            return self._send_json(request, 200, {"object": "list", "data": data})
        if verb == "GET" and path.startswith("/v1/models/"):
            wanted = path[len("/v1/models/") :]
            for m in self.models:
                if m["id"] == wanted:
                    return self._send_json(
                        request, 200, {"object": "model", "created": 0, "owned_by": "fake", **m}
                    )
            return self._fail(request, 404, _model_not_found(wanted))
        if verb == "POST" and path == "/api/show" and self.ollama_contexts is not None:
            name = (body or {}).get("model")
            if name not in self.ollama_contexts:
                return self._send_json(request, 404, {"error": f"model '{name}' not found"})
            info = {"general.architecture": "llama", "llama.context_length": self.ollama_contexts[name]}
            parameters = f"num_ctx {self.ollama_num_ctx[name]}\nstop \"<|eot_id|>\"" \
                if name in self.ollama_num_ctx else 'stop "<|eot_id|>"'
            return self._send_json(request, 200, {"model_info": info, "details": {"family": "llama"},
                                                  "parameters": parameters})
        if verb == "GET" and path == "/api/ps" and self.ollama_contexts is not None:
            loaded = [{"name": f"{name}:latest", "model": f"{name}:latest", "size": 1, "size_vram": 1,
                       "expires_at": "2026-01-01T00:00:00Z", "context_length": ctx}
                      for name, ctx in self.ollama_running.items()]
            return self._send_json(request, 200, {"models": loaded})
        if verb == "POST" and path == "/v1/audio/transcriptions":
            return self._transcribe(request, body if isinstance(body, dict) else {})
        if verb == "POST" and path == "/v1/chat/completions":
            if body is None or not isinstance(body, dict):
                message = (
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                    "sent was not valid JSON.)"
                )
                return self._fail(request, 400, _error(message))
            return self._chat(request, body)
        return self._fail(request, 404, _error(f"Invalid URL ({verb} {path})"))

    def _chat(self, request: BaseHandler, body: dict[str, Any]) -> None:
        problem = self._validate(body)
        if problem is not None:
            return self._fail(request, *problem)
        problem = self._overflow(body)
        if problem is not None:
            if self.overflow == "llama-cpp-python" and body.get("stream") is True:
                with self._lock:
                    self.stats["streams"] += 1
                request.start_chunked(200, {"Content-Type": "text/event-stream"})
                return request.end_chunked()  # 200, and not a single event
            return self._fail(request, *problem)
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = self.default(body)
        stream = body.get("stream") is True
        if stream:
            with self._lock:
                self.stats["streams"] += 1
        epoch = self._epoch
        if reply.hang:
            self._hang(request.connection, epoch)
            raise Abort
        if reply.delay and not self._sleep(reply.delay, epoch):
            raise Abort
        if reply.page is not None:
            return request.reply(reply.status, reply.page.encode(), content_type="text/html; charset=utf-8")
        if reply.status >= 400:
            if reply.body is not None:
                return self._fail(request, reply.status, None, reply.headers, raw=reply.body)
            error = reply.error or _error(f"fake error {reply.status}", "server_error")
            return self._fail(request, reply.status, error, reply.headers)
        usage = reply.usage or self._usage(body, reply.text, reply.reasoning)
        if stream:
            return self._stream(request, body, reply, usage, epoch)
        completion = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.text,
                        "refusal": None,
                        "annotations": [],
                        **({reply.reasoning_field: reply.reasoning} if reply.reasoning else {}),
                    },
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        return self._send_json(request, 200, completion, reply.headers)

    def _validate(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """The first problem OpenAI (or the emulated server) would report: (status, error or raw body)."""
        model = body.get("model")
        if not model:
            return 400, _error("you must provide a model parameter")
        if self.reject_stream_options and "stream_options" in body:
            return 422, _error("Unrecognized request argument supplied: stream_options")
        if self.reject_max_tokens and "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return 400, _error(message, param="max_tokens", code="unsupported_parameter")
        if self.strict_models and model not in {m["id"] for m in self.models}:
            if self.unknown_model_400:  # LiteLLM and other gateways
                message = (f"Invalid model name passed in model={model}. Call `/v1/models` to view available "
                           "models for your key.")
                return 400, _error(message, "invalid_request_error", "model", "400")
            return 404, _model_not_found(str(model))
        messages = body.get("messages")
        if messages is None:
            return 400, _error("Missing required parameter: 'messages'.", "invalid_request_error", "messages",
                               "missing_required_parameter")  # fmt: skip
        if not isinstance(messages, list):
            message = (
                f"Invalid type for 'messages': expected an array, but got {_json_type(messages)} instead."
            )
            return 400, _error(message, param="messages", code="invalid_type")
        if not messages:
            message = (
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead."
            )
            return 400, _error(message, param="messages", code="empty_array")
        for i, item in enumerate(messages):
            problem = _message_problem(i, item)
            if problem is not None:
                return 400, problem
        if model in self.text_only:
            for i, item in enumerate(messages):
                for j, part in enumerate(item["content"] if isinstance(item["content"], list) else ()):
                    if part["type"] == "image_url":
                        message = "Invalid content type. image_url is only supported by certain models."
                        return 400, _error(message, param=f"messages.[{i}].content.[{j}].type")
        if body.get("stream_options") is not None and body.get("stream") is not True:
            message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            return 400, _error(message, param="stream_options")
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                message = (
                    f"Invalid '{name}': integer below minimum value. "
                    f"Expected a value >= 1, but got {value} instead."
                )
                return 400, _error(message, param=name, code="integer_below_min_value")
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 2:
            word, bound = ("above maximum", "<= 2") if temperature > 2 else ("below minimum", ">= 0")
            message = (
                f"Invalid 'temperature': decimal {word} value. "
                f"Expected a value {bound}, but got {temperature} instead."
            )
            return 400, _error(message, param="temperature", code=f"decimal_{word.replace(' ', '_')}_value")
        return None

    def _overflow(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """The server's context error when the prompt and the answer's maximum do not fit its window."""
        if self.context_window is None:
            return None
        prompt = self.count_tokens(body["messages"])
        completion = body.get("max_completion_tokens") or body.get("max_tokens")
        if prompt + (completion or 0) <= self.context_window:
            return None
        return OVERFLOW[self.overflow](self.context_window, prompt, completion)

    def _usage(self, body: dict[str, Any], text: str, reasoning: str = "") -> dict[str, Any]:
        prompt = self.count_tokens(body["messages"])
        thought = len(reasoning) // 4 + 1 if reasoning else 0
        completion = len(text) // 4 + 1 + thought
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": thought, "audio_tokens": 0},
        }

    def _stream(
        self, request: BaseHandler, body: dict[str, Any], reply: Reply, usage: dict[str, Any], epoch: int
    ) -> None:
        include_usage = self.stream_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                chunk["usage"] = None  # OpenAI sends usage: null on every chunk but the last
            request.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **reply.headers,
        }
        request.start_chunked(200, {**headers, "x-request-id": f"req_fake{next(self._ids)}"})
        if reply.empty_stream:
            request.end_chunked()
            return
        for i in range(reply.pings):
            if i and reply.ping_interval and not self._sleep(reply.ping_interval, epoch):
                raise Abort
            request.write_chunk(b": ping\n\n")
        event(dict(self.first_delta))
        for piece in _pieces(reply.reasoning):
            event({reply.reasoning_field: piece})
        pieces = reply.pieces()
        for i, piece in enumerate(pieces):
            if reply.cut_after is not None and i >= reply.cut_after:
                raise Abort  # connection closed mid-body: no terminating chunk, no [DONE]
            if reply.stall_after is not None and i >= reply.stall_after:
                self._hang(request.connection, epoch)
                raise Abort
            if reply.error_after is not None and i >= reply.error_after:
                # What OpenAI sends when a stream fails after it started: an error object, then the end.
                error = {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": None, "code": None}
                request.write_chunk(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
                request.end_chunked()
                return
            if i and reply.chunk_delay and not self._sleep(reply.chunk_delay, epoch):
                raise Abort
            event({"content": piece})
        if reply.cut_after is not None:
            raise Abort
        event({}, reply.finish_reason)
        if include_usage:
            choices = [{"index": 0, "delta": {}}] if self.usage_with_empty_delta else []
            final = {**base, "choices": choices, "usage": usage}
            request.write_chunk(b"data: " + json.dumps(final).encode() + b"\n\n")
        request.write_chunk(b"data: [DONE]\n\n")
        request.end_chunked()

    def _hang(self, sock: socket.socket, epoch: int) -> None:
        """Hold the request without answering until the client disconnects or the server goes down."""
        while self._epoch == epoch:
            # select() wakes up when the client closes (or go_down() shuts the socket): no busy loop.
            readable, _, _ = select.select([sock], [], [], 1.0)
            if not readable:
                continue
            try:
                if not sock.recv(1, socket.MSG_PEEK):
                    self._hung_up()  # EOF: the client gave up
                    return
            except OSError:
                self._hung_up()
                return
            self._sleep(0.5, epoch)  # the client sent more bytes (pipelining); just keep waiting

    def _hung_up(self) -> None:
        with self._cond:
            self.hangups.append(time.time())
            self._cond.notify_all()

    def _transcribe(self, request: BaseHandler, form: dict[str, Any]) -> None:
        """OpenAI's POST /v1/audio/transcriptions: multipart `file` and `model`; answers {"text": ...}."""
        upload, model = form.get("file"), form.get("model")
        if not isinstance(upload, tuple):
            return self._fail(request, 400, _error("you must provide a file", param="file"))
        if not model:
            return self._fail(request, 400, _error("you must provide a model parameter"))
        name, data = upload
        if name.rsplit(".", 1)[-1].lower() not in AUDIO_FORMATS:
            supported = ", ".join(f"'{f}'" for f in AUDIO_FORMATS)
            return self._fail(request, 400, _error(f"Invalid file format. Supported formats: [{supported}]",
                                                   param="file", code="invalid_value"))
        if len(data) > AUDIO_LIMIT:
            message = f"Maximum content size limit ({AUDIO_LIMIT}) exceeded ({len(data)} bytes read)"
            return self._fail(request, 413, _error(message, "server_error"))
        with self._cond:
            self.transcriptions.append({"model": model, "filename": name, "data": data})
            self._cond.notify_all()
        text = self.transcript(name, data)
        # Like OpenAI: gpt-4o-*-transcribe models report tokens, whisper models the audio's seconds.
        usage = ({"type": "tokens", "input_tokens": len(data) // 100, "output_tokens": len(text.split()),
                  "total_tokens": len(data) // 100 + len(text.split())}
                 if "transcribe" in str(model) else {"type": "duration", "seconds": 3})
        return self._send_json(request, 200, {"text": text, "usage": usage})

    def _send_json(
        self, request: BaseHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        headers = {
            "x-request-id": f"req_fake{next(self._ids)}",
            "openai-processing-ms": "1",
            **(headers or {}),
        }
        request.reply(status, json.dumps(body).encode(), headers=headers)

    def _fail(
        self, request: BaseHandler, status: int, error: Any, headers: dict[str, str] | None = None,
        raw: Any = None,
    ) -> None:
        """An error answer: OpenAI's {"error": error}, or `raw` as it is; an (status, body) from
        OVERFLOW comes as `error` when its body is not OpenAI's envelope."""
        with self._cond:
            self.stats["errors"] += 1
            self._cond.notify_all()
        if raw is None:
            raw = error if _enveloped(error) else {"error": error}
        self._send_json(request, status, raw, headers)


def _enveloped(body: Any) -> bool:
    """A body that is already a whole answer (a list, {"error": ...}, {"object": "error", ...})."""
    if isinstance(body, list):
        return True
    return isinstance(body, dict) and ("error" in body or body.get("object") == "error")


def _pieces(text: str) -> list[str]:
    return Reply(text=text).pieces() if text else []


def _openai_listing() -> list[dict[str, Any]]:
    """What api.openai.com lists: the catalog's current chat models and the rest (no context windows)."""
    with open(Path(__file__).resolve().parents[2] / "builtin_models.toml", "rb") as f:
        catalog = tomllib.load(f)
    chat = [m["id"] for m in catalog["models"] if m["provider"] == "openai"]
    return [{"id": model_id, "owned_by": "system"} for model_id in (*chat, *OPENAI_OTHER_MODELS)]


def _form(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body: field -> text, or (filename, bytes) for a file; {} if malformed."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + match[1].encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode(errors="replace")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name is None:
            continue
        data = data.removesuffix(b"\r\n")
        fields[name[1]] = (filename[1], data) if filename else data.decode(errors="replace")
    return fields


def _model_not_found(model: str) -> dict[str, Any]:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return _error(message, code="model_not_found")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "an integer" if isinstance(value, int) else "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else "null"


def _message_problem(i: int, message: object) -> dict[str, Any] | None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        text = f"Invalid type for '{where}': expected an object, but got {_json_type(message)} instead."
        return _error(text, param=where, code="invalid_type")
    role = message.get("role")
    if role is None:
        return _error(f"Missing required parameter: '{where}.role'.", param=f"{where}.role",
                      code="missing_required_parameter")  # fmt: skip
    if role not in ROLES:
        text = (
            f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
            "'tool', and 'developer'."
        )
        return _error(text, param=f"{where}.role", code="invalid_value")
    content = message.get("content")
    may_be_empty = role == "assistant" and bool(message.get("tool_calls") or message.get("function_call"))
    if content is None and not may_be_empty:
        return _error(f"Missing required parameter: '{where}.content'.", param=f"{where}.content",
                      code="missing_required_parameter")  # fmt: skip
    if content is not None and not isinstance(content, str | list):
        text = (
            f"Invalid type for '{where}.content': expected one of a string or array of objects, "
            f"but got {_json_type(content)} instead."
        )
        return _error(text, param=f"{where}.content", code="invalid_type")
    if role == "tool" and not message.get("tool_call_id"):
        return _error(f"Missing required parameter: '{where}.tool_call_id'.", param=f"{where}.tool_call_id",
                      code="missing_required_parameter")  # fmt: skip
    return None
