"""Encoding error handlers for text that UTF-8 cannot encode.

UTF-8 cannot encode a lone surrogate, and Python makes one of every byte of
a file name, argument or environment value that is not UTF-8 (PEP 383's
``surrogateescape``): an error message naming such a file carries one. A
strict encoding raised, and the checkpoint writer lost the rest of the run.
These handlers write such a character as its escape instead (``\\xff`` for
the byte 0xff, ``\\ud800`` for any other surrogate), so the text stays valid
UTF-8 and still says which byte it was. Registered on import; pure.
"""

from __future__ import annotations

import codecs

__all__ = ["LINE_ERRORS", "TEXT_ERRORS"]

TEXT_ERRORS = "asyncflow.escape"
"""For plain text (OTLP strings): ``\\xff`` as four characters."""

LINE_ERRORS = "asyncflow.escape-in-json"
"""For a JSON line's text: the escape's backslash escaped too. Such a
character can only stand inside a JSON string (the encoder writes every
other character as ASCII), so the string reads back as ``\\xff``."""


def _escapes(exc: UnicodeError, backslash: str) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for char in exc.object[exc.start : exc.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape kept
            out.append(f"{backslash}x{code - 0xDC00:02x}")
        else:
            out.append(f"{backslash}u{code:04x}")
    return "".join(out), exc.end


codecs.register_error(TEXT_ERRORS, lambda exc: _escapes(exc, "\\"))
codecs.register_error(LINE_ERRORS, lambda exc: _escapes(exc, "\\\\"))
