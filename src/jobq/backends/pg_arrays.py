"""PostgreSQL array literals (``'{1,2,NULL}'``) built in Python for the statements that
``unnest`` one array per column.

psycopg adapts a Python list element by element (about a microsecond each); a batch of 24
outcomes is 168 elements, a bulk enqueue of 100,000 jobs 1.8 million. Joined into one literal,
each array is a single text parameter, cast by the statement (``%(ids)s::bigint[]``) and
parsed by the server in C. Every element is quoted and escaped (``"`` and ``\\``), so any
text round-trips; ``None`` is an unquoted ``NULL``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta


def _quoted(text: str) -> str:
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def texts(values: Iterable[str | None]) -> str:
    """A ``text[]`` literal."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def ints(values: Iterable[int | None]) -> str:
    """A ``bigint[]``/``int[]`` literal."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def times(values: Iterable[datetime | None]) -> str:
    """A ``timestamptz[]`` literal (tz-aware datetimes, ISO 8601 with their offset)."""
    return "{" + ",".join("NULL" if v is None else _quoted(v.isoformat()) for v in values) + "}"


def intervals(values: Iterable[timedelta | None]) -> str:
    """An ``interval[]`` literal, exact to the microsecond."""
    return (
        "{"
        + ",".join(
            "NULL"
            if v is None
            else f'"{(v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds} microseconds"'
            for v in values
        )
        + "}"
    )
