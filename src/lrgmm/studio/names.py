"""How the studio names things to clients: new ids, clients' values quoted in messages (at most a
short prefix, so that a huge bad value is not echoed back whole), byte counts."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh id for a model, upload, fit job or grid: ``prefix`` and 12 random hex digits."""
    return f"{prefix}{secrets.token_hex(6)}"


def quote(value, limit: int = 48) -> str:
    """``repr`` of a client's value for an error message, cut to its first ``limit`` characters
    (with the full length) so that a huge bad value is never echoed back whole."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(value) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def size_text(n: int) -> str:
    """A byte count for people: ``8.6 MiB (9,000,000 bytes)``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"
