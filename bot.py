"""Entry point: `python bot.py` runs the bot; `--healthcheck` and `--help` are the other uses.

This module imports only the standard library and `config` at the top: the
health check runs every 30 s in Docker and must not load the app (telebot,
openai, tiktoken). The bot itself lives in runner.py, imported once it is needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from config import ConfigError, data_dir_from_env, load_config

if TYPE_CHECKING:
    from runner import Bot

log = logging.getLogger("bot")

HEARTBEAT = "heartbeat"  # the polling loop touches DATA_DIR/heartbeat after every poll
HEARTBEAT_FRESH = 90.0  # seconds; a long poll returns at least every POLL_TIMEOUT
# After SIGTERM the bot stops within this many seconds whatever it is doing (streaming, waiting for
# a provider, Telegram down): docker's and systemd's grace periods are longer, so no SIGKILL comes.
STOP_LIMIT = 9.5
EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2

USAGE = """\
Settings come from the environment and from .env in the working directory (the
environment wins per variable). Every secret also accepts NAME_FILE, the path of
a file holding it. The main ones (all of them are in README.md):

  TELEGRAM_BOT_TOKEN   the token from @BotFather (required)
  OPENAI_API_KEY       an OpenAI key, or another provider's: ANTHROPIC_API_KEY,
                       GEMINI_API_KEY, ..., OLLAMA_BASE_URL
  ALLOWED_USER_IDS     who may chat: comma-separated user ids, or *
  ADMIN_USER_IDS       admins: always allowed, see every session
  DEFAULT_MODEL        the model of new conversations
  DATA_DIR             where conversations and the heartbeat are kept (./data)
  MODELS_FILE, PRESETS_FILE, LOG_LEVEL, STREAM, WORKERS, REQUEST_TIMEOUT, ...

Exit status: 0 after a clean stop (SIGTERM or Ctrl-C), 1 when Telegram refuses
the token, 2 for a configuration error (one line on stderr names the variable).
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bot.py", description="A Telegram bot for chatting with large language models.",
        epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--healthcheck", action="store_true",
                        help="exit 0 if the running bot's heartbeat (DATA_DIR/heartbeat) is fresh, else 1")
    return parser.parse_args(argv)


def healthcheck() -> int:
    """0 when the polling loop's heartbeat is fresh, 1 otherwise (reads nothing but the heartbeat)."""
    path = data_dir_from_env() / HEARTBEAT
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        print(f"unhealthy: no heartbeat at {path}")
        return 1
    if age > HEARTBEAT_FRESH:
        print(f"unhealthy: heartbeat is {age:.0f}s old")
        return 1
    print(f"healthy: heartbeat {age:.0f}s old")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.healthcheck:
        return healthcheck()
    # Conversations are private: whatever the caller's umask, files the bot creates are owner-only.
    os.umask(0o077)
    try:
        config = load_config()
    except ConfigError as exc:
        return config_error(exc)
    from logs import setup_logging

    setup_logging(config.log_level, config.secrets())
    for level, message in config.notices:
        log.log(level, "%s", message)
    from runner import Bot, FatalTelegramError

    try:
        bot = Bot(config)
    except ConfigError as exc:
        if config.dotenv_problem:  # it may have held what is missing (a provider's key)
            exc = ConfigError(exc.variable, f"{exc.problem} (note: {config.dotenv_problem})")
        return config_error(exc)
    install_signal_handlers(bot)
    try:
        bot.start()
    except FatalTelegramError as exc:
        log.critical("%s", exc)
        return EXIT_FATAL
    except ConfigError as exc:
        return config_error(exc)
    while not bot.stop_event.wait(1.0):
        pass
    bot.shutdown()
    if bot.fatal:
        log.critical("%s", bot.fatal)
        return EXIT_FATAL
    log.info("stopped")
    return EXIT_OK


def config_error(exc: ConfigError) -> int:
    print(f"configuration error: {exc}", file=sys.stderr)
    return EXIT_CONFIG


def install_signal_handlers(bot: Bot) -> None:
    """SIGTERM/SIGINT stop the bot; a watchdog ends the process if the stop overruns STOP_LIMIT."""
    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if bot.stop_event.is_set():
            log.warning("%s received again: exiting now", name)
            os._exit(EXIT_FATAL)
        log.info("%s received: stopping (at most %.0f s)", name, STOP_LIMIT)
        bot.stop_event.set()
        threading.Thread(target=_watchdog, name="stop-watchdog", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _watchdog() -> None:
    time.sleep(STOP_LIMIT)
    log.warning("the stop took longer than %.1f s (a call that does not return?): exiting now", STOP_LIMIT)
    os._exit(EXIT_OK)


def __getattr__(name: str) -> Any:
    # `from bot import Bot` keeps working without making every `python bot.py --healthcheck` load the app.
    if name in ("Bot", "FatalTelegramError"):
        import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'bot' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
