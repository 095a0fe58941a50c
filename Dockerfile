# syntax=docker/dockerfile:1
# Telegram LLM bot image.
#   docker build -t llm-telegram-bot .
#   docker run -d -v bot-data:/data -e TELEGRAM_BOT_TOKEN_FILE=/run/secrets/... llm-telegram-bot
# Secrets are never baked in: pass them at run time (env, *_FILE, or compose secrets).

# Pinned patch version; bump deliberately (Renovate/Dependabot can track this tag).
FROM python:3.13.9-slim-bookworm

# Labels are overridden with the real repository/version by docker/metadata-action in CI.
LABEL org.opencontainers.image.title="llm-telegram-bot" \
      org.opencontainers.image.description="Self-hosted Telegram bot for OpenAI-compatible and other LLM providers" \
      org.opencontainers.image.source="https://github.com/OWNER/llm-telegram-bot" \
      org.opencontainers.image.base.name="docker.io/library/python:3.13.9-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data

# tiktoken encodings are fetched at build time (below) and only read from here at
# run time, so the container never downloads them. DL3064 is a false positive:
# "TIKTOKEN" merely contains "TOKEN"; this is a cache path, not a secret.
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken

# Fixed uid/gid so volume and secret-file ownership is predictable on the host.
# No apt-get: every dependency ships manylinux wheels for amd64 and arm64.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data /app \
 && chown app:app /data

WORKDIR /app

# Dependencies in their own layer: only invalidated when requirements.txt changes.
COPY requirements.txt .
# The chmod guards against cache files created 0600: the app user must read them.
RUN pip install --no-cache-dir -r requirements.txt \
 && python -c "import tiktoken; [tiktoken.get_encoding(e) for e in ('o200k_base', 'cl100k_base')]" \
 && chmod -R a+rX "$TIKTOKEN_CACHE_DIR"

# Application code only (see .dockerignore): modules and bundled TOML data,
# owned by root so the app user cannot modify its own code.
COPY *.py *.toml ./
COPY locales/ ./locales/

# Numeric uid:gid so runtimes can verify non-root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001

# Named volumes inherit the ownership of /data (app:app) on first creation.
VOLUME /data

# bot.py --healthcheck: exit 0 if the heartbeat file in $DATA_DIR is fresh, else 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "bot.py", "--healthcheck"]

# Python is PID 1 (exec form) and handles SIGTERM itself for a graceful exit.
STOPSIGNAL SIGTERM
CMD ["python", "bot.py"]
