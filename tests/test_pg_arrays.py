"""Array literals built in Python read back by PostgreSQL exactly as the values they came from
(what the ENQUEUE and OUTCOMES statements rely on), whatever the text holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobq.backends import pg_arrays as arrays
from tests.conftest import postgres_or_skip

HOSTILE = [
    "",
    " ",
    "NULL",
    "null",
    '"',
    "\\",
    '\\"',
    "{",
    "}",
    "{1,2}",
    "a,b",
    "tab\there",
    "new\nline",
    "ünïcødé ✓",
    '["a", {"b": "c\\"d"}]',
    "'; DROP TABLE x; --",
]


@pytest.fixture(scope="module")
def conn() -> Any:
    with psycopg.connect(postgres_or_skip(), autocommit=True) as c:
        yield c


def read(conn: Any, literal: str, pg_type: str) -> list[Any]:
    row = conn.execute(f"SELECT %s::{pg_type}", (literal,)).fetchone()
    assert row is not None
    return list(row[0])


def test_text_round_trips_hostile_strings_and_nulls(conn: Any) -> None:
    values = [*HOSTILE, None, *HOSTILE[::-1]]
    assert read(conn, arrays.texts(values), "text[]") == values


def test_integers_times_and_intervals_round_trip(conn: Any) -> None:
    ints = [0, -1, 2**62, None, 7]
    assert read(conn, arrays.ints(ints), "bigint[]") == ints
    plus_five = timezone(timedelta(hours=5, minutes=30))
    times = [
        datetime(2026, 12, 4, 20, 21, 22, 123456, tzinfo=UTC),
        None,
        datetime(1999, 1, 1, 0, 0, tzinfo=plus_five),
    ]
    back = read(conn, arrays.times(times), "timestamptz[]")
    assert back[1] is None
    assert [t for t in back if t is not None] == [t for t in times if t is not None]
    deltas = [timedelta(0), timedelta(days=3, microseconds=7), None, timedelta(seconds=0.25)]
    assert read(conn, arrays.intervals(deltas), "interval[]") == deltas


def test_an_empty_list_is_an_empty_array(conn: Any) -> None:
    assert read(conn, arrays.texts([]), "text[]") == []
    assert read(conn, arrays.ints([]), "bigint[]") == []


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT)))
def test_any_text_round_trips(values: list[str | None]) -> None:
    with psycopg.connect(postgres_or_skip(), autocommit=True) as c:
        assert read(c, arrays.texts(values), "text[]") == values


def test_compact_sql_drops_comments_and_spaces_but_not_string_literals() -> None:
    from jobq.backends.postgres import compact_sql

    text = """
        SELECT 'a  --  b', 'it''s   here' -- a comment, 'not a literal'
        FROM   t   -- another
        WHERE x = '--'
    """
    assert compact_sql(text) == "SELECT 'a  --  b', 'it''s   here' FROM t WHERE x = '--'"


def test_every_statement_still_runs_after_compaction(conn: Any) -> None:
    from jobq.backends import postgres_sql as q
    from jobq.backends.postgres import compact_sql

    for name, text in vars(q).items():
        if name.isupper() and isinstance(text, str) and "SELECT" in text.upper():
            compact = compact_sql(text)
            assert "--" not in compact.replace("'--'", ""), name
            assert compact.count("%(") == text.count("%("), name
