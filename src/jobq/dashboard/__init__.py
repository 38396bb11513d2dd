"""The web dashboard: ``jobq dashboard``.

Server-rendered pages over any job store — an overview (counts per queue and state, throughput
and latency charts, deadline misses, live workers and what they run), a filterable job list, a
page per job (redacted arguments, result, every attempt's error and traceback, timings,
progress, dependencies) — and the actions on them (retry, cancel, delete, retry every dead
job, pause and resume a queue), plus Prometheus gauges of the store on ``/metrics``.

It needs Starlette, uvicorn, Jinja2 and prometheus_client: ``pip install 'jobq[dashboard]'``.
The security rules (loopback by default, authentication, CSRF, escaping) are in
:mod:`jobq.dashboard.security`.

Modules: :mod:`~jobq.dashboard.data` (what the pages show), :mod:`~jobq.dashboard.charts`
(SVG charts), :mod:`~jobq.dashboard.views` (routes), :mod:`~jobq.dashboard.server` (serving).
"""

from __future__ import annotations

import importlib

from jobq.exceptions import ConfigurationError

#: What the dashboard imports, by module name → the package that provides it.
REQUIREMENTS = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "jinja2": "jinja2",
    "prometheus_client": "prometheus_client",
}


def require_web_stack() -> None:
    """Raise :class:`ConfigurationError` naming what to install if a dependency is missing."""
    missing = []
    for module, package in REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigurationError(
            f"the dashboard needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install them with: "
            "pip install 'jobq[dashboard]'"
        )
