"""The stored form of per-attempt errors, shared by the database backends.

Each error is a JSON object ``{"attempt", "at" (microseconds since the epoch), "type",
"message", "traceback"}``; a job's errors are a JSON array of them, oldest first.
"""

from __future__ import annotations

import json
from typing import Any

from jobq.clock import from_us, to_us
from jobq.job import AttemptError


def to_json(err: AttemptError) -> str:
    return json.dumps(
        {
            "attempt": err.attempt,
            "at": to_us(err.at),
            "type": err.type,
            "message": err.message,
            "traceback": err.traceback,
        }
    )


def from_items(items: Any) -> tuple[AttemptError, ...]:
    """Decode a stored array; a corrupt one becomes a single explanatory error, never a crash."""
    if not items:
        return ()
    try:
        return tuple(
            AttemptError(
                attempt=e["attempt"],
                at=from_us(e["at"]),
                type=e["type"],
                message=e["message"],
                traceback=e.get("traceback"),
            )
            for e in items
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return (AttemptError(0, from_us(0), "CorruptErrors", f"unreadable errors: {items!r:.80}"),)


def from_text(text: str) -> tuple[AttemptError, ...]:
    if text == "[]":
        return ()
    try:
        return from_items(json.loads(text))
    except ValueError:
        return (AttemptError(0, from_us(0), "CorruptErrors", f"unreadable errors: {text[:80]!r}"),)
