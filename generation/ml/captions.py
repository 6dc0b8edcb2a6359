"""Reading a caption file's bytes as text: pure Python, no torch, no Django.

One function for both doors a caption file comes in by: the ML CLIs' folders (train_lora's --data,
evaluate_style's --works) and the bulk import (licensing's import_works).
"""

from __future__ import annotations

import codecs

UTF16_BYTE_ORDER_MARKS = ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


class CaptionNotText(ValueError):
    """Caption bytes that are not text in an encoding we read; the message names the first bad byte and its offset
    and reads after the file's name ("a.txt is not UTF-8 text (…)")."""


def decode_caption(data: bytes) -> str:
    """The text of a caption file: UTF-8 with or without a byte-order mark (editors on Windows write one), or UTF-16
    with one (what Windows Notepad saves as "Unicode"); the mark is not part of the caption. A NUL is refused: it is
    what UTF-16 without a mark (or UTF-32) looks like when read as UTF-8, and a caption holding it would be trained
    on mangled, or refused by PostgreSQL."""
    for mark, encoding in UTF16_BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                text = data[len(mark):].decode(encoding)
            except UnicodeDecodeError as exc:  # an odd byte at the end, or half a surrogate pair
                offset = len(mark) + exc.start
                raise CaptionNotText(f"is not UTF-16 text (byte 0x{data[offset]:02x} at offset {offset})") from None
            return _without_nul(text, data, encoding, len(mark), "UTF-16")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        raise CaptionNotText(f"is not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset})") from None
    mark = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    return _without_nul(text, data, "utf-8", mark, "UTF-8")


def _without_nul(text: str, data: bytes, encoding: str, mark: int, name: str) -> str:
    position = text.find("\x00")
    if position < 0:
        return text
    offset = mark + len(text[:position].encode(encoding))
    raise CaptionNotText(f"is not {name} text (byte 0x00 at offset {offset}; a NUL, as in UTF-16 or UTF-32 "
                         f"without a byte-order mark)")
