"""Real files for the media tests, made on the spot: images with Pillow, PDFs by hand, a voice blob."""

from __future__ import annotations

import io

from PIL import Image


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A PNG with a distinct pixel pattern (a solid block plus a corner marker)."""
    image = Image.new("RGB", (width, height), color)
    image.paste((10, 220, 40), (0, 0, max(1, width // 4), max(1, height // 4)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(width: int, height: int, orientation: int | None = None, quality: int = 90) -> bytes:
    """A JPEG photo-like gradient; `orientation` sets the EXIF Orientation tag (6 = turn 90° clockwise)."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image.paste((250, 250, 0), (0, 0, width // 3, height // 3))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def pdf(*lines: str, pages: int = 1) -> bytes:
    """A PDF of `pages` pages, each with `lines` in its text layer (Helvetica); no lines: no text."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = "".join(f"({escape(line)}) Tj 0 -16 Td " for line in lines)
    content = f"BT /F1 12 Tf 72 720 Td {shown}ET".encode("latin-1") if lines else b""
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
    objects += [page + b"/Resources << /Font << /F1 3 0 R >> >> >>"] * pages
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted_pdf(*lines: str, password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(*lines))))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def ogg_voice(size: int = 12_000) -> bytes:
    """Bytes shaped like an Ogg Opus voice note: the capture pattern, an OpusHead, then noise."""
    head = b"OggS\x00\x02" + b"\x00" * 8 + b"\x01\x00\x00\x00" + b"\x00" * 8 + b"\x01\x13OpusHead\x01\x01"
    body = bytes((i * 37 + 11) % 256 for i in range(max(0, size - len(head))))
    return head + body
