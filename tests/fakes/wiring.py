"""The environment that points the real bot at the fakes (shared by the tests and the benchmarks)."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.openai import FakeOpenAI
from tests.fakes.telegram import FakeTelegram


def fake_env(tg: FakeTelegram, llm: FakeOpenAI, data_dir: Path, **settings: str) -> dict[str, str]:
    """Bot settings for these fakes plus `settings`; a setting given as '' is left out."""
    env = {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_URL": tg.url,
        "OPENAI_API_KEY": llm.api_key or "sk-fake",
        "OPENAI_BASE_URL": llm.url,
        "DATA_DIR": str(data_dir),
        **settings,
    }
    return {k: v for k, v in env.items() if v != ""}
