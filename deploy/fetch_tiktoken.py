"""Make sure tiktoken's encodings are in TIKTOKEN_CACHE_DIR, downloading those that are missing.

Used by the Dockerfile (the encodings are baked into the image) and to fill deploy/tiktoken/
for a build without internet. On failure: one line saying what to do, exit status 1.
"""

from __future__ import annotations

import os
import socket
import sys

ENCODINGS = ("o200k_base", "cl100k_base")  # every encoding the bot's models use
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up


def main() -> int:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache:
        print("set TIKTOKEN_CACHE_DIR to the folder to fill", file=sys.stderr)
        return 1
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # tiktoken's own download has no timeout
    try:
        import tiktoken

        for name in ENCODINGS:
            tiktoken.get_encoding(name)
    except Exception as exc:
        print(f"cannot download tiktoken's encodings ({exc.__class__.__name__}); to build without internet, "
              "put them in deploy/tiktoken/ first: see 'Docker image without internet' in deploy/README.md",
              file=sys.stderr)
        return 1
    print(f"tiktoken encodings {', '.join(ENCODINGS)} ready in {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
