"""Text for the terminal: every message printable whatever the terminal's encoding.

File names on Linux are bytes; Python shows the bytes that are not valid UTF-8 as lone
surrogates (``surrogateescape``), which a strict UTF-8 (or ASCII, Latin-1) stream refuses to
print. :func:`printable` turns those into ``\\xNN`` escapes, so a message naming such a file
prints anywhere and can be stored in JSON; :func:`safe_streams` makes ``stdout``/``stderr``
escape whatever else their encoding cannot show instead of raising.
"""

from __future__ import annotations

import sys


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (lone surrogates) as ``\\xNN`` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else None
        if raw is not None:
            return raw.decode("utf-8", "backslashreplace")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# Characters that would break a message's one line (or move the cursor): C0 controls, DEL, C1
# controls (NEL among them) and the Unicode line and paragraph separators.
_BREAKS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_BREAKS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def one_line(text: str) -> str:
    """:func:`printable`, and every character that would break the line (newline, carriage
    return, tab, other controls, line separators) escaped as Python's ``repr`` writes it: for a
    file name inside a one-line message."""
    return printable(text).translate(_BREAKS)


def _only_escapes(text: str) -> bool:
    """Every lone surrogate is one ``surrogateescape`` made (``U+DC80..U+DCFF``)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def safe_streams() -> None:
    """Make ``sys.stdout``/``sys.stderr`` write ``\\`` escapes for what they cannot encode."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
