"""The provider client (llm.py) against the fake OpenAI-compatible server, shaped like the real ones."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import llm
from config import Secret
from llm import Completion, LLMClient, Request
from models import ModelInfo, Provider, Registry
from tests.fakes.openai import OVERFLOW, FakeOpenAI, Reply

USER = [{"role": "user", "content": "hello"}]
MODEL = ModelInfo("m", "p", 100_000, 1000)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as server:
        yield server


def client_for(fake: FakeOpenAI, timeout: float = 10, **provider: Any) -> tuple[LLMClient, Registry]:
    providers = {"p": Provider("p", "Lab", fake.url, Secret(fake.api_key or "k"), **provider)}
    registry = Registry(providers, {MODEL.id: MODEL}, MODEL.id)
    return LLMClient(providers, timeout=timeout, registry=registry), registry


def ask(client: LLMClient, stream: bool = True, messages: list[dict[str, Any]] | None = None,
        model: ModelInfo = MODEL, **kwargs: Any) -> Completion:
    return client.complete(Request(model, messages or USER, 500, stream=stream), **kwargs)


class Collect:
    """on_delta / on_reasoning sinks; `wait_text` waits until the pieces join to a text."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self._cond = threading.Condition()

    def sinks(self) -> dict[str, Any]:
        return {"on_delta": self._add, "on_reasoning": self.reasoning.append}

    def _add(self, piece: str) -> None:
        with self._cond:
            self.text.append(piece)
            self._cond.notify_all()

    def wait_text(self, text: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: "".join(self.text) == text, 10), self.text


# -- answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_answer_and_usage(fake: FakeOpenAI, stream: bool) -> None:
    client, _ = client_for(fake)
    seen = Collect()
    fake.script(Reply(text="one two three four five six seven", usage={"prompt_tokens": 11,
                                                                      "completion_tokens": 7}))
    done = ask(client, stream, **seen.sinks())
    assert (done.text, done.prompt_tokens, done.completion_tokens, done.finish_reason) == (
        "one two three four five six seven", 11, 7, "stop")
    assert "".join(seen.text) == (done.text if stream else "")  # pieces only while streaming
    body = fake.chat_requests()[-1].body
    assert body.get("stream") is (True if stream else None) and body["max_tokens"] == 500


@pytest.mark.parametrize("server", [
    {"stream_usage": False},  # servers that send no usage when streaming
    {"usage_with_empty_delta": True},  # the usage chunk carries choices [{"index": 0, "delta": {}}]
    {"first_delta": {"role": "assistant", "content": None}},
    {"first_delta": {"role": "assistant"}},  # no content key at all
])
def test_stream_shapes_of_other_servers(server: dict[str, Any]) -> None:
    with FakeOpenAI(**server) as fake:
        client, _ = client_for(fake)
        fake.script(Reply(text="a b c d e", pings=2))  # with ": ping" comment lines first
        done = ask(client)
        assert (done.text, done.finish_reason, done.interrupted) == ("a b c d e", "stop", False)
        assert (done.prompt_tokens is None) is (server.get("stream_usage") is False)


