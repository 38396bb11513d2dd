"""Finding the app a command works on: importing ``MODULE:APP``, or opening the job store named
by ``--url`` or ``$JOBQ_URL``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from jobq.app import DEFAULT_URL_ENV, App
from jobq.cli.errors import CliError, UsageError, describe
from jobq.exceptions import JobqError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*")
_ATTR_RE = _MODULE_RE


def load_app(spec: str) -> App:
    """Import ``package.module:attr`` (the current directory first on ``sys.path``) and return
    the :class:`jobq.App` it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not _MODULE_RE.fullmatch(module_name) or not _ATTR_RE.fullmatch(attr):
        raise UsageError(
            f"invalid app {spec!r}: write MODULE:APP, e.g. myproject.tasks:app for the object "
            "'app' in myproject/tasks.py"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise UsageError(
                f"cannot import module {module_name!r} for app {spec!r}: no module named "
                f"{missing!r}; run jobq from the directory that contains it, or add that "
                "directory to PYTHONPATH"
            ) from exc
        raise CliError(
            f"importing module {module_name!r} for app {spec!r} failed: {describe(exc)} "
            "(run with --traceback to see where)"
        ) from exc
    except JobqError:
        raise
    except Exception as exc:
        raise CliError(
            f"importing module {module_name!r} for app {spec!r} failed: {describe(exc)} "
            "(run with --traceback to see where)"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"app {spec!r}: module {module_name!r} has no attribute {attr!r}; name the "
                f"jobq.App object in it, e.g. {module_name}:app"
            ) from None
    if not isinstance(obj, App):
        raise UsageError(
            f"app {spec!r} is a {type(obj).__name__}, not a jobq.App; name the object created "
            "with jobq.App(...)"
        )
    return obj


def open_app(args: argparse.Namespace) -> App:
    """The app for a non-worker command: ``--app``, else ``--url``, else ``$JOBQ_URL``."""
    if args.app is not None:
        app = load_app(args.app)
    else:
        url = args.url
        if url is None:
            url = os.environ.get(DEFAULT_URL_ENV)
            if not url:
                raise UsageError(
                    "no job store given: pass --url sqlite:///path/to/jobs.db or --app "
                    f"MODULE:APP, or set ${DEFAULT_URL_ENV}"
                )
        app = App(url)
    try:
        app.open()
    except BaseException:
        app.close()
        raise
    return app


@contextlib.contextmanager
def app_for(args: argparse.Namespace) -> Iterator[App]:
    """:func:`open_app`, closed again on leaving the ``with`` block."""
    app = open_app(args)
    try:
        yield app
    finally:
        app.close()
