"""Files of the fake Telegram: what users attach, `getFile`, and the download endpoint.

Like the real Bot API: `getFile` answers a File object with a `file_path` valid for the download URL
`{root}/file/bot{token}/{file_path}`, and refuses files over 20 MB with 400 "Bad Request: file is too
big" (bots may download at most 20 MB); an unknown file_id is 400 "Bad Request: invalid file_id"; a
download with a wrong token or path is a 404. A photo message carries several sizes, the original last.
"""

from __future__ import annotations

import io
import itertools
import mimetypes
import threading
from dataclasses import dataclass
from typing import Any

from .tg_wire import bad_request

MAX_DOWNLOAD = 20 * 1024 * 1024  # Bot API: "download files of up to 20MB in size"
# Where Telegram puts each kind of file (the first part of file_path) and the extension it uses.
FOLDERS = {
    "photo": ("photos", ".jpg"), "voice": ("voice", ".oga"), "audio": ("music", ".mp3"),
    "video_note": ("video_notes", ".mp4"), "video": ("videos", ".mp4"), "document": ("documents", ""),
    "animation": ("animations", ".mp4"), "sticker": ("stickers", ".webp"),
}  # fmt: skip


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    folder: str
    extension: str
    file_path: str | None = None  # given out by the first getFile


class FileStore:
    """The files users attached, by file_id, and the paths getFile handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._paths: dict[str, StoredFile] = {}
        self._ids = itertools.count(1)
        self.downloads: list[str] = []  # file paths fetched, in order
        self.download_delay = 0.0  # seconds before a download's body is sent (to test time caps)

    def add(self, data: bytes, field: str, file_name: str | None = None, mime_type: str | None = None
            ) -> StoredFile:
        folder, extension = FOLDERS.get(field, ("documents", ""))
        if file_name and "." in file_name:
            extension = "." + file_name.rsplit(".", 1)[1].lower()
        elif not extension and mime_type:
            extension = mimetypes.guess_extension(mime_type) or ""
        with self._lock:
            n = next(self._ids)
            stored = StoredFile(f"BQACAgIAAxkBAAI{n:08d}fake{len(data):x}", f"AgAD{n:06d}", bytes(data),
                                folder, extension)
            self._files[stored.file_id] = stored
        return stored

    def get_file(self, file_id: str | None) -> dict[str, Any]:
        """The getFile answer."""
        if not file_id:
            raise bad_request("file_id is empty")
        with self._lock:
            stored = self._files.get(file_id)
            if stored is None:
                raise bad_request("invalid file_id")
            if len(stored.data) > MAX_DOWNLOAD:
                raise bad_request("file is too big")
            if stored.file_path is None:
                stored.file_path = f"{stored.folder}/file_{len(self._paths)}{stored.extension}"
                self._paths[stored.file_path] = stored
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.data), "file_path": stored.file_path}

    def content(self, file_path: str) -> bytes | None:
        with self._lock:
            stored = self._paths.get(file_path)
            if stored is not None:
                self.downloads.append(file_path)
            return stored.data if stored is not None else None

    def media_field(self, field: str, data: bytes, *, file_size: bool = True, file_name: str | None = None,
                    mime_type: str | None = None, **meta: Any) -> Any:
        """The message field for an attachment: a File object, or for a photo its list of sizes."""
        stored = self.add(data, field, file_name, mime_type)
        if field == "photo":
            return self._photo_sizes(stored, file_size)
        value: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if file_name is not None:
            value["file_name"] = file_name
        if mime_type is not None:
            value["mime_type"] = mime_type
        if file_size:  # optional in the Bot API: a client may leave it out
            value["file_size"] = len(data)
        return value | meta

    def _photo_sizes(self, stored: StoredFile, file_size: bool) -> list[dict[str, Any]]:
        """Telegram sends a photo as several sizes, smallest first; here a real 90-px thumbnail and the
        original (a bot that takes the first size gets the thumbnail)."""
        from PIL import Image  # only photo tests need Pillow

        with Image.open(io.BytesIO(stored.data)) as image:
            width, height = image.size
            thumb = image.convert("RGB")
            thumb.thumbnail((90, 90))
            out = io.BytesIO()
            thumb.save(out, "JPEG")
        small = self.add(out.getvalue(), "photo")
        sizes = []
        for item, (w, h) in ((small, thumb.size), (stored, (width, height))):
            size: dict[str, Any] = {"file_id": item.file_id, "file_unique_id": item.file_unique_id,
                                    "width": w, "height": h}
            if file_size:
                size["file_size"] = len(item.data)
            sizes.append(size)
        return sizes
