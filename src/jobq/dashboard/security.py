"""Who may use the dashboard, and how every request is checked (DESIGN §8).

* **Bind.** :func:`check_bind` refuses to serve on an address other than loopback unless
  authentication is configured.
* **Authentication** (:class:`Auth`): a token (``$JOBQ_DASHBOARD_TOKEN``), sent as
  ``Authorization: Bearer TOKEN`` or as the password of HTTP basic auth with any user name (so a
  browser can log in with it), and/or a user and password (``$JOBQ_DASHBOARD_BASIC_AUTH`` =
  ``USER:PASSWORD``). Credentials are compared with :func:`hmac.compare_digest`.
* **Host check.** Without authentication the dashboard answers only requests whose ``Host`` is
  a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``) or one of ``allowed_hosts``: a web
  page cannot reach it through DNS rebinding.
* **CSRF.** Every POST must carry the ``csrf_token`` form field equal to the ``jobq_csrf``
  cookie (double submit; the cookie is ``SameSite=Strict`` and ``HttpOnly``), and an ``Origin``
  (or, without one, a ``Referer``) of the dashboard's own host.
* **Headers.** A strict Content-Security-Policy (scripts and styles only from the dashboard's
  own files, no inline script), ``nosniff``, no framing, ``no-store``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jobq.exceptions import ConfigurationError

TOKEN_ENV = "JOBQ_DASHBOARD_TOKEN"
BASIC_AUTH_ENV = "JOBQ_DASHBOARD_BASIC_AUTH"
MIN_SECRET_CHARS = 12
CSRF_COOKIE = "jobq_csrf"
CSRF_FIELD = "csrf_token"
_CSRF_RE = re.compile(r"[A-Za-z0-9_-]{43}")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Auth:
    """The credentials the dashboard accepts (see the module docstring)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"the dashboard token is too short ({len(self.token)} characters); use at "
                f"least {MIN_SECRET_CHARS}, e.g. from: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigurationError("basic auth needs both a user name and a password")
        if self.password is not None and len(self.password) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"the dashboard password is too short ({len(self.password)} characters); use "
                f"at least {MIN_SECRET_CHARS}"
            )
        if self.token is None and self.username is None:
            raise ConfigurationError("Auth needs a token, or a user name and password")

    def __repr__(self) -> str:  # never print the secrets
        kinds = [k for k, v in (("token", self.token), ("basic", self.username)) if v]
        return f"Auth({'+'.join(kinds)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Auth | None:
        """The credentials in ``$JOBQ_DASHBOARD_TOKEN`` / ``$JOBQ_DASHBOARD_BASIC_AUTH``
        (``USER:PASSWORD``); None when neither is set."""
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV) or None
        basic = env.get(BASIC_AUTH_ENV) or None
        username = password = None
        if basic is not None:
            username, sep, password = basic.partition(":")
            if not sep or not username or not password:
                raise ConfigurationError(
                    f"${BASIC_AUTH_ENV} must be USER:PASSWORD, e.g. admin:a-long-password"
                )
        if token is None and username is None:
            return None
        return cls(token=token, username=username, password=password)

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries accepted credentials."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return self.token is not None and _same(value, self.token)
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        ok = False
        if self.token is not None:
            ok |= _same(password, self.token)
        if self.username is not None and self.password is not None:
            # both compared every time: how far a guess got must not show in the timing
            user_ok = _same(user, self.username)
            password_ok = _same(password, self.password)
            ok |= user_ok & password_ok
        return ok


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is reachable only from this machine."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: Auth | None) -> None:
    """Refuse (:class:`ConfigurationError`) to bind a non-loopback ``host`` without ``auth``."""
    if auth is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host!r} without authentication: anyone who "
            "can reach that address could retry, cancel and delete jobs. Set "
            f"${TOKEN_ENV} (a token of {MIN_SECRET_CHARS}+ characters) or "
            f"${BASIC_AUTH_ENV}=USER:PASSWORD, or bind to 127.0.0.1"
        )


def host_name(host_header: str) -> str:
    """``example.com:8080`` → ``example.com``; ``[::1]:80`` → ``::1``; lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    if h.count(":") == 1:
        return h.split(":", 1)[0]
    return h


def allowed_host_names(bind_host: str, auth: Auth | None, extra: Iterable[str]) -> frozenset[str]:
    """Host names requests may use; empty means any (authenticated, no list given)."""
    names = {host_name(h) for h in extra if h.strip()}
    if auth is None:
        names |= LOOPBACK_NAMES
        names.add(host_name(bind_host))
    return frozenset(names)


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a state-changing request comes from a page of this dashboard: its ``Origin``
    (else ``Referer``) names the host the request was sent to."""
    host = headers.get("host", "").strip().lower()
    if not host:
        return False
    origin = headers.get("origin")
    source = origin if origin is not None else headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def valid_csrf_cookie(value: str | None) -> str | None:
    """The cookie's token if it looks like one this dashboard issued, else None."""
    return value if value is not None and _CSRF_RE.fullmatch(value) else None


def csrf_ok(cookie: str | None, submitted: str | None) -> bool:
    """Double submit: the form's token equals the cookie's (compared in constant time)."""
    cookie = valid_csrf_cookie(cookie)
    if cookie is None or not submitted:
        return False
    return _same(cookie, submitted)


class Guard:
    """ASGI middleware in front of every route: host check, authentication, security headers.

    CSRF is checked where a form is read (:mod:`jobq.dashboard.views`), since it needs the body.
    """

    def __init__(self, app: ASGIApp, *, auth: Auth | None, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.auth = auth
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.allowed_hosts and host_name(headers.get("host", "")) not in self.allowed_hosts:
            await _plain(send, 400, "unknown Host header; open the dashboard by its address")
            return
        if self.auth is not None and not self.auth.check(headers.get("authorization")):
            await _plain(
                send,
                401,
                "authentication required",
                [(b"www-authenticate", b'Basic realm="jobq dashboard", charset="UTF-8"')],
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                present = {k.lower() for k, _ in out}
                out += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    out.append((b"cache-control", b"no-store"))
                message["headers"] = out
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
