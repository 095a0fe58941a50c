"""What providers say about their own models: `GET /models` listings and Ollama's running context.

Servers report a model's window in different fields, and Ollama's `/v1/models` reports none: its
`/api/show` gives the model's maximum, but Ollama runs it with a smaller context (4,096 tokens by
default on small machines, more with more VRAM or `OLLAMA_CONTEXT_LENGTH`, or a Modelfile's
`num_ctx`) and silently drops the start of longer prompts. Its OpenAI-compatible endpoint ignores a
per-request `num_ctx`, so the bot uses the context Ollama reports for a loaded model (`/api/ps`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import openai

log = logging.getLogger(__name__)

# Assumed for an Ollama model that is not loaded and whose Modelfile sets no num_ctx (Ollama's
# documented default below 24 GiB of VRAM); replaced by /api/ps's figure once the model has answered.
OLLAMA_DEFAULT_CONTEXT = 4096


def list_models(client: openai.OpenAI, probe: str | None) -> list[tuple[str, int | None]]:
    """Model ids the provider lists, with the context window where it reports one; raises the SDK's errors."""
    listing = client.get("/models", cast_to=object)
    entries = listing.get("data") if isinstance(listing, dict) else listing
    running = _ollama_running(client) if probe == "ollama" else {}
    found = []
    for item in entries if isinstance(entries, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        window = listed_window(item)
        if window is None and probe == "ollama":
            window = _ollama_context(client, item["id"], running)
        found.append((item["id"], window))
    return found


def listed_window(item: dict[str, Any]) -> int | None:
    """The context window a /models entry reports, in the field its server uses."""
    meta, top = item.get("meta"), item.get("top_provider")
    for value in (item.get("context_length"),  # OpenRouter
                  top.get("context_length") if isinstance(top, dict) else None,
                  item.get("max_model_len"),  # vLLM
                  item.get("max_input_tokens"),  # LiteLLM
                  meta.get("n_ctx") if isinstance(meta, dict) else None):  # llama.cpp's running context
        if (window := _positive(value)) is not None:
            return window
    return None


def running_context(client: openai.OpenAI, model_id: str) -> int | None:
    """The context a loaded Ollama model runs with, per /api/ps; None when it is not loaded."""
    return _running(_ollama_running(client), model_id)


def _ollama_running(client: openai.OpenAI) -> dict[str, int]:
    """Loaded models and the context each runs with (GET /api/ps)."""
    try:
        info = client.get(f"{_ollama_root(client)}/api/ps", cast_to=object)
    except openai.APIError as exc:
        log.info("ollama /api/ps failed: %r", exc)
        return {}
    models = info.get("models") if isinstance(info, dict) else None
    running = {}
    for item in models if isinstance(models, list) else []:
        window = _positive(item.get("context_length")) if isinstance(item, dict) else None
        for name in (item.get("name"), item.get("model")) if window else ():
            if isinstance(name, str):
                running[name] = window
    return running


def _ollama_context(client: openai.OpenAI, model_id: str, running: dict[str, int]) -> int | None:
    """The context Ollama runs a model with: as loaded, else its Modelfile's num_ctx, else the default."""
    try:
        info = client.post(f"{_ollama_root(client)}/api/show", body={"model": model_id}, cast_to=object)
    except openai.APIError as exc:
        log.info("ollama /api/show failed for %s: %r", model_id, exc)
        return _running(running, model_id)
    info = info if isinstance(info, dict) else {}
    details = info.get("model_info") if isinstance(info.get("model_info"), dict) else {}
    limit = next((_positive(v) for k, v in details.items() if k.endswith(".context_length")), None)
    # A Modelfile's "PARAMETER num_ctx N" shows as a line "num_ctx N" in `parameters`.
    match = re.search(r"^num_ctx\s+(\d+)", str(info.get("parameters", "")), re.MULTILINE)
    window = _running(running, model_id) or (int(match[1]) if match else None) or OLLAMA_DEFAULT_CONTEXT
    return min(window, limit) if limit else window


def _running(running: dict[str, int], model_id: str) -> int | None:
    return running.get(model_id) or running.get(f"{model_id}:latest")


def _ollama_root(client: openai.OpenAI) -> str:
    return str(client.base_url).rstrip("/").removesuffix("/v1")


def _positive(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return None
