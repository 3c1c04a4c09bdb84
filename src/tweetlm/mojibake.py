"""Mojibake that ftfy cannot repair alone: UTF-8 read as Windows-1252, then once more through Mac Roman.

The FiveThirtyEight tweet collections carry UTF-8 text that was decoded as Windows-1252 and written
out as Mac Roman, and tweetlm then reads the file as Mac Roman: "’" (E2 80 99) arrives as "‰Ûª".
Two things on that way defeat a plain reversal:

- a byte that Windows-1252 leaves undefined (81 8D 8F 90 9D) passes through a layer unchanged, so it
  must be read back as its own byte, not re-encoded ("‰Ûù" is E2 80 9D, "”");
- a Windows-1252 character that Mac Roman lacks (Š Ž š ž ¤ ¦ soft hyphen ² ³ ¹ ¼ ½ ¾) was written as
  "_", so "‰Û_" may stand for any of 13 bytes.

Instead of a table of known sequences, each character gets the set of bytes it may stand for under
one layer ("â€ù") or two ("‰Ûù"); every combination that forms one valid UTF-8 character is a
reading. One reading: the sequence is repaired. Several: it is left alone and reported by
`undecided`, with one exception, the ellipsis: of the 13 characters a lost byte after "â€" can be,
it is the only one common in posts (the others are hair space, LRM/LRO marks, low quotes, a one-dot
leader, primes, an angle quote, ‼, ‽ and an overline), and truncated link titles end in it.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache

import ftfy.bad_codecs  # noqa: F401  (registers the sloppy codecs)

UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")  # bytes Windows-1252 leaves undefined: they pass through
LOST_MARK = "_"
PREFERRED = "…"
CONTINUATION = range(0x80, 0xC0)


def _decode(byte: int, codec: str) -> str:
    return bytes([byte]).decode(codec)


def _one_layer_table() -> dict[str, frozenset[int]]:
    """The bytes each character may stand for when UTF-8 was read once as Windows-1252."""
    table: dict[str, set[int]] = {}
    for byte in range(0x80, 0x100):
        table.setdefault(_decode(byte, "sloppy-windows-1252"), set()).add(byte)
        if byte in UNDEFINED:
            table.setdefault(_decode(byte, "mac_roman"), set()).add(byte)
    lost = {b for b in CONTINUATION if _cp1252_lost(b)}
    table[LOST_MARK] = lost
    return {c: frozenset(b) for c, b in table.items()}


def _cp1252_lost(byte: int) -> bool:
    char = _decode(byte, "sloppy-windows-1252")
    try:
        char.encode("mac_roman")
    except UnicodeEncodeError:
        return byte not in UNDEFINED
    return False


ONE_LAYER = _one_layer_table()


def _two_layer_table() -> dict[str, frozenset[int]]:
    """The bytes each character may stand for under one more layer: Windows-1252 text written as Mac Roman."""
    table: dict[str, set[int]] = {LOST_MARK: set(ONE_LAYER[LOST_MARK])}
    for byte in range(0x80, 0x100):
        inner = _decode(byte, "mac_roman")  # the character of the inner layer that `byte` wrote
        outer = [_decode(byte, "sloppy-windows-1252")]  # how that byte reads one layer further out
        if byte in UNDEFINED:
            outer.append(inner)  # passed through
        for char in outer:
            table.setdefault(char, set()).update(ONE_LAYER.get(inner, ()))
    return {c: frozenset(b) for c, b in table.items()}


TWO_LAYERS = _two_layer_table()


def _length(lead: int) -> int:
    return 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0


@lru_cache(maxsize=4096)
def readings(chunk: str, layers: int) -> frozenset[str]:
    """Every character the UTF-8 bytes behind `chunk` can be, under one or two layers of mojibake."""
    table = TWO_LAYERS if layers == 2 else ONE_LAYER
    options = [table.get(c, frozenset()) for c in chunk]
    found = set()
    for lead in options[0]:
        if _length(lead) != len(chunk):
            continue
        tails = [[b for b in opts if b in CONTINUATION] for opts in options[1:]]
        for tail in itertools.product(*tails):
            try:
                found.add(bytes([lead, *tail]).decode("utf-8"))
            except UnicodeDecodeError:
                continue
    return frozenset(found)


def _candidate(chunk: str) -> bool:
    """Non-ASCII, except that "_" may stand for a lost byte after the lead."""
    return chunk[0] != LOST_MARK and not any(c.isascii() and c != LOST_MARK for c in chunk)


NON_ASCII = re.compile(r"[^\x00-\x7f]")
PASSED = frozenset(_decode(b, "mac_roman") for b in UNDEFINED)  # Å ç è ê ù: bytes that passed through


def _scan(text: str) -> tuple[str, int]:
    """`text` with every decidable sequence repaired, and how many undecidable ones it holds.

    Left to right, so a sequence is read from its lead: "â€ù" as one layer, never "€ù" as two. A
    chunk that reads differently under one layer and under two is undecidable. One that only one layer
    explains, without a lost or passed-through byte, is left to ftfy, which fixes it with more care.
    """
    out: list[str] = []
    undecided = 0
    i = 0
    while i < len(text):
        if text[i].isascii():  # no sequence starts here: on to the next non-ASCII character
            later = NON_ASCII.search(text, i)
            end = later.start() if later else len(text)
            out.append(text[i:end])
            i = end
            continue
        for size in (4, 3, 2):
            chunk = text[i : i + size]
            if len(chunk) < size or not _candidate(chunk):
                continue
            one, two = readings(chunk, 1), readings(chunk, 2)
            found = one | two
            if not found:
                continue
            if len(found) == 1 or PREFERRED in found:
                plain = not two and not any(c == LOST_MARK or c in PASSED for c in chunk)
                out.append(chunk if plain else next(iter(found)) if len(found) == 1 else PREFERRED)
                i += size
                break
            undecided += size > 2  # a two-byte reading of "é_" is as likely a name as mojibake
            out.append(text[i])
            i += 1
            break
        else:
            out.append(text[i])
            i += 1
    return "".join(out), undecided


def repair(text: str) -> str:
    """Repair the two-layer sequences, then the one-layer ones with a lost or passed-through byte, then
    whatever ftfy's usual fixes find."""
    # Full-width punctuation stays: "，" and "！" are how Chinese and Japanese are written.
    return ftfy.fix_text(_scan(text)[0], unescape_html=True, fix_character_width=False)


def undecided(text: str) -> int:
    """How many sequences of `text` (as published: repair may hide them) read as mojibake of more than one
    character of three or four bytes."""
    return _scan(text)[1]
