"""Strict fake servers (Telegram Bot API, OpenAI API) that the real bot talks to over real HTTP."""

from .openai import FakeOpenAI, Reply, Request
from .telegram import Call, DraftUpdate, FakeTelegram

__all__ = ["Call", "DraftUpdate", "FakeOpenAI", "FakeTelegram", "Reply", "Request"]
