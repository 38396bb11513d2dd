"""Long CLI work, with a progress bar: ``jobq enqueue TASK --from-file FILE`` and
``jobq jobs retry --all``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from jobq.app import App
from jobq.cli.apps import app_for
from jobq.cli.errors import EXIT_OK, EXIT_RUNTIME, CliError, UsageError, exit_code, print_error
from jobq.cli.progress import ProgressBar
from jobq.cli.render import dumps, out
from jobq.exceptions import JobqError
from jobq.states import JobState

#: How many jobs ``jobs retry --all`` reads per page.
PAGE = 500

Call = tuple[list[Any], dict[str, Any]]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; use null or a string")


def parse_calls(stream: TextIO, name: str) -> list[Call]:
    """Read JSON Lines of calls: each line a JSON array of positional arguments, or an object
    ``{"args": [...], "kwargs": {...}}``; blank lines and lines starting with ``#`` are skipped.
    The whole file is checked before anything is enqueued."""
    calls: list[Call] = []
    shape = 'a JSON array of arguments, or {"args": [...], "kwargs": {...}}'
    for lineno, line in enumerate(stream, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise UsageError(
                f"{name} line {lineno} is not valid JSON ({exc}); write {shape}"
            ) from None
        if isinstance(value, list):
            calls.append((value, {}))
            continue
        if isinstance(value, dict) and set(value) <= {"args", "kwargs"}:
            args, kwargs = value.get("args", []), value.get("kwargs", {})
            if isinstance(args, list) and isinstance(kwargs, dict):
                calls.append((args, kwargs))
                continue
        raise UsageError(f"{name} line {lineno}: {text[:60]!r} is not {shape}")
    return calls


def enqueue_from_file(args: argparse.Namespace) -> int:
    """``jobq enqueue TASK --from-file FILE`` (``-`` for stdin)."""
    if args.args != "[]" or args.kwargs is not None:
        raise UsageError("--from-file gives each job's arguments: leave out --args and --kwargs")
    path = args.from_file
    try:
        if path == "-":
            calls = parse_calls(sys.stdin, "stdin")
        else:
            with open(path, encoding="utf-8") as f:
                calls = parse_calls(f, path)
    except OSError as exc:
        raise UsageError(f"cannot read --from-file {path!r}: {exc.strerror or exc}") from None
    ids: list[int] = []
    with app_for(args) as app, ProgressBar("enqueueing", len(calls)) as bar:
        for n, (call_args, call_kwargs) in enumerate(calls, 1):
            try:
                job = app.enqueue(
                    args.task,
                    args=call_args,
                    kwargs=call_kwargs,
                    queue=args.queue,
                    priority=args.priority,
                    delay=args.delay,
                )
            except JobqError as exc:
                done = f"; the {n - 1} before it were enqueued" if n > 1 else ""
                raise CliError(f"call {n} of {path}: {exc}{done}", exit_code(exc)) from exc
            ids.append(job.id)
            bar.advance()
    if args.json:
        out(dumps(ids, indent=None))
    elif ids:
        out(f"enqueued {len(ids)} job{'s' if len(ids) != 1 else ''}: ids {ids[0]}..{ids[-1]}")
    else:
        out("enqueued 0 jobs: the file holds no calls")
    return EXIT_OK


def _matching(app: App, queue: str | None, state: JobState) -> int:
    stats = app.stats()
    return sum(c.get(state, 0) for q, c in stats.items() if queue is None or q == queue)


def retry_all_or_none(args: argparse.Namespace) -> int | None:
    """Run ``jobs retry --all`` if it was asked for; None for the form with job ids."""
    if args.all:
        return retry_all(args)
    if args.state is not None or args.queue is not None or args.task is not None:
        raise UsageError("--state, --queue and --task select jobs for --all; add --all")
    if not args.ids:
        raise UsageError("jobs retry needs job ids, or --all to retry every dead job")
    return None


def retry_all(args: argparse.Namespace) -> int:
    """``jobq jobs retry --all [--state S] [--queue Q] [--task T]``: retry every matching
    finished job, newest first, with a progress bar."""
    if args.ids:
        raise UsageError("give job ids or --all, not both")
    state = JobState(args.state or JobState.DEAD.value)
    if not state.is_terminal:
        raise UsageError(
            f"--state {state.value}: only finished jobs can be retried; use dead, completed, "
            "cancelled or expired"
        )
    retried = failed = 0
    with app_for(args) as app:
        total = None if args.task else _matching(app, args.queue, state)
        with ProgressBar("retrying", total) as bar:
            before: int | None = None
            while True:
                page = app.list_jobs(
                    queue=args.queue, state=state, task=args.task, limit=PAGE, before_id=before
                )
                for job in page:
                    try:
                        app.retry(job.id)
                        retried += 1
                    except JobqError as exc:  # e.g. its unique_key is held again
                        print_error(f"job {job.id}: {exc}")
                        failed += 1
                    bar.advance()
                if len(page) < PAGE:
                    break
                before = page[-1].id
    out(f"retried {retried} {state.value} job{'s' if retried != 1 else ''}")
    if failed:
        print_error(f"{failed} job(s) could not be retried (see above)")
        return EXIT_RUNTIME
    return EXIT_OK


def add_from_file_flag(e: argparse.ArgumentParser) -> None:
    """``jobq enqueue TASK --from-file FILE``."""
    e.add_argument(
        "--from-file",
        metavar="FILE",
        help="enqueue one job per line of FILE ('-': stdin), each line a JSON array of "
        'arguments or {"args": [...], "kwargs": {...}}; shows a progress bar on a terminal',
    )


def add_retry_all_flags(jr: argparse.ArgumentParser) -> None:
    """``jobq jobs retry --all [--state S] [--queue Q] [--task T]``."""
    finished = [s.value for s in JobState if s.is_terminal]
    jr.add_argument(
        "--all",
        action="store_true",
        help="retry every finished job matching --state/--queue/--task (progress bar on a "
        "terminal)",
    )
    jr.add_argument(
        "--state",
        choices=finished,
        metavar="STATE",
        help=f"with --all: jobs in this state: {', '.join(finished)} (default: dead)",
    )
    jr.add_argument("--queue", metavar="Q", help="with --all: only jobs of this queue")
    jr.add_argument("--task", metavar="T", help="with --all: only jobs of this task")
