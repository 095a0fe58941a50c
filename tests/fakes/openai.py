"""A strict fake OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models) over real HTTP.

Answers are scripted (`script(Reply(...))`, FIFO) or come from `default` (echo). Bodies, SSE streaming,
error shapes and status codes follow api.openai.com so the real `openai` SDK parses everything; the
constructor toggles emulate stricter providers (no stream_options, no max_tokens, small context).
"""

from __future__ import annotations

import itertools
import json
import re
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._server import Abort, BaseHandler, FakeServer

ROLES = ("system", "user", "assistant", "developer", "tool")


def _error(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error object as OpenAI nests it in {"error": ...}."""
    return {"message": message, "type": type_, "param": param, "code": code}


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

    @classmethod
    def rate_limited(cls, retry_after: int = 1) -> Reply:
        message = (
            "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
            f"Limit 30000, Used 30000, Requested 500. Please try again in {retry_after}s."
        )
        return cls(
            status=429,
            error=_error(message, "tokens", None, "rate_limit_exceeded"),
            headers={"retry-after": str(retry_after)},
        )

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
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return Reply(text=f"echo: {content}")


class _Handler(BaseHandler):
    pass


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
    ) -> None:
        """api_key=None accepts any bearer key; models=None serves one model and accepts any name.

        ollama_contexts also serves Ollama's POST /api/show, giving each model's context length.
        """
        super().__init__(port)
        self.api_key = api_key
        self.strict_models = models is not None
        self.models = models if models is not None else [{"id": "fake-model"}]
        self.context_window = context_window
        self.reject_stream_options = reject_stream_options
        self.reject_max_tokens = reject_max_tokens
        self.count_tokens = count_tokens
        self.default = default
        self.ollama_contexts = ollama_contexts
        self.stats: dict[str, int] = {"requests": 0, "streams": 0, "errors": 0}
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
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        with self._cond:
            recorded = body if isinstance(body, dict) else {"_raw": raw.decode(errors="replace")}
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
            data = [
                {"id": m["id"], "object": "model", "created": 0, "owned_by": "fake", **m} for m in self.models
            ]
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
            return self._send_json(request, 200, {"model_info": info, "details": {"family": "llama"}})
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
        if reply.status >= 400:
            error = reply.error or _error(f"fake error {reply.status}", "server_error")
            return self._fail(request, reply.status, error, reply.headers)
        usage = reply.usage or self._usage(body, reply.text)
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

    def _validate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The first problem OpenAI (or the emulated provider) would report, as (status, error)."""
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
        if self.context_window is not None:
            prompt = self.count_tokens(messages)
            completion = body.get("max_completion_tokens") or body.get("max_tokens")
            if prompt + (completion or 0) > self.context_window:
                return 400, _context_error(self.context_window, prompt, completion)
        return None

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        prompt = self.count_tokens(body["messages"])
        completion = len(text) // 4 + 1
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def _stream(
        self, request: BaseHandler, body: dict[str, Any], reply: Reply, usage: dict[str, Any], epoch: int
    ) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
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
        event({"role": "assistant", "content": "", "refusal": None})
        pieces = reply.pieces()
        for i, piece in enumerate(pieces):
            if reply.cut_after is not None and i >= reply.cut_after:
                raise Abort  # connection closed mid-body: no terminating chunk, no [DONE]
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
            final = {**base, "choices": [], "usage": usage}
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
                    return  # EOF: the client gave up
            except OSError:
                return
            self._sleep(0.5, epoch)  # the client sent more bytes (pipelining); just keep waiting

    def _send_json(
        self, request: BaseHandler, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        headers = {
            "x-request-id": f"req_fake{next(self._ids)}",
            "openai-processing-ms": "1",
            **(headers or {}),
        }
        request.reply(status, json.dumps(body).encode(), headers=headers)

    def _fail(
        self, request: BaseHandler, status: int, error: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        with self._cond:
            self.stats["errors"] += 1
            self._cond.notify_all()
        self._send_json(request, status, {"error": error}, headers)


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
