"""Voice notes, photos and files end to end: the real bot, the fake Telegram serving real bytes, the fake
provider; assertions on what reached the provider, what the user saw and what the conversation holds."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

import chat
from i18n import load_catalog
from mediastore import image_size
from tests import media_samples as samples
from tests.conftest import ALICE, GROUP, STRANGER, Harness, Reply, tiny_bot
from tests.fakes.tg_files import MAX_DOWNLOAD

VISION_OFF_MODELS = """
[[models]]
id = "blind-model"
provider = "openai"
context_window = 16000
max_output = 1000
vision = false

[[models]]
id = "mystery-model"
provider = "openai"
context_window = 16000
max_output = 1000
"""


def send(h: Harness, field: str, data: bytes, user: int = ALICE, chat_id: int | None = None,
         **fields: Any) -> list[str]:
    """A user sends a file; the bot's new messages in answer once it is idle."""
    where = user if chat_id is None else chat_id
    before = len(h.tg.messages(where))
    h.tg.send_media(user, field, data, chat_id=chat_id, **fields)
    h.tg.wait_messages(where, before + 1)
    h.idle()
    return h.tg.messages(where)[before:]


def last_user_content(h: Harness) -> Any:
    return h.chat_requests()[-1]["messages"][-1]["content"]  # type: ignore[index]


def images_in(body: dict[str, Any]) -> list[bytes]:
    """The decoded bytes of every image part of a chat request, in order."""
    found = []
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else ():
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/jpeg;base64,")
                found.append(base64.b64decode(url.split(",", 1)[1]))
    return found


# -- voice ------------------------------------------------------------------------------------------


def test_a_voice_note_is_transcribed_shown_and_answered_in_the_same_conversation(harness: Harness) -> None:
    harness.llm.transcript = lambda name, data: "What is the capital of France?"
    harness.ask("hello first")
    blob = samples.ogg_voice(15_000)
    shown = send(harness, "voice", blob, mime_type="audio/ogg", duration=4)
    assert shown == ["🎙 I heard:\nWhat is the capital of France?", "echo: What is the capital of France?"]
    [sent] = harness.llm.transcriptions
    assert sent["model"] == "gpt-4o-mini-transcribe" and sent["filename"] == "voice.ogg"
    assert sent["data"] == blob  # the file's exact bytes (size and content)
    request = harness.chat_requests()[-1]
    assert request["stream"] is True
    assert [m["content"] for m in request["messages"][1:]] == [
        "hello first", "echo: hello first", "What is the capital of France?"]
    assert [m.content for m in harness.session().messages][-2:] == [
        "What is the capital of France?", "echo: What is the capital of France?"]


def test_video_notes_and_audio_files_are_transcribed_too(harness: Harness) -> None:
    send(harness, "video_note", b"\x00\x00\x00\x18ftypmp42" + bytes(3000), duration=2, length=240)
    send(harness, "audio", b"ID3" + bytes(4000), file_name="memo.m4a", mime_type="audio/mp4",
         caption="translate this")
    assert [t["filename"] for t in harness.llm.transcriptions] == ["video_note.mp4", "memo.m4a"]
    assert last_user_content(harness) == "translate this\n\ntranscript of memo.m4a (4003 bytes)"


def test_a_failed_transcription_is_said_and_changes_nothing(harness: Harness) -> None:
    harness.ask("before")
    # OpenAI tells formats by the file's extension and refuses those it does not take.
    [answer] = send(harness, "audio", b"FORM\x00\x00\x10\x00AIFF" + bytes(4000), file_name="memo.aiff",
                    mime_type="audio/aiff")
    assert answer == ("Sorry, I couldn't transcribe that (OpenAI did not manage it). Please try again, "
                      "or type it.")
    assert harness.llm.transcriptions == [] and len(harness.chat_requests()) == 1
    assert [m.content for m in harness.session().messages] == ["before", "echo: before"]