def test_content_parts_pass_through_untouched(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    assert ask(client, messages=[{"role": "user", "content": parts}]).text == "echo: what is this?"
    assert fake.chat_requests()[-1].body["messages"][0]["content"] == parts


def test_text_only_model_refusing_images_is_a_typed_error() -> None:
    with FakeOpenAI(text_only={"m"}) as fake:
        client, _ = client_for(fake)
        image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
        with pytest.raises(llm.ImagesNotSupported):
            ask(client, messages=[{"role": "user", "content": image}])
        assert ask(client).text == "echo: hello"  # text alone is fine


# -- reasoning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # DeepSeek's, OpenRouter's
def test_reasoning_deltas_are_reported_apart(fake: FakeOpenAI, field: str) -> None:
    client, _ = client_for(fake)
    seen = Collect()
    fake.script(Reply(text="The answer is 4.", reasoning="Two plus two, carry nothing, four.",
                      reasoning_field=field))
    done = ask(client, **seen.sinks())
    assert done.text == "".join(seen.text) == "The answer is 4."
    assert "".join(seen.reasoning) == "Two plus two, carry nothing, four."
    assert done.reasoning_tokens == len("Two plus two, carry nothing, four.") // 4 + 1


def test_think_tags_spanning_chunks_are_reasoning(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    seen = Collect()
    fake.script(Reply(chunks=["\n<th", "ink>Let me", " think.</thi", "nk>\n\nHello", " <think> world"]))
    done = ask(client, **seen.sinks())
    assert done.text == "".join(seen.text) == "Hello <think> world"  # only a block at the start counts
    assert "".join(seen.reasoning) == "Let me think."


@pytest.mark.parametrize("stream", [True, False])
def test_unclosed_think_cut_by_length_is_reported_as_no_answer(fake: FakeOpenAI, stream: bool) -> None:
    client, _ = client_for(fake)
    fake.script(Reply(chunks=["<think>Hmm", ", so many cases"], text="<think>Hmm, so many cases",
                      finish_reason="length"))
    done = ask(client, stream)
    assert (done.text, done.finish_reason, done.cut_without_text) == ("", "length", True)


def test_reasoning_models_send_max_completion_tokens_and_no_temperature(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    thinker = ModelInfo("m", "p", 400_000, 128_000, reasoning=True)
    client.complete(Request(thinker, USER, thinker.reply_reserve(8192), temperature=0.3))
    body = fake.chat_requests()[-1].body
    assert body["max_completion_tokens"] == 128_000  # its own output limit, not the 8,192 cap
    assert "max_tokens" not in body and "temperature" not in body


# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(OVERFLOW))
def test_every_servers_overflow_is_context_too_long_and_its_window_is_learnt(shape: str) -> None:
    with FakeOpenAI(context_window=4096, overflow=shape) as fake:
        client, registry = client_for(fake)
        with pytest.raises(llm.ContextTooLong) as caught:
            ask(client, stream=False, messages=[{"role": "user", "content": "word " * 5000}])
        assert caught.value.window == 4096
        assert registry.models["m"].context_window == 4096  # was 100,000: the server said otherwise


def test_empty_200_stream_is_retried_once_without_streaming(caplog: pytest.LogCaptureFixture) -> None:
    # llama-cpp-python answers an over-long streamed prompt with 200 and not a single event.
    with FakeOpenAI(context_window=4096, overflow="llama-cpp-python") as fake:
        client, registry = client_for(fake)
        with caplog.at_level(logging.WARNING), pytest.raises(llm.ContextTooLong):
            ask(client, messages=[{"role": "user", "content": "word " * 5000}])
        assert [r.body.get("stream") for r in fake.chat_requests()] == [True, None]
        assert "no event at all" in caplog.text
        assert registry.models["m"].context_window == 4096


def test_empty_stream_of_a_short_prompt_gets_the_plain_answer(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    fake.script(Reply(empty_stream=True), Reply(text="plain answer"))
    assert ask(client).text == "plain answer"


@pytest.mark.parametrize(("reply", "error"), [
    (Reply.insufficient_quota(), llm.QuotaExhausted),  # OpenAI's 429 that waiting does not cure
    (Reply.out_of_credits(), llm.QuotaExhausted),  # OpenRouter's 402, integer code
    (Reply.credit_balance_too_low(), llm.QuotaExhausted),  # Anthropic's 400
    (Reply.rate_limited(retry_after=120), llm.RateLimited),  # too long to wait inside: told at once
    (Reply.rate_limited(retry_after=None), llm.RateLimited),  # no advice: told at once
    (Reply.server_error(), llm.ProviderDown),
    (Reply.auth_error(), llm.AuthFailed),
    (Reply(status=400, body=[{"error": {"code": 400, "message": "Invalid JSON payload",
                                        "status": "INVALID_ARGUMENT"}}]), llm.BadRequest),  # Gemini's list
    (Reply(status=400, error={"message": "bad", "type": None, "param": None, "code": 17}), llm.BadRequest),
])
@pytest.mark.parametrize("stream", [True, False])
def test_refusals_are_typed_and_sent_once(fake: FakeOpenAI, reply: Reply, error: type[Exception],
                                          stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = client_for(fake)
    fake.script(reply, "never asked")
    with caplog.at_level(logging.ERROR), pytest.raises(error) as caught:
        ask(client, stream)
    assert len(fake.chat_requests()) == 1
    if error is llm.RateLimited:
        assert caught.value.retry_after == (120 if "120" in str(reply.headers) else None)  # type: ignore
    if error is llm.QuotaExhausted:  # the owner must act: the log names the provider and the code
        assert "provider p" in caplog.text and str(reply.status) in caplog.text


def test_short_retry_after_is_waited_out_once(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    fake.script(Reply.rate_limited(retry_after=0.2), "after the wait")
    assert ask(client, stream=False).text == "after the wait"
    fake.script(Reply.rate_limited(retry_after=0.2), Reply.rate_limited(retry_after=0.2), "not asked")
    with pytest.raises(llm.RateLimited) as caught:
        ask(client)
    assert caught.value.retry_after == 0.2
    assert len(fake.chat_requests()) == 4


def test_retry_after_in_the_message_only(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    fake.script(Reply.rate_limited(retry_after=0.2, header=False), "after the wait")
    assert ask(client).text == "after the wait"
    assert len(fake.chat_requests()) == 2


@pytest.mark.parametrize("gateway", [False, True])
def test_unknown_model_is_model_not_found(gateway: bool) -> None:
    # OpenAI answers 404; LiteLLM and other gateways 400 "Invalid model name".
    with FakeOpenAI(models=[{"id": "other"}], unknown_model_400=gateway) as fake:
        client, _ = client_for(fake)
        with pytest.raises(llm.ModelNotFound) as caught:
            ask(client)
        assert caught.value.model_id == "m"


def test_error_inside_a_stream(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    fake.script(Reply(text="one two three four five six", error_after=0))
    with pytest.raises(llm.ProviderDown):
        ask(client)
    fake.script(Reply(text="one two three four five six", error_after=1))
    done = ask(client)
    assert (done.text, done.interrupted) == ("one two three", True)


# -- stop, timeouts, connections -----------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "stream", "kept"), [
    (Reply(hang=True), True, ""),  # the model sends no byte at all
    (Reply(hang=True), False, ""),  # a non-streamed request is cut too
    (Reply(text="one two three four five six", stall_after=1), True, "one two three"),
])
def test_stop_closes_the_connection_and_keeps_the_partial_answer(fake: FakeOpenAI, reply: Reply, stream: bool,
                                                                  kept: str) -> None:
    client, _ = client_for(fake, timeout=60)
    fake.script(reply)
    cancel = threading.Event()
    seen = Collect()
    result: list[Completion] = []
    worker = threading.Thread(target=lambda: result.append(ask(client, stream, cancel=cancel,
                                                               **seen.sinks())))
    worker.start()
    fake.wait_for(fake.chat_requests, what="the request")
    seen.wait_text(kept)
    cancel.set()
    fake.wait_for(lambda: fake.hangups, timeout=2, what="the provider to see the connection closed")
    worker.join(2)
    assert result and (result[0].text, result[0].cancelled) == (kept, True)
    fake.script("next")
    assert ask(client).text == "next"  # the pool is healthy afterwards


def test_silence_is_bounded_by_the_timeout(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake, timeout=0.5)
    fake.script(Reply(hang=True))
    with pytest.raises(llm.ProviderDown, match="no answer within"):
        ask(client, stream=False)
    fake.wait_for(lambda: fake.hangups, timeout=10, what="the connection closed")
    assert len(fake.chat_requests()) == 1


def test_a_drained_stream_leaves_its_connection_for_the_next_request(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    for i in range(5):
        assert ask(client, messages=[{"role": "user", "content": f"n{i}"}]).text == f"echo: n{i}"
    assert fake.connections == 1  # one connection for five streamed answers (was one each)


# -- transcription -------------------------------------------------------------------------------------


def test_transcribe_sends_the_file_and_returns_the_text(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    voice = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    heard = client.transcribe("p", "whisper-1", "voice.ogg", voice)
    assert heard == llm.Transcript(f"transcript of voice.ogg ({len(voice)} bytes)")  # seconds: no tokens
    heard = client.transcribe("p", "gpt-4o-mini-transcribe", "voice.ogg", voice)
    assert (heard.prompt_tokens, heard.completion_tokens) == (len(voice) // 100, len(heard.text.split()))
    assert fake.transcriptions[0] == {"model": "whisper-1", "filename": "voice.ogg", "data": voice}
    with pytest.raises(llm.BadRequest):
        client.transcribe("p", "whisper-1", "voice.xyz", voice)  # a format the server refuses


def test_unconfigured_provider() -> None:
    client = LLMClient({"p": Provider("p", "Lab", None)}, timeout=1)
    with pytest.raises(llm.ProviderNotConfigured):
        ask(client)


# -- model lists -----------------------------------------------------------------------------------------


def test_listed_windows_in_every_servers_field() -> None:
    from tests.fakes.openai import OMIT
    models = [
        {"id": "router/a", "context_length": 200_000},  # OpenRouter
        {"id": "vllm-b", "max_model_len": 32_768, "created": OMIT},  # vLLM; and no `created` at all
        {"id": "gateway-c", "max_input_tokens": 128_000},  # LiteLLM
        # llama.cpp: n_ctx is the running context, n_ctx_train only the training maximum
        {"id": "gguf-d", "owned_by": "llamacpp", "meta": {"n_ctx_train": 131_072, "n_ctx": 8_192}},
        {"id": "plain-e"},
    ]
    with FakeOpenAI(models=models) as fake:
        client, _ = client_for(fake)
        assert client.list_models("p") == [("router/a", 200_000), ("vllm-b", 32_768), ("gateway-c", 128_000),
                                           ("gguf-d", 8_192), ("plain-e", None)]


def test_ollama_window_is_the_context_it_runs_with() -> None:
    models = [{"id": "loaded"}, {"id": "modelfile"}, {"id": "cold"}]
    with FakeOpenAI(models=models, ollama_contexts={"loaded": 131_072, "modelfile": 131_072, "cold": 131_072},
                    ollama_running={"loaded": 16_384}, ollama_num_ctx={"modelfile": 12_000}) as fake:
        client, registry = client_for(fake, context_probe="ollama")
        assert client.list_models("p") == [("loaded", 16_384), ("modelfile", 12_000), ("cold", 4096)]
        registry.add_discovered("p", [("cold", 4096)])
        fake.ollama_running["cold"] = 32_768  # the first answer loads it, with the server's real context
        cold = registry.models["cold"]
        assert ask(client, model=cold).text == "echo: hello"
        assert registry.models["cold"].context_window == 32_768
        ask(client, model=registry.models["cold"])
        assert [r.path for r in fake.requests].count("/api/ps") == 2  # once at listing, once after the answer


def test_a_page_instead_of_an_answer_is_provider_down(fake: FakeOpenAI) -> None:
    client, _ = client_for(fake)
    page = Reply(page="<html><body>Please log in to the proxy</body></html>")
    fake.script(page, page, page)
    with pytest.raises(llm.ProviderDown):
        ask(client, stream=False)
    with pytest.raises(llm.ProviderDown):  # no event in it: asked once more unstreamed, the same page
        ask(client)
    assert len(fake.chat_requests()) == 3
