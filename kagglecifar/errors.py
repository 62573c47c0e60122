"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the excerpt every error
uses when it quotes what the user gave (a value may be a megabyte of YAML or a line of binary bytes)."""

from __future__ import annotations

EXCERPT_CHARS = 80


class KaggleCifarError(Exception):
    """A problem the user can fix; the message names the file or option and what is wrong."""


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of repr-like text for `value`, on one line: 'abc', 12.5, [1, 2, ...] (301 chars).

    Strings are quoted; containers are summarised by type and size without walking them (a YAML alias bomb
    expands to billions of items when printed)."""
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value[: limit + 1]))
    elif isinstance(value, str):
        text = repr(value[: limit * 4 + 1])
    else:
        text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({len(value) if isinstance(value, (str, bytes, bytearray)) else len(text)} chars)"


class TrainingDiverged(KaggleCifarError):
    """Training stopped because the loss was no longer finite; the message is the one line the user sees."""
