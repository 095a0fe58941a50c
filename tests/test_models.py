"""Tests for models.py: the registry built from the shipped catalog, MODELS_FILE and discovery."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from config import Config, ConfigError, Secret
from models import (
    BUILTIN_CATALOG,
    CONSERVATIVE_WINDOW,
    ModelInfo,
    Registry,
    UnknownModel,
    load_registry,
)

TODAY = dt.date(2026, 11, 25)
LAB_TOML = """
[providers.lab]
title = "Lab"
base_url = "https://lab.example/v1/"
api_key_env = "LAB_API_KEY"

[[models]]
id = "lab-1"
provider = "lab"
context_window = 32000
max_output = 4000

[[models]]
id = "gpt-4o"
provider = "openai"
context_window = 64000
max_output = 8000
"""


def make_config(*keys: str, models_file: Path | None = None, default_model: str | None = None,
                **urls: str) -> Config:
    """A Config with the given *_API_KEY names set (to dummy secrets) and *_BASE_URL values."""
    env: dict[str, Secret | str] = {name: Secret(f"secret-{name.lower()}") for name in keys}
    env.update(urls)
    return Config(Secret("1:abc"), provider_env=env, models_file=models_file, default_model=default_model)


def registry(*keys: str, today: dt.date = TODAY, models_file: Path | None = None,
             default_model: str | None = None, **urls: str) -> Registry:
    config = make_config(*keys, models_file=models_file, default_model=default_model, **urls)
    return load_registry(config, today=today)


def write_models(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_is_gpt_5_4_mini_with_only_an_openai_key() -> None:
    reg = registry("OPENAI_API_KEY")
    assert reg.default_model == "gpt-5.4-mini"
    assert {m.provider for m in reg.available()} == {"openai"}
    mini = reg.get("gpt-5.4-mini")
    assert (mini.context_window, mini.encoding, mini.exact_tokens) == (400000, "o200k_base", True)
    assert reg.providers["openai"].api_key == Secret("secret-openai_api_key")


@pytest.mark.parametrize(("today", "offered"), [
    (dt.date(2026, 11, 25), True),
    (dt.date(2026, 12, 10), True),
    (dt.date(2026, 12, 11), False),  # the shutdown day itself
    (dt.date(2026, 12, 12), False),
])
def test_retired_models_are_not_offered(today: dt.date, offered: bool) -> None:
    reg = registry("OPENAI_API_KEY", today=today)
    assert ("gpt-5-mini" in reg.models) is offered
    assert "gpt-5.4-mini" in reg.models


def test_providers_without_keys_are_not_offered() -> None:
    reg = registry("OPENAI_API_KEY", "GEMINI_API_KEY")
    providers = {m.provider for m in reg.available()}
    assert providers == {"openai", "gemini"}
    assert not reg.providers["anthropic"].enabled
    assert "claude-haiku-5-5" not in reg.models


def test_only_an_anthropic_key_makes_an_anthropic_default() -> None:
    reg = registry("ANTHROPIC_API_KEY")
    assert reg.get(reg.default_model).provider == "anthropic"
    assert {m.provider for m in reg.available()} == {"anthropic"}
    assert reg.get("claude-haiku-5-5").exact_tokens is False


def test_no_provider_is_a_config_error_naming_openai_api_key() -> None:
    with pytest.raises(ConfigError) as info:
        registry()
    assert info.value.variable == "OPENAI_API_KEY"


def test_a_local_provider_needs_no_key() -> None:
    reg = registry(OLLAMA_BASE_URL="http://localhost:11434/v1")
    assert reg.providers["ollama"].enabled
    assert reg.providers["ollama"].base_url == "http://localhost:11434/v1"
    assert reg.models == {} and reg.default_model == ""


def test_base_url_env_overrides_the_catalog_url() -> None:
    reg = registry("OPENAI_API_KEY", OPENAI_BASE_URL="http://127.0.0.1:8080/v1")
    assert reg.providers["openai"].base_url == "http://127.0.0.1:8080/v1"


def test_default_model_of_a_provider_without_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        registry("OPENAI_API_KEY", default_model="claude-haiku-5-5")
    assert info.value.variable == "DEFAULT_MODEL"
    assert registry("OPENAI_API_KEY", default_model="gpt-4o").default_model == "gpt-4o"


def test_models_file_adds_a_custom_provider_and_overrides_a_builtin(tmp_path: Path) -> None:
    reg = registry("OPENAI_API_KEY", "LAB_API_KEY", models_file=write_models(tmp_path, LAB_TOML))
    lab = reg.providers["lab"]
    assert (lab.title, lab.base_url, lab.enabled) == ("Lab", "https://lab.example/v1", True)
    assert lab.api_key == Secret("secret-lab_api_key")
    lab1 = reg.get("lab-1")
    assert (lab1.provider, lab1.context_window, lab1.max_output) == ("lab", 32000, 4000)
    assert reg.get("gpt-4o").context_window == 64000
    assert reg.user_defined == frozenset({"lab-1", "gpt-4o"})
    assert reg.default_model == "gpt-5.4-mini"


def test_models_file_provider_without_its_key_is_not_offered(tmp_path: Path) -> None:
    reg = registry("OPENAI_API_KEY", models_file=write_models(tmp_path, LAB_TOML))
    assert not reg.providers["lab"].enabled
    assert "lab-1" not in reg.models


@pytest.mark.parametrize(("text", "problem"), [
    ("[[models]\nid = 'x'", "not valid TOML"),
    ("[[models]]\nid = 'x'\nprovider = 'openai'\n", "context_window"),
    ("[[models]]\nid = 'x'\nprovider = 'nowhere'\ncontext_window = 8192\n", "unknown provider 'nowhere'"),
    ("[[models]]\nid = 'x'\ncontext_window = 100\n", "context_window"),
    ("[[models]]\nid = 'x'\ncontext_window = 8192\nshutdown = 'soon'\n", "shutdown"),
    ("[[models]]\ncontext_window = 8192\n", "needs an id"),
    ("providers = 3\n", "must be tables"),
])
def test_invalid_models_file_is_a_config_error(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        registry("OPENAI_API_KEY", models_file=write_models(tmp_path, text))
    assert info.value.variable == "MODELS_FILE"
    assert problem in info.value.problem


def test_get_unknown_model_lists_the_known_ones() -> None:
    reg = registry("OPENAI_API_KEY")
    with pytest.raises(UnknownModel) as info:
        reg.get("gpt-99")
    assert info.value.model_id == "gpt-99"
    assert info.value.known == sorted(reg.models)
    assert "gpt-5.4-mini" in info.value.known


def test_resolve_unknown_model_is_conservative() -> None:
    reg = registry("OPENAI_API_KEY")
    info = reg.resolve("mystery-model")
    assert (info.id, info.provider, info.known) == ("mystery-model", "openai", False)
    assert info.context_window == CONSERVATIVE_WINDOW == 8192
    assert reg.resolve("gpt-4o") is reg.get("gpt-4o")
    assert "mystery-model" not in reg.models


def test_by_key_round_trip() -> None:
    reg = registry("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    keys = {m.key for m in reg.available()}
    assert len(keys) == len(reg.models)  # keys are distinct
    for model in reg.available():
        assert len(model.key) == 12
        assert reg.by_key(model.key) is model
    assert reg.by_key("000000000000") is None


def test_add_discovered_adds_models_with_their_reported_window(tmp_path: Path) -> None:
    reg = registry("OPENAI_API_KEY", "LAB_API_KEY", models_file=write_models(tmp_path, LAB_TOML))
    added = reg.add_discovered("lab", [("lab-2", 65536), ("lab-3", None), ("lab-1", 99999)])
    assert added == 2
    assert (reg.get("lab-2").provider, reg.get("lab-2").context_window) == ("lab", 65536)
    assert reg.get("lab-3").context_window == CONSERVATIVE_WINDOW
    assert reg.get("lab-1").context_window == 32000  # the user's figure wins


def test_add_discovered_updates_catalog_windows_but_not_user_ones(tmp_path: Path) -> None:
    reg = registry("OPENAI_API_KEY", models_file=write_models(tmp_path, LAB_TOML))
    found = [("gpt-4.1", 2000000), ("gpt-4o", 1), ("text-embedding-3-large", None)]
    added = reg.add_discovered("openai", found)
    assert added == 0  # OpenAI models nobody describes are not offered
    assert reg.get("gpt-4.1").context_window == 2000000
    assert reg.get("gpt-4o").context_window == 64000
    assert "text-embedding-3-large" not in reg.models


def test_custom_providers_are_discovered_unless_turned_off(tmp_path: Path) -> None:
    text = LAB_TOML + '\n[providers.quiet]\nbase_url = "http://quiet.example/v1"\ndiscover = false\n'
    reg = registry("OPENAI_API_KEY", "LAB_API_KEY", models_file=write_models(tmp_path, text))
    assert (reg.providers["lab"].discover, reg.providers["quiet"].discover) == (True, False)
    assert reg.providers["anthropic"].discover is False  # the catalog says so


def test_a_gateway_at_openai_base_url_offers_what_it_lists(tmp_path: Path) -> None:
    assert registry("OPENAI_API_KEY").providers["openai"].gateway is False
    reg = registry("OPENAI_API_KEY", models_file=write_models(tmp_path, LAB_TOML),
                   OPENAI_BASE_URL="http://litellm.corp:4000/v1")
    assert reg.providers["openai"].gateway is True
    listed = [("corp-llama", None), ("gpt-5.4", None), ("text-embedding-3-large", None)]
    added = reg.add_discovered("openai", listed)
    assert added == 1 and reg.get("corp-llama").context_window == CONSERVATIVE_WINDOW
    offered = {m.id for m in reg.available(featured_only=True)}
    assert offered == {"corp-llama", "gpt-5.4", "gpt-4o"}  # listed, or described in MODELS_FILE
    assert reg.default_model == "corp-llama"  # gpt-5.4-mini is not served there


def test_a_gateway_keeps_a_pinned_default_and_an_empty_list_decides_nothing() -> None:
    reg = registry("OPENAI_API_KEY", default_model="gpt-5.4-mini", OPENAI_BASE_URL="http://proxy/v1")
    assert reg.add_discovered("openai", []) == 0 and "gpt-5.5" in reg.models
    reg.add_discovered("openai", [("corp-llama", None)])
    assert reg.default_model == "gpt-5.4-mini" and set(reg.models) == {"corp-llama"}


def test_learn_window_beats_every_source(tmp_path: Path) -> None:
    reg = registry("OPENAI_API_KEY", "LAB_API_KEY", models_file=write_models(tmp_path, LAB_TOML))
    assert reg.learn_window("lab", "lab-1", 8192) is True
    assert reg.get("lab-1").context_window == 8192  # the user's 32,000 was wrong: the server said so
    assert reg.learn_window("lab", "lab-1", 8192) is False
    assert reg.learn_window("openai", "lab-1", 4096) is False  # not that provider's model
    assert reg.learn_window("lab", "nope", 4096) is False


@pytest.mark.parametrize(("window", "max_output", "cap", "reserve", "reasoning"), [
    (400000, 128000, 8192, 8192, False),  # the cap
    (400000, 4000, 8192, 4000, False),  # the model's maximum output
    (1000, 4000, 8192, 500, False),  # half the window
    (1, 1, 8192, 1, False),  # never zero
    (400000, 128000, 8192, 128000, True),  # hidden reasoning counts too: the model's own limit
    (100000, 128000, 8192, 50000, True),  # still at most half the window
])
def test_reply_reserve_caps(window: int, max_output: int, cap: int, reserve: int, reasoning: bool) -> None:
    assert ModelInfo("m", "openai", window, max_output, reasoning=reasoning).reply_reserve(cap) == reserve


def test_every_builtin_model_is_well_formed() -> None:
    with open(BUILTIN_CATALOG, "rb") as f:
        catalog = tomllib.load(f)
    providers = catalog["providers"]
    ids = [m["id"] for m in catalog["models"]]
    assert len(ids) == len(set(ids)), "duplicate model ids"
    for model in catalog["models"]:
        assert model["provider"] in providers, model["id"]
        assert model["context_window"] > 0 and model["max_output"] > 0, model["id"]


def test_every_offered_builtin_model_has_an_enabled_provider() -> None:
    keys = [f"{name.upper()}_API_KEY" for name in ("openai", "anthropic", "gemini", "deepseek",
                                                    "mistral", "groq", "openrouter")]
    reg = registry(*keys)
    assert len(reg.models) > 20
    for model in reg.available():
        assert reg.providers[model.provider].enabled, model.id


def test_openai_model_unknown_to_tiktoken_counts_as_estimate() -> None:
    reg = registry("OPENAI_API_KEY")
    assert reg.get("gpt-6-luna").exact_tokens is False
    assert reg.get("gpt-5.4").exact_tokens is True
