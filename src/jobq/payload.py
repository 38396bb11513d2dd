"""JSON encoding of job arguments and results.

A payload is accepted only if it round-trips *exactly*: decoding what is stored gives back an
equal value of the same types. So tuples, sets, bytes, datetimes, non-string dict keys, NaN and
infinities, NUL characters and lone surrogates are refused at enqueue rather than silently
changed (or refused later by a database such as PostgreSQL's ``jsonb``).
"""

from __future__ import annotations

import json
from typing import Any

from jobq.exceptions import PayloadError

#: Deepest nesting of lists/dicts accepted in a payload.
MAX_DEPTH = 100
#: Default limit on the encoded size of one job's arguments, in bytes.
DEFAULT_MAX_BYTES = 1024 * 1024

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _check_str(s: str, path: str) -> None:
    if "\x00" in s:
        raise PayloadError(f"{path} contains a NUL character, which cannot be stored; remove it")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{path} contains a lone surrogate ({s[exc.start : exc.end]!r}) that is not valid "
            "Unicode text; encode binary data as base64 text"
        ) from None


def check_json(value: object, what: str) -> None:
    """Raise :class:`PayloadError` unless ``value`` is JSON that round-trips exactly."""
    stack: list[tuple[object, str, int]] = [(value, what, 0)]
    while stack:
        v, path, depth = stack.pop()
        if v is None or isinstance(v, bool | int):
            continue
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise PayloadError(
                    f"{path} is {v!r}, which JSON cannot represent; use null or a string"
                )
            continue
        if isinstance(v, str):
            _check_str(v, path)
            continue
        if depth >= MAX_DEPTH:
            raise PayloadError(f"{what} is nested more than {MAX_DEPTH} levels deep")
        if type(v) is list:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(v))
        elif type(v) is dict:
            for k, item in v.items():
                if not isinstance(k, str):
                    raise PayloadError(
                        f"{path} has the key {k!r} of type {type(k).__name__}; JSON object keys "
                        "must be strings (it would come back as a string)"
                    )
                _check_str(k, f"{path} key")
                stack.append((item, f"{path}[{k!r}]", depth + 1))
        elif isinstance(v, tuple):
            raise PayloadError(
                f"{path} is a tuple {v!r}; it would come back as a list: pass a list instead"
            )
        else:
            raise PayloadError(
                f"{path} is {v!r} of type {type(v).__name__}, which is not JSON; pass str, int, "
                "float, bool, None, list or dict (e.g. an ISO string for a datetime, an id for "
                "an object)"
            )


#: Values a flat list or dict may hold for :func:`_encode_flat` (exact types: no subclasses).
_FLAT = frozenset({str, int, bool, float, type(None)})


def _encode_flat(value: object) -> str | None:
    """The JSON of a flat list, or dict with str keys, of plain scalars that round-trips exactly
    (the common payload), walked once in Python instead of twice; None: take the full check."""
    if type(value) is list:
        items: Any = value
    elif type(value) is dict:
        for k in value:
            if type(k) is not str:
                return None
        items = value.values()
    else:
        return None
    for v in items:
        if type(v) not in _FLAT:
            return None
    try:
        text = _ENCODER.encode(value)  # allow_nan=False: NaN and infinities raise
    except ValueError:
        return None
    if "\\u0000" in text:  # a NUL (or text that merely looks like one: checked in full)
        return None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return None
    return text


def encode(value: object, what: str, max_bytes: int | None = None) -> str:
    """Validate and encode ``value``; raise :class:`PayloadError` naming ``what`` if refused."""
    text = _encode_flat(value)
    if text is None:
        check_json(value, what)
        try:
            text = _ENCODER.encode(value)
        except ValueError as exc:  # e.g. an int longer than sys.get_int_max_str_digits() digits
            raise PayloadError(
                f"{what} cannot be written as JSON ({exc}); pass very long integers as strings"
            ) from None
    if max_bytes is not None and len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        raise PayloadError(
            f"{what} is {len(text.encode()):,} bytes of JSON, over the limit of {max_bytes:,}; "
            "store large data elsewhere and pass a reference, or raise App(max_payload_bytes=...)"
        )
    return text


def encode_args(
    args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], max_bytes: int | None
) -> tuple[str, str]:
    """Encode positional and keyword arguments; the total size counts against ``max_bytes``."""
    if not isinstance(args, list | tuple):
        raise PayloadError(f"args must be a list or tuple, got {args!r}")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"kwargs must be a dict, got {kwargs!r}")
    a = encode(args if type(args) is list else list(args), "args", max_bytes)
    k = encode(kwargs, "kwargs", max_bytes) if kwargs else "{}"
    if max_bytes is not None and len(a) + len(k) > max_bytes // 4:
        size = len(a.encode()) + len(k.encode())
        if size > max_bytes:
            raise PayloadError(
                f"args and kwargs are {size:,} bytes of JSON, over the limit of {max_bytes:,}; "
                "store large data elsewhere and pass a reference, or raise "
                "App(max_payload_bytes=...)"
            )
    return a, k


def _not_json(name: str) -> Any:
    """``json.loads`` accepts NaN and +-Infinity; JSON (and :func:`encode`) does not."""
    raise ValueError(f"{name} is not JSON")


#: One decoder for every stored value (``json.loads`` with an option makes a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_not_json)


def decode(text: str, what: str) -> Any:
    """Decode stored JSON; raise :class:`PayloadError` if it is not valid JSON."""
    if text == "{}":  # no kwargs: the common case, without a parse
        return {}
    try:
        return _DECODER.decode(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise PayloadError(f"stored {what} is not valid JSON ({exc}): {text[:80]!r}") from None
