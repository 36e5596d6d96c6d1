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
