"""The values of command-line arguments: argparse ``type=`` checkers, ``--queues`` and the JSON
of ``--args``/``--kwargs``. Each bad value becomes a usage error that says what to write."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from jobq.cli.errors import UsageError


def job_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid job id {text!r}: job ids are positive integers, e.g. 42"
        )
    return value


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: use a number >= 0, e.g. 30 or 0.5"
        )
    return value


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: use an integer >= 1")
    return value


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def log_level_arg(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(
            f"invalid log level {text!r}: use debug, info, warning, error or critical"
        )
    return level


def parse_queues(text: str) -> tuple[list[str], dict[str, int] | None]:
    """``"high:3,low"`` → ``(["high", "low"], {"high": 3, "low": 1})``.

    A queue without ``:N`` has weight 1; if no queue has a weight, the weights are ``None``.
    Queue names may themselves contain ``:``; only a trailing ``:<integer>`` is a weight.
    """
    queues: list[str] = []
    weights: dict[str, int] = {}
    weighted = False
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise UsageError(
                f"--queues {text!r} has an empty entry; write e.g. --queues high:3,low:1"
            )
        name, weight = item, 1
        head, sep, tail = item.rpartition(":")
        if sep and head and re.fullmatch(r"[+-]?\d+", tail):
            name, weight = head, int(tail)
            weighted = True
            if weight < 1:
                raise UsageError(
                    f"--queues: weight {tail} for queue {name!r} must be an integer >= 1, "
                    "e.g. --queues high:3,low:1"
                )
        if name in weights:
            raise UsageError(f"--queues: queue {name!r} is listed more than once in {text!r}")
        queues.append(name)
        weights[name] = weight
    return queues, (weights if weighted else None)


def json_arg(text: str, flag: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """``text``, the value of ``flag``, parsed as a JSON array or object (``kind``)."""
    example = "'[1, \"a\"]'" if kind is list else '\'{"to": "a@example.com"}\''
    what = "array" if kind is list else "object"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{flag} {_short(text)!r} is not valid JSON ({exc.msg} at position {exc.pos}); "
            f"pass a JSON {what}, e.g. {flag} {example}"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{flag} {_short(text)!r} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise UsageError(f"{flag} {_short(text)!r} must be a JSON {what}, e.g. {flag} {example}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; use null or a string")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def threads_arg(text: str) -> tuple[int | None, int]:
    """``N`` (a fixed pool) or ``MIN:MAX`` (autoscaling): returns (min or None, max)."""
    low, sep, high = text.partition(":")
    try:
        lo, hi = (int(low), int(high)) if sep else (None, int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid thread count {text!r}: give N, or MIN:MAX to autoscale (e.g. 2:16)"
        ) from None
    if hi < 1 or (lo is not None and not 1 <= lo <= hi):
        raise argparse.ArgumentTypeError(
            f"invalid thread count {text!r}: need 1 <= MIN <= MAX (e.g. 2:16)"
        )
    return lo, hi
