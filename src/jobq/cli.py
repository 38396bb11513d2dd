"""The ``jobq`` command line.

Commands::

    jobq worker MODULE:APP [--queues a,b:3] [--threads N] [--lease S] [--burst] [--grace S]
    jobq enqueue TASK [--args JSON] [--kwargs JSON] [--priority N] [--delay S] [--queue Q] [--json]
    jobq status [--watch] [--interval S] [--json]
    jobq jobs list [--state S] [--queue Q] [--task T] [--limit N] [--before ID] [--json]
    jobq jobs show ID [--json]
    jobq jobs retry ID...
    jobq jobs cancel ID...
    jobq demo [ARGS...]

Every command except ``worker`` and ``demo`` takes ``--url URL`` or ``--app MODULE:APP``; without
either it uses ``$JOBQ_URL``. Read-only commands only need ``--url``: they never import the app's
code.

Errors are one line on stderr starting ``jobq: error:``. Exit codes: 0 success, 1 a runtime error
(the store cannot be opened, no such job, a job in the wrong state, ...), 2 a usage error (bad
flags, bad JSON, a bad ``MODULE:APP``, a bad URL or option value). ``--traceback`` also prints the
traceback, for debugging.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from jobq.app import DEFAULT_URL_ENV, App
from jobq.backends import redact_url
from jobq.exceptions import (
    ConfigurationError,
    InvalidJobError,
    JobqError,
)
from jobq.job import Job, JobRecord
from jobq.states import TERMINAL_STATES, JobState

__all__ = ["main"]

PROG = "jobq"
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*")
_ATTR_RE = _MODULE_RE
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


class CliError(Exception):
    """An error the CLI reports as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


class _UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of printing usage and exiting, so every error
    comes out as the same one line; abbreviated long options are refused (the flags are a
    public contract, and abbreviations would break when a new flag is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- argument types ----------------------------------------------------------------------------


def _job_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid job id {text!r}: job ids are positive integers, e.g. 42"
        )
    return value


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: use a number >= 0, e.g. 30 or 0.5"
        )
    return value


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: use an integer >= 1")
    return value


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def _log_level_arg(text: str) -> str:
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
            raise _UsageError(
                f"--queues {text!r} has an empty entry; write e.g. --queues high:3,low:1"
            )
        name, weight = item, 1
        head, sep, tail = item.rpartition(":")
        if sep and head and re.fullmatch(r"[+-]?\d+", tail):
            name, weight = head, int(tail)
            weighted = True
            if weight < 1:
                raise _UsageError(
                    f"--queues: weight {tail} for queue {name!r} must be an integer >= 1, "
                    "e.g. --queues high:3,low:1"
                )
        if name in weights:
            raise _UsageError(f"--queues: queue {name!r} is listed more than once in {text!r}")
        queues.append(name)
        weights[name] = weight
    return queues, (weights if weighted else None)


