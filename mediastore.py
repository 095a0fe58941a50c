"""Images of conversations, stored once on disk by content and referenced from the session history.

A reference is `<sha256 of the bytes>-<width>x<height>.jpg`: the same picture sent twice is one file,
and its size (for token counts after a restart or a model switch) is known without opening it. Files
live under `DATA_DIR/media/<first two hex digits>/`; `collect` deletes the ones no conversation
references any more. With SESSION_STORE=memory nothing touches the disk (`MediaStore(None)`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_REF = re.compile(r"^(?P<digest>[0-9a-f]{64})-(?P<width>[1-9][0-9]{0,5})x(?P<height>[1-9][0-9]{0,5})\.jpg$")
# A file newer than this is never collected: its turn may still be running, not yet saved.
COLLECT_GRACE = 3600.0


def is_ref(ref: str) -> bool:
    return bool(_REF.match(ref))


def image_size(ref: str) -> tuple[int, int]:
    """(width, height) of the image a reference names."""
    match = _REF.match(ref)
    if match is None:
        raise ValueError(f"not an image reference: {ref!r}")
    return int(match["width"]), int(match["height"])


class MediaStore:
    """Content-addressed JPEG files; `root=None` keeps them in memory only."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, tuple[bytes, float]] = {}  # ref -> (bytes, time stored)
        self._lock = threading.Lock()

    def put(self, data: bytes, width: int, height: int) -> str:
        """Store a JPEG (once); its reference."""
        ref = f"{hashlib.sha256(data).hexdigest()}-{width}x{height}.jpg"
        if self.root is None:
            with self._lock:
                self._memory[ref] = (data, time.time())
            return ref
        path = self._path(ref)
        if path.exists():
            os.utime(path)  # fresh again: `collect` must not take it before the turn is saved
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then renamed: a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes | None:
        """The bytes, or None when the file is gone (deleted by hand, or a bad reference)."""
        if not is_ref(ref):
            return None
        if self.root is None:
            with self._lock:
                stored = self._memory.get(ref)
            return stored[0] if stored else None
        try:
            return self._path(ref).read_bytes()
        except OSError:
            return None

    def data_url(self, ref: str) -> str | None:
        """The image as a `data:` URL for an image_url part; None when it is gone."""
        data = self.get(ref)
        if data is None:
            log.warning("image %s is missing from the media store: sent without it", ref)
            return None
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    def collect(self, referenced: Iterable[str], grace: float = COLLECT_GRACE) -> int:
        """Delete stored images that no reference names (older than `grace` s); how many went."""
        keep = set(referenced)
        cutoff = time.time() - grace
        if self.root is None:
            with self._lock:
                gone = [ref for ref, (_, at) in self._memory.items() if ref not in keep and at < cutoff]
                for ref in gone:
                    del self._memory[ref]
            return len(gone)
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.glob("*/*"):
            name = path.name
            if name in keep or not (is_ref(name) or name.startswith(".tmp-")):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("could not remove unreferenced image %s: %s", name, exc)
        if removed:
            log.info("removed %d images no conversation references", removed)
        return removed

    def _path(self, ref: str) -> Path:
        assert self.root is not None and is_ref(ref)
        return self.root / ref[:2] / ref
