"""Secret task arguments: stored as given (the task needs them), shown as ``***`` everywhere
else — logs, errors, the CLI and the dashboard.

A task marks arguments secret with ``@app.task(secret=["password"])`` (keyword names, or
positional indexes as ints); each job records the names in ``JobRecord.secret``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from jobq.exceptions import PayloadError
from jobq.job import JobRecord

REDACTED = "***"


def normalize(secret: Iterable[str | int]) -> tuple[str, ...]:
    """``["password", 0]`` -> ``("0", "password")``; refuses anything else."""
    out: set[str] = set()
    for item in secret:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise TypeError(f"secret names kwargs (str) or positional indexes (int), got {item!r}")
        if isinstance(item, int) and item < 0:
            raise ValueError(f"secret positional index must be >= 0, got {item}")
        if isinstance(item, str) and not item:
            raise ValueError("secret names must be non-empty strings")
        out.add(str(item))
    return tuple(sorted(out))


def redact(
    args: list[Any], kwargs: dict[str, Any], secret: Iterable[str]
) -> tuple[list[Any], dict[str, Any]]:
    """Copies of ``args``/``kwargs`` with the secret ones replaced by ``***``."""
    names = set(secret)
    if not names:
        return list(args), dict(kwargs)
    return (
        [REDACTED if str(i) in names else a for i, a in enumerate(args)],
        {k: (REDACTED if k in names else v) for k, v in kwargs.items()},
    )


def redact_args(record: JobRecord) -> tuple[list[Any], dict[str, Any]]:
    """A job's args and kwargs as they may be shown: secrets replaced by ``***``.

    A row whose payload cannot be decoded is shown as its raw text (never raises).
    """
    try:
        args: list[Any] = record.args
    except PayloadError:
        args = [f"<undecodable args: {record.args_json[:200]!r}>"]
    try:
        kwargs: dict[str, Any] = record.kwargs
    except PayloadError:
        kwargs = {"<undecodable>": record.kwargs_json[:200]}
    return redact(args, kwargs, record.secret)


def secret_values(record: JobRecord) -> list[str]:
    """The text forms of a job's secret argument values (for scrubbing messages)."""
    if not record.secret:
        return []
    try:
        args, kwargs = record.args, record.kwargs
    except PayloadError:
        return []
    names = set(record.secret)
    values = [a for i, a in enumerate(args) if str(i) in names]
    values += [v for k, v in kwargs.items() if k in names]
    out: set[str] = set()
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if len(text) >= 4:  # shorter ones would blank out ordinary words and digits
            out.update({text, repr(text)})
    return sorted(out, key=len, reverse=True)


def scrub(text: str | None, record: JobRecord) -> str | None:
    """``text`` (an error message, a traceback, a log line) with the job's secret values
    replaced by ``***``."""
    if not text:
        return text
    for value in secret_values(record):
        text = text.replace(value, REDACTED)
    return text
