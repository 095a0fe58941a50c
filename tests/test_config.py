"""Tests for config.py: load_config from environ and .env, secrets, access rules, entry keys."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from config import Config, ConfigError, Secret, check_keys, load_config

TOKEN = "123456:ABC-def_ghi"
API_KEY = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_config picks up ./models.toml when MODELS_FILE is unset: keep the project's out.
    monkeypatch.chdir(tmp_path)


def load(tmp_path: Path, dotenv: str = "", token: str | None = TOKEN, **env: str) -> Config:
    """load_config with `env` as the whole environment and `dotenv` as the .env file."""
    (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    environ = {"TELEGRAM_BOT_TOKEN": token} if token is not None else {}
    return load_config(environ={**environ, **env}, dotenv_path=tmp_path / ".env")


def load_error(tmp_path: Path, dotenv: str = "", token: str | None = TOKEN, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, dotenv, token, **env)
    return info.value


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- the bot token -------------------------------------------------------------------------------


def test_missing_token_names_the_variable(tmp_path: Path) -> None:
    error = load_error(tmp_path, token=None)
    assert error.variable == "TELEGRAM_BOT_TOKEN"
    assert "TELEGRAM_BOT_TOKEN" in str(error)


@pytest.mark.parametrize("bad", ["not-a-token", "987654321", ":abc", "12 34:abc", "123456:abc def"])
def test_malformed_token_is_rejected_without_echoing_it(tmp_path: Path, bad: str) -> None:
    error = load_error(tmp_path, token=bad)
    assert error.variable == "TELEGRAM_BOT_TOKEN"
    assert "does not look like a bot token" in str(error)
    assert bad not in str(error)


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "token", f"\n  {TOKEN}  \n")
    config = load(tmp_path, token=None, TELEGRAM_BOT_TOKEN_FILE=path)
    assert config.telegram_token == Secret(TOKEN)


def test_token_and_token_file_with_different_values_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "token", "654321:OTHER")
    error = load_error(tmp_path, TELEGRAM_BOT_TOKEN_FILE=path)
    assert error.variable == "TELEGRAM_BOT_TOKEN"
    assert "TELEGRAM_BOT_TOKEN_FILE" in error.problem and "different values" in error.problem
    assert TOKEN not in str(error) and "654321:OTHER" not in str(error)


def test_token_and_token_file_with_the_same_value_is_fine(tmp_path: Path) -> None:
    # compose: `env_file: .env` from the quick start puts the token in the environment beside the secret file.
    path = write(tmp_path / "token", TOKEN + "\n")
    assert load(tmp_path, TELEGRAM_BOT_TOKEN_FILE=path).telegram_token == Secret(TOKEN)


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), ("  \n", "is empty")])
def test_unreadable_or_empty_token_file_is_an_error(
        tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    error = load_error(tmp_path, token=None, TELEGRAM_BOT_TOKEN_FILE=str(path))
    assert error.variable == "TELEGRAM_BOT_TOKEN_FILE"
    assert problem in error.problem


# --- sources -------------------------------------------------------------------------------------


def test_dotenv_values_are_used_but_the_environment_wins(tmp_path: Path) -> None:
    dotenv = f"TELEGRAM_BOT_TOKEN={TOKEN}\nWORKERS=7\nDEFAULT_MODEL=from-dotenv\n"
    config = load(tmp_path, dotenv, token=None, DEFAULT_MODEL="from-env")
    assert config.telegram_token.value == TOKEN
    assert config.workers == 7
    assert config.default_model == "from-env"


def test_defaults_without_optional_settings(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert (config.workers, config.stream, config.session_store) == (128, True, "sqlite")
    assert config.context_warn_ratio == 0.8
    assert config.models_file is None
    assert config.provider_env == {}
    assert not config.allow_everyone and config.allowed_user_ids == frozenset()


# --- user lists and access -----------------------------------------------------------------------


def test_allowed_user_ids_star_allows_everyone(tmp_path: Path) -> None:
    config = load(tmp_path, ALLOWED_USER_IDS="*")
    assert config.allow_everyone
    assert config.allowed_user_ids == frozenset()


def test_allowed_user_ids_list_with_spaces_and_empty_items(tmp_path: Path) -> None:
    config = load(tmp_path, ALLOWED_USER_IDS=" 1, 22 ,,-333 ", ADMIN_USER_IDS="9")
    assert not config.allow_everyone
    assert config.allowed_user_ids == frozenset({1, 22, -333})
    assert config.admin_user_ids == frozenset({9})


@pytest.mark.parametrize(("name", "value"), [("ALLOWED_USER_IDS", "1,alice"), ("ALLOWED_USER_IDS", "1;2"),
                                              ("ADMIN_USER_IDS", "*"), ("ADMIN_USER_IDS", "1.5")])
def test_garbage_user_ids_are_rejected(tmp_path: Path, name: str, value: str) -> None:
    assert load_error(tmp_path, **{name: value}).variable == name


def make_access(allowed: Iterable[int] = (), admins: Iterable[int] = (), everyone: bool = False) -> Config:
    return Config(Secret(TOKEN), allow_everyone=everyone, allowed_user_ids=frozenset(allowed),
                  admin_user_ids=frozenset(admins))


def test_access_rules_listed_users_and_admins() -> None:
    config = make_access(allowed={1, 2}, admins={9})
    assert [config.is_allowed(u) for u in (1, 2, 9, 3)] == [True, True, True, False]
    assert [config.is_admin(u) for u in (1, 9)] == [False, True]


def test_access_rules_star_allows_everyone_but_admins_stay_admins() -> None:
    config = make_access(admins={9}, everyone=True)
    assert config.is_allowed(12345) and config.is_allowed(9)
    assert not config.is_admin(12345) and config.is_admin(9)


def test_access_rules_empty_list_allows_only_admins() -> None:
    config = make_access(admins={9})
    assert config.is_allowed(9)
    assert not config.is_allowed(1)


# --- typed values --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("CONTEXT_WARN_RATIO", "2", "between"),
    ("CONTEXT_WARN_RATIO", "0", "between"),
    ("CONTEXT_WARN_RATIO", "nan", "between"),
    ("WORKERS", "abc", "whole number"),
    ("WORKERS", "1.5", "whole number"),
    ("WORKERS", "0", "between"),
    ("POLL_TIMEOUT", "51", "between"),
    ("REQUEST_TIMEOUT", "inf", "between"),
])
def test_numbers_out_of_range_or_malformed(tmp_path: Path, name: str, value: str, problem: str) -> None:
    error = load_error(tmp_path, **{name: value})
    assert error.variable == name
    assert problem in error.problem


def test_numbers_in_range_are_parsed(tmp_path: Path) -> None:
    config = load(tmp_path, CONTEXT_WARN_RATIO="1", WORKERS=" 4 ", DRAFT_INTERVAL="0.2")
    assert (config.context_warn_ratio, config.workers, config.draft_interval) == (1.0, 4, 0.2)
    assert isinstance(config.workers, int)


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("OFF", False), ("no", False),
                                               ("true", True), ("1", True), ("Yes", True), ("", True)])
def test_stream_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load(tmp_path, STREAM=raw).stream is expected


def test_stream_garbage_is_rejected(tmp_path: Path) -> None:
    assert load_error(tmp_path, STREAM="maybe").variable == "STREAM"


def test_session_store_choice(tmp_path: Path) -> None:
    assert load(tmp_path, SESSION_STORE="MEMORY").session_store == "memory"
    error = load_error(tmp_path, SESSION_STORE="redis")
    assert error.variable == "SESSION_STORE"


def test_context_strategy_and_summary_model(tmp_path: Path) -> None:
    assert load(tmp_path).context_strategy == "reset" and load(tmp_path).summary_model is None
    config = load(tmp_path, CONTEXT_STRATEGY=" Summarize ", SUMMARY_MODEL="gpt-5.4-mini")
    assert (config.context_strategy, config.summary_model) == ("summarize", "gpt-5.4-mini")
    error = load_error(tmp_path, CONTEXT_STRATEGY="forget")
    assert error.variable == "CONTEXT_STRATEGY" and "reset, trim, summarize" in str(error)


def test_log_level_choice(tmp_path: Path) -> None:
    assert load(tmp_path, LOG_LEVEL="debug").log_level == "DEBUG"
    assert load_error(tmp_path, LOG_LEVEL="loud").variable == "LOG_LEVEL"


# --- provider credentials ------------------------------------------------------------------------


def test_provider_env_collects_api_keys_as_secrets_and_base_urls(tmp_path: Path) -> None:
    key_file = write(tmp_path / "anthropic", "  ant-key\n")
    config = load(tmp_path, OPENAI_API_KEY=API_KEY, ANTHROPIC_API_KEY_FILE=key_file,
                  OLLAMA_BASE_URL="http://localhost:11434/v1/", MISTRAL_API_KEY="",
                  HOME="/root", API_KEY="no-prefix", openai_api_key="lowercase")
    assert config.provider_env == {
        "OPENAI_API_KEY": Secret(API_KEY),
        "ANTHROPIC_API_KEY": Secret("ant-key"),
        "OLLAMA_BASE_URL": "http://localhost:11434/v1",
    }
    assert sorted(config.secrets()) == sorted([TOKEN, API_KEY, "ant-key"])


def test_provider_base_url_must_be_http(tmp_path: Path) -> None:
    error = load_error(tmp_path, OLLAMA_BASE_URL="localhost:11434")
    assert error.variable == "OLLAMA_BASE_URL"


def test_provider_key_and_key_file_that_differ_is_an_error_without_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "key", API_KEY + "-other")
    error = load_error(tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_API_KEY_FILE=path)
    assert error.variable == "OPENAI_API_KEY"
    assert API_KEY not in str(error)
    assert load(tmp_path, OPENAI_API_KEY=API_KEY, OPENAI_API_KEY_FILE=write(tmp_path / "same", API_KEY))


def test_models_file_must_exist(tmp_path: Path) -> None:
    error = load_error(tmp_path, MODELS_FILE=str(tmp_path / "missing.toml"))
    assert error.variable == "MODELS_FILE"
    existing = write(tmp_path / "models.toml", "")
    assert load(tmp_path, MODELS_FILE=existing).models_file == Path(existing)


# --- secrets stay secret -------------------------------------------------------------------------


def test_repr_of_config_hides_token_and_api_keys(tmp_path: Path) -> None:
    config = load(tmp_path, OPENAI_API_KEY=API_KEY)
    for text in (repr(config), str(config), repr(config.provider_env)):
        assert TOKEN not in text
        assert API_KEY not in text
    assert "Secret('****')" in repr(config)


def test_environment_secret_wins_over_dotenv_file_variant(tmp_path: Path) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("9:fromfile\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"TELEGRAM_BOT_TOKEN_FILE={secret}\nOPENAI_API_KEY=sk-x\n")
    config = load_config({"TELEGRAM_BOT_TOKEN": "1:fromenv"}, dotenv)
    assert config.telegram_token.value == "1:fromenv"


def test_environment_file_variant_wins_over_dotenv_value_with_a_notice(tmp_path: Path) -> None:
    secret = write(tmp_path / "token.txt", f"{TOKEN}\n")
    config = load(tmp_path, "TELEGRAM_BOT_TOKEN=9:from-dotenv\nWORKERS=3\nSYSTEM_PROMPT=\n", token=None,
                  TELEGRAM_BOT_TOKEN_FILE=secret, WORKERS="4", SYSTEM_PROMPT="Be brief.")
    assert config.telegram_token.value == TOKEN and config.workers == 4
    assert (logging.INFO, "TELEGRAM_BOT_TOKEN in .env is not used: the environment sets "
                          "TELEGRAM_BOT_TOKEN_FILE") in config.notices
    # WORKERS only: an empty line of the template (SYSTEM_PROMPT=) is nothing the environment overrides.
    assert (logging.INFO, "the environment overrides .env for WORKERS") in config.notices
    assert "9:from-dotenv" not in str(config.notices)


def test_dotenv_that_is_not_a_file_is_skipped_when_the_environment_has_everything(tmp_path: Path) -> None:
    dotenv = tmp_path / "env-dir"
    dotenv.mkdir()
    config = load_config({"TELEGRAM_BOT_TOKEN": TOKEN}, dotenv)
    assert config.dotenv_problem is not None and str(dotenv) in config.dotenv_problem
    [(level, message)] = config.notices
    assert level == logging.WARNING and "skipped" in message and str(dotenv) in message


def test_unreadable_dotenv_that_was_needed_is_the_error(tmp_path: Path) -> None:
    dotenv = tmp_path / "env-dir"
    dotenv.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config({}, dotenv)
    assert info.value.variable == ".env"
    assert f"cannot read {dotenv}" in info.value.problem and "TELEGRAM_BOT_TOKEN" in info.value.problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file (the process test drops that power)")
def test_dotenv_without_read_permission(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
    dotenv.chmod(0)
    assert "Permission denied" in str(load_config({"TELEGRAM_BOT_TOKEN": TOKEN}, dotenv).dotenv_problem)


def test_check_keys_names_where_and_the_closest_known_key() -> None:
    with pytest.raises(ConfigError) as info:
        check_keys("MODELS_FILE", "models.toml: [[models]] model 'x'", {"id": 1, "provder": 2},
                   {"id", "provider"})
    assert str(info.value) == ("MODELS_FILE: models.toml: [[models]] model 'x': unknown key 'provder' "
                               "(did you mean 'provider'?)")
    check_keys("PRESETS_FILE", "p.toml", {"prompt": 1}, {"prompt", "title"})
