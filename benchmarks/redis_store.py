"""The Redis server the Redis-backed peers run on: one database index of our own, emptied.

Every workload of a Redis-backed peer starts and ends with ``FLUSHDB`` on the benchmark's own
database index (``--redis-url``, default ``redis://127.0.0.1:6379/15``); the rest of the server
is never touched. The runner talks to Redis with a few lines of RESP over a socket, so jobq's
environment needs no Redis client.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import Store

#: Read from the server (``INFO`` / ``CONFIG GET``) and shown under the Redis table.
PERSISTENCE_SETTINGS = ("appendonly", "appendfsync", "save")


class RedisError(RuntimeError):
    pass


def _encode(*args: str | int) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(stream: Any) -> Any:
    line: bytes = stream.readline()
    if not line:
        raise RedisError("connection closed by the server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(stream) for _ in range(count)]
    raise RedisError(f"unexpected reply {line!r}")


def command(url: str, *args: str | int) -> Any:
    """Run one command on ``url``'s server and database; returns the decoded reply."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    db = int(parts.path.strip("/") or 0)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 10) as s:
        stream = s.makefile("rb")
        if parts.password:
            auth = (parts.username, parts.password) if parts.username else (parts.password,)
            s.sendall(_encode("AUTH", *auth))
            _reply(stream)
        s.sendall(_encode("SELECT", db) + _encode(*args))
        _reply(stream)
        return _reply(stream)


def database_index(url: str) -> int:
    return int(urlsplit(url).path.strip("/") or 0)


def server_settings(url: str) -> dict[str, str]:
    """The server's version and its persistence settings, as it reports them."""
    info = str(command(url, "INFO", "server"))
    version = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if "redis_version" in line),
        "?",
    )
    settings = {"redis_version": version}
    for name in PERSISTENCE_SETTINGS:
        reply = command(url, "CONFIG", "GET", name)
        settings[name] = str(reply[1]) if reply and len(reply) > 1 else "?"
    return settings


def keeps_nothing_on_disk(settings: dict[str, str]) -> bool:
    """No append-only file and no RDB snapshots: a restart loses every queued job."""
    return settings.get("appendonly") == "no" and settings.get("save", "").strip() == ""


def durability_words(settings: dict[str, str]) -> str:
    """The durability column for a Redis-backed peer, from the server's real settings."""
    if keeps_nothing_on_disk(settings):
        return "nothing on disk"
    if settings.get("appendonly") == "yes":
        return f"AOF fsync={settings.get('appendfsync', '?')}"
    return f"RDB snapshots save='{settings.get('save', '?')}'"


@contextmanager
def fresh_database(url: str) -> Iterator[Store]:
    """The benchmark's Redis database, empty (``FLUSHDB``), and emptied again on leaving."""
    command(url, "FLUSHDB")
    try:
        yield Store(locator=url, settle=_nothing, analyze=_nothing)
    finally:
        command(url, "FLUSHDB")


def _nothing() -> None:
    """Redis needs no settling or statistics."""
