"""Serving the dashboard with uvicorn: in the foreground (``jobq dashboard``) or in a thread
(tests, scripts)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobq.app import App
from jobq.dashboard import require_web_stack
from jobq.exceptions import ConfigurationError


def build(
    app: App,
    *,
    host: str = "127.0.0.1",
    auth: Any = None,
    allowed_hosts: Iterable[str] = (),
    refresh_seconds: float = 5.0,
) -> Any:
    """The guarded ASGI app for serving on ``host``; refuses a non-loopback ``host`` without
    ``auth`` (a :class:`jobq.dashboard.security.Auth`)."""
    require_web_stack()
    from jobq.dashboard.security import allowed_host_names, check_bind
    from jobq.dashboard.views import create_app

    check_bind(host, auth)
    return create_app(
        app,
        auth=auth,
        allowed_hosts=allowed_host_names(host, auth, allowed_hosts),
        refresh_seconds=refresh_seconds,
    )


def _config(asgi: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        access_log=log_level == "debug",
        lifespan="off",
    )


def serve(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    auth: Any = None,
    allowed_hosts: Iterable[str] = (),
    log_level: str = "info",
) -> None:
    """Serve the dashboard until SIGINT/SIGTERM (blocks)."""
    import uvicorn

    asgi = build(app, host=host, auth=auth, allowed_hosts=allowed_hosts)
    sock = _bind(host, port)
    server = uvicorn.Server(_config(asgi, host, port, log_level))
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a :class:`ConfigurationError` that says why not."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}; pick another "
            "--port or --host"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class RunningServer:
    """A dashboard served from a background thread; :meth:`stop` ends it."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth: Any = None,
    allowed_hosts: Iterable[str] = (),
    refresh_seconds: float = 5.0,
    timeout: float = 30.0,
) -> RunningServer:
    """Serve the dashboard from a daemon thread (``port=0``: a free port); returns once it
    accepts connections."""
    import uvicorn

    asgi = build(
        app, host=host, auth=auth, allowed_hosts=allowed_hosts, refresh_seconds=refresh_seconds
    )
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(_config(asgi, host, bound, "warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="jobq-dashboard", daemon=True
    )
    thread.start()
    give_up = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            server.should_exit = True
            raise ConfigurationError(f"the dashboard did not start on {host}:{bound}")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(f"http://{shown}:{bound}", server, thread)
