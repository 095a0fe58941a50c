# Telegram LLM bot image.
#   docker build -t llm-telegram-bot .
#   docker run -d --name llmbot --restart unless-stopped --stop-timeout 15 \
#       --env-file .env -v llmbot-data:/data llm-telegram-bot
# Secrets are never baked in: pass them at run time (env, *_FILE, or compose secrets).
# Without internet, put tiktoken's encodings in deploy/tiktoken/ first (deploy/README.md).

# Pinned patch version; bump deliberately (Renovate/Dependabot can track this tag).
FROM python:3.13.9-slim-bookworm

# docker/metadata-action adds the repository's labels (source, version) in CI.
LABEL org.opencontainers.image.title="llm-telegram-bot" \
      org.opencontainers.image.description="Self-hosted Telegram bot for OpenAI-compatible and other LLM providers" \
      org.opencontainers.image.base.name="docker.io/library/python:3.13.9-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data

# tiktoken's encodings are put in place at build time (below) and only read from here at
# run time, so the container never downloads them. DL3064 is a false positive:
# "TIKTOKEN" merely contains "TOKEN"; this is a cache path, not a secret.
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken

# Fixed uid/gid so volume and secret-file ownership is predictable on the host.
# No apt-get: every dependency ships manylinux wheels for amd64 and arm64.
# /data is private (0700): it holds the conversations.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /app \
 && mkdir -m 700 /data \
 && chown app:app /data

WORKDIR /app

# Encodings given in the build context (deploy/tiktoken/, often empty) are used as they are;
# the missing ones are downloaded. Dependencies get their own layer: only invalidated when
# requirements.txt changes. The chmod lets the app user read cache files created 0600.
COPY deploy/tiktoken/ /opt/tiktoken/
COPY requirements.txt deploy/fetch_tiktoken.py ./
RUN pip install --no-cache-dir -r requirements.txt \
 && python fetch_tiktoken.py \
 && rm fetch_tiktoken.py \
 && chmod -R a+rX "$TIKTOKEN_CACHE_DIR"

# Application code only (see .dockerignore): modules and bundled TOML data,
# owned by root so the app user cannot modify its own code.
COPY *.py *.toml ./
COPY locales/ ./locales/

# Numeric uid:gid so runtimes can verify non-root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001

# Named volumes inherit the ownership and mode of /data on first creation.
VOLUME /data

# Reads only the heartbeat file in $DATA_DIR (no app import): exit 0 if fresh, else 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "bot.py", "--healthcheck"]

# Python is PID 1 (exec form) and handles SIGTERM itself: it exits within 10 s.
STOPSIGNAL SIGTERM
CMD ["python", "bot.py"]
