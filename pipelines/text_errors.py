"""Cheap second passes over a text file that explain why it could not be read.

The readers parse whole files with Polars; when that fails (or flags a row) these helpers
find the precise place for the message: the text of one line, or the first byte that is not
UTF-8. They stream the file in binary chunks, so they cost one read of the file at most and
never run on the happy path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from recsys.errors import DataFormatError

CHUNK = 1 << 20


class NotUtf8Error(DataFormatError):
    """A text file that is not valid UTF-8 (the message names the first bad line)."""


def line_text(path: Path, line: int) -> str:
    """Line number `line` (1-based) of `path`, decoded leniently, without its line break."""
    with path.open("rb") as f:
        raw = next(itertools.islice(f, line - 1, line), b"")
    return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")


def find_invalid_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, byte column, byte value) of the first byte that is not valid UTF-8, or None."""
    line = 1
    carry = b""
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK)
            data = carry + chunk
            if not data:
                return None
            try:
                data.decode("utf-8")
                carry = b""
                line += data.count(b"\n")
            except UnicodeDecodeError as e:
                truncated = e.reason == "unexpected end of data" and chunk
                if truncated and e.start >= len(data) - 3:
                    # A multi-byte character split by the chunk boundary: finish it next round.
                    line += data[: e.start].count(b"\n")
                    carry = data[e.start :]
                    continue
                before = data[: e.start]
                column = e.start - (before.rfind(b"\n") + 1) + 1
                return line + before.count(b"\n"), column, data[e.start]
            if not chunk:
                return None


def encoding_error(path: Path) -> NotUtf8Error:
    """The error for a file that is not UTF-8, naming the first bad line and byte."""
    found = find_invalid_utf8(path)
    if found is None:
        return NotUtf8Error(f"{path}: could not be decoded as UTF-8 (expected UTF-8 text)")
    line, column, byte = found
    return NotUtf8Error(
        f"{path}: line {line}, byte {column}: 0x{byte:02x} is not valid UTF-8; expected UTF-8 "
        "text (re-encode the file, e.g. `iconv -f latin1 -t utf-8`, or pass --skip-bad-rows)"
    )


def utf8_lines(path: Path) -> Iterator[str]:
    """The lines of a small file as text; a decoding error names the line."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError as e:
                raise NotUtf8Error(
                    f"{path}: line {number}, byte {e.start + 1}: not valid UTF-8; "
                    "expected UTF-8 text"
                ) from e


def is_utf8_failure(error: Exception) -> bool:
    """Whether a Polars read error was caused by invalid UTF-8."""
    text = str(error).lower()
    return "utf-8" in text or "utf8" in text