def _json_arg(text: str, flag: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    example = "'[1, \"a\"]'" if kind is list else '\'{"to": "a@example.com"}\''
    what = "array" if kind is list else "object"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise _UsageError(
            f"{flag} {_short(text)!r} is not valid JSON ({exc.msg} at position {exc.pos}); "
            f"pass a JSON {what}, e.g. {flag} {example}"
        ) from None
    except ValueError as exc:
        raise _UsageError(f"{flag} {_short(text)!r} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise _UsageError(f"{flag} {_short(text)!r} must be a JSON {what}, e.g. {flag} {example}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; use null or a string")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- loading apps --------------------------------------------------------------------------------


def load_app(spec: str) -> App:
    """Import ``package.module:attr`` (the current directory first on ``sys.path``) and return
    the :class:`jobq.App` it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not _MODULE_RE.fullmatch(module_name) or not _ATTR_RE.fullmatch(attr):
        raise _UsageError(
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
            raise _UsageError(
                f"cannot import module {module_name!r} for app {spec!r}: no module named "
                f"{missing!r}; run jobq from the directory that contains it, or add that "
                "directory to PYTHONPATH"
            ) from exc
        raise CliError(
            f"importing module {module_name!r} for app {spec!r} failed: {_describe(exc)} "
            "(run with --traceback to see where)"
        ) from exc
    except JobqError:
        raise
    except Exception as exc:
        raise CliError(
            f"importing module {module_name!r} for app {spec!r} failed: {_describe(exc)} "
            "(run with --traceback to see where)"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(
                f"app {spec!r}: module {module_name!r} has no attribute {attr!r}; name the "
                f"jobq.App object in it, e.g. {module_name}:app"
            ) from None
    if not isinstance(obj, App):
        raise _UsageError(
            f"app {spec!r} is a {type(obj).__name__}, not a jobq.App; name the object created "
            "with jobq.App(...)"
        )
    return obj


def _open_app(args: argparse.Namespace) -> App:
    """The app for a non-worker command: ``--app``, else ``--url``, else ``$JOBQ_URL``."""
    if args.app is not None:
        app = load_app(args.app)
    else:
        url = args.url
        if url is None:
            url = os.environ.get(DEFAULT_URL_ENV)
            if not url:
                raise _UsageError(
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
def _app_for(args: argparse.Namespace) -> Iterator[App]:
    app = _open_app(args)
    try:
        yield app
    finally:
        app.close()


# -- output ----------------------------------------------------------------------------------


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _dumps(value: object, *, indent: int | None = 2) -> str:
    return json.dumps(value, default=_json_default, indent=indent)


def _decoded(record: JobRecord, name: str) -> Any:
    """``record.<name>`` decoded; the raw stored text if it is not valid JSON."""
    try:
        return getattr(record, name)
    except JobqError:
        return getattr(record, f"{name}_json")


def job_to_dict(job: Job | JobRecord) -> dict[str, Any]:
    """Everything about a job, JSON-ready (datetimes ISO-8601, durations in seconds)."""
    r = job.record if isinstance(job, Job) else job
    return {
        "id": r.id,
        "task": r.task,
        "queue": r.queue,
        "state": r.state.value,
        "priority": r.priority,
        "args": _decoded(r, "args"),
        "kwargs": _decoded(r, "kwargs"),
        "result": _decoded(r, "result"),
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "run_at": r.run_at.isoformat(),
        "deadline": _iso(r.deadline),
        "timeout": r.timeout.total_seconds() if r.timeout is not None else None,
        "unique_key": r.unique_key,
        "tags": list(r.tags),
        "worker_id": r.worker_id,
        "leased_until": _iso(r.leased_until),
        "created_at": r.created_at.isoformat(),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "errors": [
            {
                "attempt": e.attempt,
                "at": e.at.isoformat(),
                "type": e.type,
                "message": e.message,
                "traceback": e.traceback,
            }
            for e in r.errors
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], right: Collection[int] = ()
) -> str:
    """An aligned plain-text table; the columns at indexes ``right`` are right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# -- commands ----------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    queues: list[str] | None = None
    weights: dict[str, int] | None = None
    if args.queues is not None:
        queues, weights = parse_queues(args.queues)
    app = load_app(args.app_spec)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(args.log_level)
    # The pool logs every failed reconnection attempt while a database restarts; jobq's worker
    # already says once that the store is unavailable, and again when it is back.
    pool_log = logging.getLogger("psycopg.pool")
    if args.log_level != "DEBUG" and pool_log.level == logging.NOTSET:
        pool_log.setLevel(logging.ERROR)
    try:
        kwargs: dict[str, Any] = {"threads": args.threads, "burst": args.burst, "weights": weights}
        if args.lease is not None:
            kwargs["lease"] = args.lease
        if args.grace is not None:
            kwargs["grace"] = args.grace
        app.run_worker(queues, **kwargs)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        app.close()
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace) -> int:
    call_args = _json_arg(args.args, "--args", list)
    call_kwargs = _json_arg(args.kwargs, "--kwargs", dict) if args.kwargs is not None else None
    with _app_for(args) as app:
        job = app.enqueue(
            args.task,
            args=call_args,
            kwargs=call_kwargs,
            queue=args.queue,
            priority=args.priority,
            delay=args.delay,
        )
        _out(_dumps(job_to_dict(job)) if args.json else str(job.id))
    return EXIT_OK


def _stats_rows(stats: dict[str, dict[JobState, int]]) -> tuple[list[str], list[list[object]]]:
    header = ["QUEUE", *(s.value for s in JobState), "total"]
    rows: list[list[object]] = []
    totals = dict.fromkeys(JobState, 0)
    for queue in sorted(stats):
        counts = stats[queue]
        row: list[object] = [queue]
        for s in JobState:
            row.append(counts.get(s, 0))
            totals[s] += counts.get(s, 0)
        row.append(sum(counts.values()))
        rows.append(row)
    rows.append(["total", *(totals[s] for s in JobState), sum(totals.values())])
    return header, rows


def _stats_json(stats: dict[str, dict[JobState, int]]) -> dict[str, Any]:
    queues = {q: {s.value: stats[q].get(s, 0) for s in JobState} for q in sorted(stats)}
    total = {s.value: sum(c.get(s, 0) for c in stats.values()) for s in JobState}
    return {"queues": queues, "total": total}


def cmd_status(args: argparse.Namespace) -> int:
    with _app_for(args) as app:
        if not args.watch:
            _print_status(app, args.json)
            return EXIT_OK
        n = 0
        try:
            while True:
                if args.json:
                    _out(_dumps(_stats_json(app.stats()), indent=None))
                else:
                    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
                    sys.stdout.write(_CLEAR_SCREEN)
                    _out(
                        f"jobq status  {redact_url(app.url)}  {now}  "
                        f"(every {args.interval:g}s, Ctrl-C to stop)\n"
                    )
                    _print_status(app, False)
                sys.stdout.flush()
                n += 1
                if args.iterations is not None and n >= args.iterations:
                    break
                time.sleep(args.interval)
        except KeyboardInterrupt:
            _out()
    return EXIT_OK


def _print_status(app: App, as_json: bool) -> None:
    stats = app.stats()
    if as_json:
        _out(_dumps(_stats_json(stats)))
    else:
        header, rows = _stats_rows(stats)
        _out(format_table(header, rows, right=range(1, len(header))))


def cmd_jobs_list(args: argparse.Namespace) -> int:
    with _app_for(args) as app:
        jobs = app.list_jobs(
            queue=args.queue,
            state=args.state,
            task=args.task,
            limit=args.limit,
            before_id=args.before,
        )
        if args.json:
            _out(_dumps([job_to_dict(j) for j in jobs]))
            return EXIT_OK
        if not jobs:
            _out("no jobs")
            return EXIT_OK
        header = ["ID", "STATE", "QUEUE", "TASK", "PRIORITY", "ATTEMPT", "CREATED", "RUN AT"]
        rows = [
            [
                j.id,
                j.state.value,
                j.queue,
                j.task,
                j.priority,
                f"{j.attempt}/{j.max_attempts}",
                _when(j.created_at),
                _when(j.run_at),
            ]
            for j in jobs
        ]
        _out(format_table(header, rows, right={0, 4, 5}))
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with _app_for(args) as app:
        job = app.get_job(args.id)
        d = job_to_dict(job)
        if args.json:
            _out(_dumps(d))
            return EXIT_OK
        fields = [
            "id",
            "task",
            "queue",
            "state",
            "priority",
            "attempt",
            "max_attempts",
            "created_at",
            "run_at",
            "started_at",
            "finished_at",
            "deadline",
            "timeout",
            "unique_key",
            "tags",
            "worker_id",
            "leased_until",
        ]
        width = max(len(f) for f in [*fields, "args", "kwargs", "result"])
        for f in fields:
            value = d[f]
            if f == "attempt":
                value = f"{d['attempt']} of {d['max_attempts']}"
            elif f == "max_attempts":
                continue
            elif f == "tags":
                value = ", ".join(d["tags"]) or None
            elif f == "timeout" and value is not None:
                value = f"{value:g}s"
            _out(f"{f + ':':<{width + 1}} {'-' if value is None else value}")
        for f in ("args", "kwargs", "result"):
            _out(f"{f + ':':<{width + 1}} {_dumps(d[f], indent=None)}")
        errors = d["errors"]
        _out(f"{'errors:':<{width + 1}} {len(errors) if errors else '-'}")
        for e in errors:
            _out(f"  attempt {e['attempt']} at {e['at']}: {e['type']}: {e['message']}")
            if e["traceback"]:
                for line in str(e["traceback"]).rstrip("\n").splitlines():
                    _out(f"    {line}")
    return EXIT_OK


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with _app_for(args) as app:
        for job_id in args.ids:
            try:
                job = app.retry(job_id)
            except JobqError as exc:
                _error(str(exc))
                code = EXIT_RUNTIME
                continue
            _out(f"job {job.id}: retried, now {job.state.value}")
    return code


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with _app_for(args) as app:
        for job_id in args.ids:
            try:
                if app.cancel(job_id):
                    _out(f"job {job_id}: cancelled")
                    continue
                state = app.get_job(job_id).state
            except JobqError as exc:
                _error(str(exc))
                code = EXIT_RUNTIME
                continue
            if state is JobState.CANCELLED:
                _out(f"job {job_id}: already cancelled")
            else:
                active = ", ".join(s.value for s in JobState if s not in TERMINAL_STATES)
                _error(
                    f"job {job_id} is already {state.value} and cannot be cancelled; only "
                    f"{active} jobs can be"
                )
                code = EXIT_RUNTIME
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the job store's schema (opening a store migrates it)."""
    if args.schema is not None:
        url = args.url or (load_app(args.app).url if args.app else os.environ.get(DEFAULT_URL_ENV))
        if not url or urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise _UsageError(
                f"--schema applies to PostgreSQL URLs only, not {redact_url(url or '')!r}"
            )
        query = [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "schema"]
        query.append(("schema", args.schema))
        args.url, args.app = urlsplit(url)._replace(query=urlencode(query)).geturl(), None
    with _app_for(args) as app:
        version = getattr(app.backend, "schema_version", None)
        if version is None:
            _out(f"{redact_url(app.url)}: nothing to migrate (in-process store)")
        else:
            _out(f"{redact_url(app.url)}: jobq schema version {version()}, up to date")
    return EXIT_OK


def cmd_demo(argv: list[str]) -> int:
    try:
        module = importlib.import_module("jobq.demo.run")
    except ImportError as exc:
        raise CliError(
            f"the demo is not available: cannot import jobq.demo.run ({_describe(exc)}); "
            "reinstall jobq"
        ) from exc
    demo_main = getattr(module, "main", None)
    if not callable(demo_main):
        raise CliError("the demo is not available: jobq.demo.run has no main(); reinstall jobq")
    result = cast(Callable[[list[str]], int | None], demo_main)(argv)
    return int(result or 0)


# -- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="jobq: a durable job queue. Run workers, enqueue jobs, and inspect them.",
        epilog=f"Without --url or --app, commands use ${DEFAULT_URL_ENV}.",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=False,
        help="print the traceback of an error (for debugging)",
    )

    common = _Parser(add_help=False)
    common.add_argument(
        "--traceback",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error (for debugging)",
    )

    store = _Parser(add_help=False)
    group = store.add_mutually_exclusive_group()
    group.add_argument(
        "--url",
        metavar="URL",
        help=f"job store URL, e.g. sqlite:///jobs.db (default: ${DEFAULT_URL_ENV})",
    )
    group.add_argument(
        "--app",
        metavar="MODULE:APP",
        help="use the store of this jobq.App, e.g. myproject.tasks:app",
    )

    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    w = sub.add_parser(
        "worker",
        parents=[common],
        help="run a worker",
        description="Run a worker for an app until SIGTERM/SIGINT (or, with "
        "--burst, until the queues are empty).",
    )
    w.add_argument(
        "app_spec", metavar="MODULE:APP", help="the jobq.App to run, e.g. myproject.tasks:app"
    )
    w.add_argument(
        "--queues",
        metavar="Q[:W],...",
        help="queues to serve, with optional weights: high:3,low:1 (default: every "
        "queue of a registered task)",
    )
    w.add_argument(
        "--threads",
        type=_positive_int_arg,
        default=8,
        metavar="N",
        help="jobs run at once (default: 8)",
    )
    w.add_argument(
        "--lease",
        type=_seconds_arg,
        metavar="SECONDS",
        help="lease length (default: the app's, 30s)",
    )
    w.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    w.add_argument(
        "--grace",
        type=_seconds_arg,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish (default: 30)",
    )
    w.add_argument(
        "--log-level",
        type=_log_level_arg,
        default="INFO",
        metavar="LEVEL",
        help="debug, info, warning or error (default: info)",
    )
    w.set_defaults(handler=cmd_worker)

    e = sub.add_parser(
        "enqueue",
        parents=[common, store, as_json],
        help="enqueue a job by name",
        description="Enqueue a job for a task by name; prints its id.",
    )
    e.add_argument("task", metavar="TASK", help="the task's registered name")
    e.add_argument(
        "--args",
        default="[]",
        metavar="JSON",
        help="positional arguments as a JSON array (default: [])",
    )
    e.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    e.add_argument("--priority", type=_int_arg, metavar="N", help="higher runs first")
    e.add_argument("--delay", type=_seconds_arg, metavar="SECONDS", help="run after a delay")
    e.add_argument("--queue", metavar="Q", help="queue (default: the task's, or 'default')")
    e.set_defaults(handler=cmd_enqueue)

    s = sub.add_parser(
        "status",
        parents=[common, store, as_json],
        help="job counts per queue and state",
        description="Job counts per queue and state.",
    )
    s.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    s.add_argument(
        "--interval",
        type=_seconds_arg,
        default=2.0,
        metavar="SECONDS",
        help="seconds between redraws with --watch (default: 2)",
    )
    s.add_argument("--iterations", type=_positive_int_arg, help=argparse.SUPPRESS)
    s.set_defaults(handler=cmd_status)

    j = sub.add_parser(
        "jobs",
        help="list, show, retry or cancel jobs",
        description="List, show, retry or cancel jobs.",
    )
    jsub = j.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    jl = jsub.add_parser(
        "list",
        parents=[common, store, as_json],
        help="list jobs, newest first",
        description="List jobs, newest first.",
    )
    jl.add_argument(
        "--state",
        choices=[st.value for st in JobState],
        metavar="STATE",
        help=f"only jobs in this state: {', '.join(st.value for st in JobState)}",
    )
    jl.add_argument("--queue", metavar="Q", help="only jobs in this queue")
    jl.add_argument("--task", metavar="T", help="only jobs of this task")
    jl.add_argument(
        "--limit",
        type=_positive_int_arg,
        default=50,
        metavar="N",
        help="at most N jobs, up to 1000 (default: 50)",
    )
    jl.add_argument(
        "--before",
        type=_job_id_arg,
        metavar="ID",
        help="only jobs with ids below ID (the next page)",
    )
    jl.set_defaults(handler=cmd_jobs_list)

    js = jsub.add_parser(
        "show",
        parents=[common, store, as_json],
        help="show one job in full",
        description="Show one job: every field, and each attempt's error.",
    )
    js.add_argument("id", type=_job_id_arg, metavar="ID")
    js.set_defaults(handler=cmd_jobs_show)

    jr = jsub.add_parser(
        "retry",
        parents=[common, store],
        help="run finished jobs again",
        description="Run completed, dead, cancelled or expired jobs again.",
    )
    jr.add_argument("ids", type=_job_id_arg, nargs="+", metavar="ID")
    jr.set_defaults(handler=cmd_jobs_retry)

    jc = jsub.add_parser(
        "cancel",
        parents=[common, store],
        help="cancel unfinished jobs",
        description="Cancel jobs that have not finished.",
    )
    jc.add_argument("ids", type=_job_id_arg, nargs="+", metavar="ID")
    jc.set_defaults(handler=cmd_jobs_cancel)

    m = sub.add_parser(
        "migrate",
        parents=[common, store],
        help="create or upgrade the job store's schema",
        description="Create or upgrade the job store's schema. Safe to run from several "
        "machines at once, and again when there is nothing to do.",
    )
    m.add_argument(
        "--schema",
        metavar="NAME",
        help="PostgreSQL schema to keep jobq's tables in (default: the URL's ?schema=, "
        "else public)",
    )
    m.set_defaults(handler=cmd_migrate)

    sub.add_parser(
        "demo",
        help="run the demo (jobq demo --help for its options)",
        description="Run the jobq demo; arguments are passed on to it.",
        add_help=False,
    )
    return parser


