"""Helpers shared by the dashboard tests: a dashboard served on a free loopback port from a
thread, and a small HTTP client that keeps cookies and lets a test set any header."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jobq
from jobq.dashboard.server import RunningServer, start_in_thread

DEADLINE = 30.0


@contextmanager
def serving(app: jobq.App, **kwargs: Any) -> Iterator[RunningServer]:
    """The dashboard over ``app``, served from a thread on a free loopback port."""
    server = start_in_thread(app, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Client:
    """Talks HTTP/1.1 to one dashboard; remembers the cookies it sets."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=DEADLINE)
        all_headers = {"Host": self.host}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        all_headers.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=all_headers)
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", "replace")
            for name, value in raw.getheaders():
                if name.lower() == "set-cookie":
                    cookie, _, attrs = value.partition(";")
                    key, _, val = cookie.partition("=")
                    if "max-age=0" in attrs.lower() or "expires=thu, 01 jan 1970" in attrs.lower():
                        self.cookies.pop(key.strip(), None)
                    else:
                        self.cookies[key.strip()] = val.strip().strip('"')
            headers_out = {k.lower(): v for k, v in raw.getheaders()}
            return Response(raw.status, headers_out, text)
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def csrf(self) -> str:
        """The CSRF token of this client's session (from a page, which sets the cookie)."""
        page = self.get("/")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if match:
            return match.group(1)
        return self.cookies["jobq_csrf"]

    def post(
        self,
        path: str,
        fields: dict[str, str] | None = None,
        *,
        token: str | bool | None = True,
        origin: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """POST a form. ``token=True``: the session's CSRF token; ``origin=True``: this
        dashboard's own Origin; a string: that value; None: leave it out."""
        form = dict(fields or {})
        if token is True:
            form["csrf_token"] = self.csrf()
        elif isinstance(token, str):
            form["csrf_token"] = token
        all_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin is True:
            all_headers["Origin"] = self.base
        elif isinstance(origin, str):
            all_headers["Origin"] = origin
        all_headers.update(headers or {})
        return self.request("POST", path, body=urlencode(form).encode(), headers=all_headers)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    give_up = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
