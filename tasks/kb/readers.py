"""Turn one file's bytes into text, with the library made for each format; failures become reasons, not raises."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from charset_normalizer import from_bytes

from tasks.core.jsonl import parse_lines

log = logging.getLogger("ragtune")

# Formats we decode ourselves; anything else is skipped by ingest.
FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
}


@dataclass(frozen=True)
class Decoded:
    """Text of one document (or one JSONL record) or the reason it has none."""

    key: str | None  # record id inside a container file (JSONL); None for whole files
    text: str | None
    status: str  # "ok" | "undecodable"
    reason: str = ""
    encoding: str = ""


def decode_text(data: bytes) -> tuple[str | None, str, str]:
    """Bytes -> (text, encoding, reason). UTF-8 first, then charset detection; binary is refused."""
    if b"\x00" in data[:8192]:
        return None, "", "binary content (NUL bytes) in a text file"
    try:
        return data.decode("utf-8-sig"), "utf-8", ""
    except UnicodeDecodeError as exc:
        utf8_error = f"invalid UTF-8 at byte {exc.start}"
    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        return None, "", f"{utf8_error}; no other text encoding fits"
    return str(best), best.encoding, ""


def read_pdf(data: bytes) -> tuple[str | None, str]:
    """PDF text layer via pypdf; a PDF of scanned images has no text and says so."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        return None, f"unreadable PDF ({exc})"
    text = "\n\n".join(p for p in pages if p)
    return text, ("" if text else "PDF has no text layer (scanned images?)")


def decode_jsonl_documents(text: str, text_field: str, id_field: str) -> list[Decoded]:
    """One Decoded per line; a line that is not a JSON object or lacks the text field is recorded, not fatal."""
    out: list[Decoded] = []
    for lineno, row in parse_lines(text.splitlines()):
        if isinstance(row, ValueError):
            msg = getattr(row, "msg", str(row))
            out.append(Decoded(f"L{lineno}", None, "undecodable", f"line {lineno} is not JSON ({msg})"))
            continue
        if not isinstance(row, dict):
            out.append(Decoded(f"L{lineno}", None, "undecodable", f"line {lineno} is not a JSON object"))
            continue
        key = str(row[id_field]) if row.get(id_field) not in (None, "") else f"L{lineno}"
        value = row.get(text_field)
        if value is None:
            out.append(Decoded(key, None, "undecodable", f"line {lineno} has no '{text_field}' field"))
        elif not isinstance(value, str):
            out.append(Decoded(key, None, "undecodable", f"line {lineno}: '{text_field}' is not a string"))
        else:
            out.append(Decoded(key, value, "ok"))
    return out


def read_file(data: bytes, fmt: str, text_field: str = "text", id_field: str = "id") -> list[Decoded]:
    """Decode a file's bytes by format. HTML stays markup here; clean extracts its main content."""
    if fmt == "pdf":
        text, reason = read_pdf(data)
        return [Decoded(None, text, "ok" if text is not None else "undecodable", reason)]
    text, encoding, reason = decode_text(data)
    if text is None:
        return [Decoded(None, None, "undecodable", reason)]
    if fmt == "jsonl":
        return [
            Decoded(d.key, d.text, d.status, d.reason, encoding)
            for d in decode_jsonl_documents(text, text_field, id_field)
        ]
    return [Decoded(None, text, "ok", "", encoding)]