# -- entry point -----------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()


def _exit_code(exc: JobqError) -> int:
    # What the user passed was wrong (URL, option, argument): a usage error.
    if isinstance(exc, ConfigurationError | InvalidJobError):
        return EXIT_USAGE
    return EXIT_RUNTIME


def main(argv: list[str] | None = None) -> int:
    """Run the ``jobq`` command line with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = False
    try:
        # `jobq demo ...` hands everything after "demo" to the demo, options included.
        lead = 0
        while lead < len(argv) and argv[lead] == "--traceback":
            lead += 1
        if lead < len(argv) and argv[lead] == "demo":
            show_tb = lead > 0
            return cmd_demo(argv[lead + 1 :])
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        show_tb = bool(args.traceback)
        handler = cast(Callable[[argparse.Namespace], int], args.handler)
        return handler(args)
    except CliError as exc:
        if show_tb:
            traceback.print_exc()
        _error(str(exc))
        return exc.code
    except JobqError as exc:
        if show_tb:
            traceback.print_exc()
        _error(str(exc))
        return _exit_code(exc)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which exited: not an error worth a traceback.
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_RUNTIME
    except Exception as exc:
        if show_tb:
            traceback.print_exc()
        _error(f"unexpected {_describe(exc)} (run with --traceback for details)")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