def test_with_transcription_off_a_voice_note_gets_one_sentence(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(TRANSCRIBE_MODEL="off")
    [answer] = send(h, "voice", samples.ogg_voice(), mime_type="audio/ogg", duration=2)
    assert "transcription is off" in answer and "TRANSCRIBE_MODEL" in answer
    assert h.tg.calls_of("getFile") == [] and h.llm.transcriptions == []


def test_an_empty_transcript_is_said_and_nothing_asked(harness: Harness) -> None:
    harness.llm.transcript = lambda name, data: "  "
    assert send(harness, "voice", samples.ogg_voice(), duration=1) == [
        "I couldn't make out any words in that recording."]
    assert harness.chat_requests() == [] and harness.session().messages == []


# -- photos -----------------------------------------------------------------------------------------


def test_a_photo_reaches_a_vision_model_and_stays_in_the_conversation(start_bot: Callable[..., Harness]
                                                                      ) -> None:
    h = start_bot()
    picture = samples.png(64, 48)
    [answer] = send(h, "photo", picture, caption="What colour is it?")
    assert answer == "echo: What colour is it?"
    content = last_user_content(h)
    assert content[0] == {"type": "text", "text": "What colour is it?"}
    [sent] = images_in(h.chat_requests()[-1])
    image = Image.open(io.BytesIO(sent))
    assert image.format == "JPEG" and image.size == (64, 48)
    assert image.convert("RGB").getpixel((60, 40)) == pytest_approx((200, 30, 30))
    assert image.convert("RGB").getpixel((2, 2)) == pytest_approx((10, 220, 40))

    [message, _] = h.session().messages
    [ref] = message.images
    assert image_size(ref) == (64, 48) and (h.data_dir / "media" / ref[:2] / ref).read_bytes() == sent
    model = h.bot.registry.resolve(h.session().model)
    counted = chat.counter(model).message("user", "What colour is it?")
    assert message.tokens == counted + 255  # OpenAI's formula: one 512-px tile, 85 + 170

    assert h.ask("and the top left corner?") == "echo: and the top left corner?"
    assert images_in(h.chat_requests()[-1]) == [sent]
    h.bot.shutdown(grace=2)

    again = start_bot()
    assert again.ask("after a restart?") == "echo: after a restart?"
    assert images_in(again.chat_requests()[-1]) == [sent]
    assert again.session().messages[0].images == (ref,)
    assert again.session().messages[0].tokens == counted + 255


def test_a_photo_without_caption_gets_a_question_in_the_users_language(harness: Harness) -> None:
    send(harness, "photo", samples.png(), language_code="ru")
    assert last_user_content(harness)[0] == {"type": "text", "text": "Что на этой картинке?"}


def test_a_large_image_file_is_downscaled_to_2048(harness: Harness) -> None:
    send(harness, "document", samples.jpeg(4000, 1000), file_name="panorama.jpg", mime_type="image/jpeg")
    [sent] = images_in(harness.chat_requests()[-1])
    image = Image.open(io.BytesIO(sent))
    assert image.format == "JPEG" and 1024 < image.size[0] <= 2048 and image.size[0] == 4 * image.size[1]


def test_a_text_only_model_names_vision_models_and_sends_nothing(start_bot: Callable[..., Harness],
                                                                 tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(VISION_OFF_MODELS)
    h = start_bot(MODELS_FILE=str(tmp_path / "models.toml"), DEFAULT_MODEL="blind-model")
    [answer] = send(h, "photo", samples.png(), caption="what is this?")
    assert answer.startswith("blind-model can't see images. Models that can: gpt-6.2-astra, gpt-6.2-sol")
    assert "/model" in answer
    assert h.tg.calls_of("getFile") == [] and h.chat_requests() == []
    assert h.session().messages == []


def test_a_model_in_no_table_is_tried_and_its_refusal_explained(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DEFAULT_MODEL="mystery-model")
    h.llm.text_only.add("mystery-model")
    [answer] = send(h, "photo", samples.png(), caption="what is this?")
    assert "mystery-model cannot see images" in answer and "/model" in answer
    assert len(h.chat_requests()) == 1 and h.session().messages == []
    # Learnt: the next picture is refused before any download.
    downloads = len(h.tg.calls_of("download"))
    [again] = send(h, "photo", samples.png(30, 30))
    assert "mystery-model can't see images" in again
    assert len(h.tg.calls_of("download")) == downloads and len(h.chat_requests()) == 1
    assert h.ask("text still works") == "echo: text still works"


def test_pictures_in_the_history_are_left_out_for_a_model_that_refuses_them(
        start_bot: Callable[..., Harness], tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(VISION_OFF_MODELS)  # mystery-model: nobody says if it sees
    h = start_bot(MODELS_FILE=str(tmp_path / "models.toml"))
    send(h, "photo", samples.png(), caption="look")
    h.llm.text_only.add("mystery-model")
    h.ask("/model mystery-model")
    answer = h.ask("what did I show you?")
    assert answer.startswith("echo: what did I show you?") and "pictures earlier" in answer
    assert images_in(h.chat_requests()[-1]) == []
    assert h.ask("and now?") == "echo: and now?"  # learnt: sent without pictures at once
    assert images_in(h.chat_requests()[-1]) == [] and len(h.chat_requests()) == 4


def test_a_photo_in_a_group_mentioning_the_bot(harness: Harness) -> None:
    [answer] = send(harness, "photo", samples.png(), chat_id=GROUP, caption="@test_bot what is it?")
    assert answer == "echo: what is it?"
    assert len(harness.session(ALICE, chat=GROUP).messages[0].images) == 1
    harness.tg.send_media(ALICE, "photo", samples.png(), chat_id=GROUP, caption="not for the bot")
    harness.idle()
    assert len(harness.tg.calls_of("getFile")) == 1


def test_images_no_conversation_references_are_swept(harness: Harness) -> None:
    send(harness, "photo", samples.png(), caption="keep?")
    [ref] = harness.session().messages[0].images
    path = harness.data_dir / "media" / ref[:2] / ref
    app = harness.bot.app
    assert app is not None
    assert app.media.store.collect(app.store.image_refs(), grace=0) == 0 and path.exists()
    harness.ask("/clear")  # a new conversation: the old one, and its picture, are kept for /history
    assert app.media.store.collect(app.store.image_refs(), grace=0) == 0 and path.exists()
    harness.ask("/history clear")
    assert app.media.store.collect(app.store.image_refs(), grace=0) == 1 and not path.exists()


# -- files ------------------------------------------------------------------------------------------


def test_a_markdown_file_reaches_the_model_with_its_name_and_text(harness: Harness) -> None:
    notes = "# Meeting notes\n\n- ship on Friday\n- Привет, команда\n"
    send(harness, "document", notes.encode(), file_name="notes.md", mime_type="text/markdown",
         caption="What did we decide?")
    assert last_user_content(harness) == f'What did we decide?\n\n<file name="notes.md">\n{notes}\n</file>'
    assert harness.session().messages[0].content == last_user_content(harness)


def test_a_pdf_reaches_the_model_with_its_text(harness: Harness) -> None:
    send(harness, "document", samples.pdf("Invoice 2026-117", "Total due: 420 EUR"), file_name="invoice.pdf",
         mime_type="application/pdf")
    content = last_user_content(harness)
    assert content.startswith("Here is a file. Tell me briefly what it is about.")
    assert '<file name="invoice.pdf">\nInvoice 2026-117\nTotal due: 420 EUR\n</file>' in content


def test_unreadable_files_get_one_sentence_each_and_no_request(harness: Harness) -> None:
    cases = [
        ("blob.bin", "application/octet-stream", bytes(range(256)) * 8, "can't read blob.bin", False),
        ("data.txt", "text/plain", bytes(range(256)) * 8, "it is not text", True),
        ("secret.pdf", "application/pdf", samples.encrypted_pdf("x"), "password-protected", True),
        ("scan.pdf", "application/pdf", samples.pdf(), "no text layer", True),
        ("broken.pdf", "application/pdf", b"%PDF-1.4 garbage", "seems damaged", True),
        ("photo.png", "image/png", b"\x89PNG not really", "couldn't open that image", True),
    ]
    for name, mime, data, expected, downloaded in cases:
        before = len(harness.tg.calls_of("download"))
        [answer] = send(harness, "document", data, file_name=name, mime_type=mime)
        assert expected in answer, (name, answer)
        assert len(harness.tg.calls_of("download")) == before + downloaded, name
    assert harness.chat_requests() == [] and harness.session().messages == []


def test_files_over_20_mb_are_refused_before_any_download(harness: Harness) -> None:
    big = bytes(30 * 1024 * 1024)
    [answer] = send(harness, "document", big, file_name="dump.txt", mime_type="text/plain")
    assert "30.0 MB" in answer and "20 MB" in answer
    assert harness.tg.calls_of("getFile") == []
    # No declared size: Telegram's getFile says "file is too big", and nothing is fetched.
    [answer] = send(harness, "document", bytes(MAX_DOWNLOAD + 1), file_name="dump2.txt", file_size=False)
    assert "over the 20 MB" in answer
    assert [c.status for c in harness.tg.calls_of("getFile")] == [400]
    assert harness.tg.calls_of("download") == [] and harness.chat_requests() == []


def test_a_file_too_long_for_the_context_window_gets_the_figures(start_bot: Callable[..., Harness],
                                                                 tmp_path: Path) -> None:
    h = tiny_bot(start_bot, tmp_path)
    text = "word " * 2000
    [answer] = send(h, "document", text.encode(), file_name="long.txt", mime_type="text/plain")
    assert "long.txt is too long for tiny" in answer and "400 tokens" in answer and "50 kept" in answer
    question = "Here is a file. Tell me briefly what it is about."
    tokens = chat.counter(h.bot.registry.get("tiny")).message(
        "user", f'{question}\n\n<file name="long.txt">\n{text}\n</file>')
    assert f"{tokens:,} tokens" in answer
    assert h.chat_requests() == [] and h.session().messages == []


def test_a_huge_pdf_is_refused_without_reading_it_all(start_bot: Callable[..., Harness],
                                                      tmp_path: Path) -> None:
    h = tiny_bot(start_bot, tmp_path)
    book = samples.pdf("lorem ipsum dolor sit amet " * 8, pages=200)
    [answer] = send(h, "document", book, file_name="book.pdf", mime_type="application/pdf")
    assert "book.pdf is too long for tiny" in answer and "over" in answer and "200 pages" in answer
    assert h.chat_requests() == []


# -- access and failures ----------------------------------------------------------------------------


def test_a_refused_user_costs_no_download(harness: Harness) -> None:
    [answer] = send(harness, "voice", samples.ogg_voice(), user=STRANGER, duration=3)
    assert "not allowed" in answer
    send(harness, "photo", samples.png(), user=STRANGER)
    send(harness, "document", b"text", user=STRANGER, file_name="a.txt")
    assert harness.tg.calls_of("getFile") == [] and harness.tg.calls_of("download") == []
    assert harness.llm.transcriptions == [] and harness.chat_requests() == []


def test_a_file_without_an_id_is_said_and_fetches_nothing(harness: Harness) -> None:
    harness.tg.send_message(ALICE, photo=[{"width": 90, "height": 90}], caption="odd")
    assert harness.replies(ALICE, 1) == [
        "Sorry, I couldn't download that file from Telegram. Please send it again."]
    assert harness.tg.calls_of("getFile") == [] and harness.chat_requests() == []


def test_a_failed_download_is_said_and_changes_nothing(harness: Harness) -> None:
    harness.ask("before")
    harness.tg.fail_next("download", 502)
    [answer] = send(harness, "photo", samples.png(), caption="look")
    assert answer == "Sorry, I couldn't download that file from Telegram. Please send it again."
    assert [m.content for m in harness.session().messages] == ["before", "echo: before"]
    assert len(harness.chat_requests()) == 1


def pytest_approx(rgb: tuple[int, int, int]) -> Any:
    import pytest

    return pytest.approx(rgb, abs=12)  # JPEG is lossy


def test_a_transcription_counts_toward_the_quota_and_none_is_made_past_it(
        start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DAILY_TOKEN_LIMIT="200")
    blob = samples.ogg_voice(15_000)  # the fake reports 150 input tokens for it, as gpt-4o-*-transcribe do
    h.llm.transcript = lambda name, data: "hello"
    assert send(h, "voice", blob, mime_type="audio/ogg", duration=4)[0] == "🎙 I heard:\nhello"
    assert h.bot.app is not None and h.bot.app.quotas.today(ALICE).tokens >= 150 + 1
    downloads = len(h.tg.calls_of("getFile"))
    refusal = send(h, "voice", blob, mime_type="audio/ogg", duration=4)
    assert refusal[0].startswith("You have used your daily limit of 200 tokens")
    assert len(h.tg.calls_of("getFile")) == downloads and len(h.llm.transcriptions) == 1


def test_a_photo_answer_cut_by_the_stop_is_explained_like_a_text_one(harness: Harness) -> None:
    harness.llm.script(Reply(chunks=[f"part{i} " for i in range(100)], chunk_delay=0.2))
    harness.tg.send_media(ALICE, "photo", samples.png(), caption="describe this")
    harness.tg.wait_for(lambda: harness.tg.drafts(ALICE), timeout=10)
    harness.bot.shutdown(grace=0.2, cut_grace=5)
    answer, notice = harness.tg.messages(ALICE)
    assert answer.startswith("part0") and answer.endswith("(stopped)")
    assert notice == load_catalog().text("en", "chat.restarting")


def test_past_the_quota_a_pdf_is_not_even_downloaded(start_bot: Callable[..., Harness]) -> None:
    h = start_bot(DAILY_TOKEN_LIMIT="10")
    h.ask("use up the day")
    refusal = send(h, "document", samples.pdf("Quarterly report"), file_name="report.pdf",
                   mime_type="application/pdf")
    assert refusal[0].startswith("You have used your daily limit of 10 tokens")
    assert h.tg.calls_of("getFile") == [] and len(h.chat_requests()) == 1
