"""A minimal valid one-page PDF with a line of text, written by hand (pypdf reads but does not "
"lay out text)."""

from __future__ import annotations

import zlib


def minimal_pdf(text: str, *, stream: bytes | None = None, filters: bytes = b"") -> bytes:
    """One page showing `text`; or, given `stream`, that page content as it is (encoded by `filters`,
    e.g. b"/Filter /FlateDecode")."""
    stream = stream if stream is not None else f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d %s >>\nstream\n" % (len(stream), filters) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def compression_bomb_pdf(expanded_bytes: int) -> bytes:
    """A PDF of about expanded_bytes / 1000 whose page content inflates to `expanded_bytes` of
    spaces. Built in milliseconds: after a full flush deflate keeps no history, so one compressed
    megabyte of spaces repeats byte for byte (the stream ends there, unterminated, as a bomb may)."""
    block = b" " * 2**20
    deflate = zlib.compressobj(9)
    first = deflate.compress(b"BT /F1 12 Tf 72 720 Td (boom) Tj ET\n" + block) + deflate.flush(
        zlib.Z_FULL_FLUSH
    )
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream = first + again * (expanded_bytes // len(block) - 1)
    return minimal_pdf("", stream=stream, filters=b"/Filter /FlateDecode")
