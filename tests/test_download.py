"""Files on the fake Telegram (getFile, the download URL, the 20 MB limit) and `Sender.download`."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
import requests
import telebot
from PIL import Image
from telebot import apihelper
from telebot.apihelper import ApiTelegramException

from sender import FileTooBig, Sender, TelegramError
from tests.fakes.telegram import FakeTelegram
from tests.fakes.tg_files import MAX_DOWNLOAD

USER = 100


@pytest.fixture
def tg(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    with FakeTelegram(rate_limit=False) as fake:
        monkeypatch.setattr(apihelper, "API_URL", fake.api_url)
        monkeypatch.setattr(apihelper, "FILE_URL", fake.url + "/file/bot{0}/{1}")
        yield fake


@pytest.fixture
def sender(tg: FakeTelegram) -> Sender:
    return Sender(telebot.TeleBot(tg.token, threaded=False), sleep=lambda s: None)


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def last_message(tg: FakeTelegram) -> dict:
    return tg.pending_updates()[-1]["message"]


def test_a_voice_note_is_served_through_getfile_and_the_download_url(tg: FakeTelegram) -> None:
    blob = b"OggS\x00\x02" + bytes(range(256)) * 40
    tg.send_media(USER, "voice", blob, mime_type="audio/ogg", duration=3)
    voice = last_message(tg)["voice"]
    assert voice["duration"] == 3 and voice["mime_type"] == "audio/ogg" and voice["file_size"] == len(blob)

    info = telebot.TeleBot(tg.token, threaded=False).get_file(voice["file_id"])
    assert info.file_size == len(blob)
    assert info.file_path.startswith("voice/") and info.file_path.endswith(".oga")
    got = requests.get(f"{tg.url}/file/bot{tg.token}/{info.file_path}", timeout=5)
    assert got.status_code == 200 and got.content == blob
    assert tg.files.downloads == [info.file_path]


def test_a_photo_comes_in_sizes_with_the_original_last(tg: FakeTelegram) -> None:
    data = png(640, 480)
    tg.send_media(USER, "photo", data, caption="what is this? @test_bot")
    message = last_message(tg)
    sizes = message["photo"]
    assert [(s["width"], s["height"]) for s in sizes] == [(90, 68), (640, 480)]
    assert message["caption"] == "what is this? @test_bot"
    assert message["caption_entities"] == [{"type": "mention", "offset": 14, "length": 9}]
    bot = telebot.TeleBot(tg.token, threaded=False)
    path = bot.get_file(sizes[-1]["file_id"]).file_path
    assert bot.download_file(path) == data


def test_files_over_20_mb_are_refused_like_telegram(tg: FakeTelegram) -> None:
    tg.send_media(USER, "document", b"x" * (MAX_DOWNLOAD + 1), file_name="big.bin", file_size=False)
    document = last_message(tg)["document"]
    assert "file_size" not in document  # optional in the Bot API
    with pytest.raises(ApiTelegramException) as caught:
        telebot.TeleBot(tg.token, threaded=False).get_file(document["file_id"])
    assert caught.value.error_code == 400 and caught.value.description == "Bad Request: file is too big"


def test_unknown_files_and_paths(tg: FakeTelegram) -> None:
    with pytest.raises(ApiTelegramException) as caught:
        telebot.TeleBot(tg.token, threaded=False).get_file("nope")
    assert caught.value.description == "Bad Request: invalid file_id"
    tg.send_media(USER, "document", b"hello", file_name="a.txt", mime_type="text/plain")
    file_id = last_message(tg)["document"]["file_id"]
    path = telebot.TeleBot(tg.token, threaded=False).get_file(file_id).file_path
    assert path.endswith(".txt")
    assert requests.get(f"{tg.url}/file/bot{tg.token}/documents/other.txt", timeout=5).status_code == 404
    wrong_token = requests.get(f"{tg.url}/file/bot123:WRONG/{path}", timeout=5)
    assert wrong_token.status_code == 404 and wrong_token.json()["description"] == "Not Found"


# -- Sender.download ----------------------------------------------------------------------------------


def test_download_returns_the_exact_bytes(tg: FakeTelegram, sender: Sender) -> None:
    data = bytes(range(256)) * 1000
    tg.send_media(USER, "document", data, file_name="data.bin")
    assert sender.download(last_message(tg)["document"]["file_id"], max_bytes=MAX_DOWNLOAD) == data
    assert [c.method for c in tg.calls] == ["getFile", "download"]


def test_download_refuses_over_the_cap_without_fetching(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_media(USER, "document", b"y" * 5000, file_name="data.bin")
    with pytest.raises(FileTooBig):
        sender.download(last_message(tg)["document"]["file_id"], max_bytes=4096)
    assert tg.files.downloads == []


def test_download_maps_telegrams_too_big_to_file_too_big(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_media(USER, "document", b"z" * (MAX_DOWNLOAD + 1), file_name="big.bin", file_size=False)
    with pytest.raises(FileTooBig):
        sender.download(last_message(tg)["document"]["file_id"], max_bytes=MAX_DOWNLOAD)
    assert tg.files.downloads == []


def test_download_gives_up_at_its_time_cap(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_media(USER, "document", b"slow", file_name="slow.bin")
    tg.files.download_delay = 5.0
    started = time.monotonic()
    with pytest.raises(TelegramError) as caught:
        sender.download(last_message(tg)["document"]["file_id"], max_bytes=MAX_DOWNLOAD, timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert tg.token not in caught.value.description


def test_a_failed_download_is_a_telegram_error(tg: FakeTelegram, sender: Sender) -> None:
    tg.send_media(USER, "document", b"data", file_name="a.bin")
    tg.fail_next("download", 502)
    with pytest.raises(TelegramError) as caught:
        sender.download(last_message(tg)["document"]["file_id"], max_bytes=MAX_DOWNLOAD)
    assert caught.value.code == 502
