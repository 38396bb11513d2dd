"""The command handlers: one ``cmd_*`` function per command, taking the parsed arguments and
returning the exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from jobq.app import DEFAULT_URL_ENV, App
from jobq.backends import redact_url
from jobq.cli import telemetry
from jobq.cli.apps import app_for, load_app
from jobq.cli.arguments import json_arg, parse_queues
from jobq.cli.bulk import enqueue_from_file, retry_all_or_none
from jobq.cli.errors import EXIT_OK, EXIT_RUNTIME, CliError, UsageError, describe, print_error
from jobq.cli.flow import bulk_cancel
from jobq.cli.progress import Rates
from jobq.cli.render import (
    dumps,
    format_table,
    job_to_dict,
    out,
    stats_json,
    stats_rows,
    when,
    workers_json,
    workers_rows,
)
from jobq.exceptions import JobqError
from jobq.heap import keep_freed_heap
from jobq.states import TERMINAL_STATES, JobState
from jobq.supervisor import EXIT_RECYCLE, Supervisor, watch_supervisor, worker_command
from jobq.worker import Worker, resident_mb, signal_handlers

_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def cmd_worker(args: argparse.Namespace) -> int:
    """``jobq worker``: run a :class:`~jobq.supervisor.Supervisor` of ``--processes`` worker
    processes until SIGTERM/SIGINT (or, with ``--burst``, until they have emptied the queues).

    With the hidden ``--child`` flag (how the supervisor starts each child), run one worker in
    this process instead, and exit 0 when it stopped on a signal or, with ``--burst``, found the
    queues empty, or :data:`~jobq.supervisor.EXIT_RECYCLE` when it recycled itself (it reached
    ``--max-jobs-per-process`` or ``--max-memory-per-process``, or a thread stayed stuck in a
    timed-out job for longer than ``--grace``).
    """
    queues: list[str] | None = None
    weights: dict[str, int] | None = None
    if args.queues is not None:
        queues, weights = parse_queues(args.queues)
    app = load_app(args.app_spec)
    root = logging.getLogger()
    handler = telemetry.log_handler(args)  # --log-format; job lines carry the job's fields
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(args.log_level)
    # The pool logs every failed reconnection attempt while a database restarts; jobq's worker
    # already says once that the store is unavailable, and again when it is back.
    pool_log = logging.getLogger("psycopg.pool")
    if args.log_level != "DEBUG" and pool_log.level == logging.NOTSET:
        pool_log.setLevel(logging.ERROR)
    try:
        kwargs: dict[str, Any] = {
            "threads": args.threads[1],
            "min_threads": args.threads[0],
            "async_limit": args.async_limit,
            "burst": args.burst,
            "weights": weights,
            "max_jobs": args.max_jobs_per_process,
            "max_memory_mb": args.max_memory_per_process,
            # a thread stuck in a timed-out job costs its process a recycle after the grace
            "stuck_grace": args.grace if args.grace is not None else _DEFAULT_GRACE,
        }
        if args.lease is not None:
            kwargs["lease"] = args.lease
        if args.grace is not None:
            kwargs["grace"] = args.grace
        if args.cancel_grace is not None:
            kwargs["cancel_grace"] = args.cancel_grace
        # Building the worker checks every value and opens (and migrates) the store, so that a
        # mistake is one error line here, not children failing over and over.
        worker = app.worker(queues, **kwargs)
        _check_memory_limit(args.max_memory_per_process)
        if args.child:
            keep_freed_heap()  # this process is the worker's (see jobq.heap)
            watch_supervisor(lambda: _supervisor_lost(worker))
            with signal_handlers(worker):
                summary = worker.run()
            return EXIT_RECYCLE if summary.exit_reason == "recycle" else EXIT_OK
        app.close()  # the supervisor itself runs no jobs
        with telemetry.supervisor_metrics(args):  # --metrics-port, summed over the processes
            supervisor = Supervisor(
                worker_command(args.app_spec, _child_args(args)),
                args.processes,
                burst=args.burst,
            )
            return supervisor.run()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        app.close()


#: ``--grace`` when not given (the worker's default grace period).
_DEFAULT_GRACE = 30.0


def _child_args(args: argparse.Namespace) -> list[str]:
    """The worker flags a child gets, from the supervisor's parsed arguments."""
    low, high = args.threads
    threads = f"{low}:{high}" if low is not None else str(high)
    argv = [
        f"--threads={threads}",
        f"--async-limit={args.async_limit}",
        f"--log-level={args.log_level}",
    ]
    if args.queues is not None:
        argv.append(f"--queues={args.queues}")
    if args.lease is not None:
        argv.append(f"--lease={args.lease!r}")
    if args.grace is not None:
        argv.append(f"--grace={args.grace!r}")
    if args.cancel_grace is not None:
        argv.append(f"--cancel-grace={args.cancel_grace!r}")
    if args.max_jobs_per_process is not None:
        argv.append(f"--max-jobs-per-process={args.max_jobs_per_process}")
    if args.max_memory_per_process is not None:
        argv.append(f"--max-memory-per-process={args.max_memory_per_process}")
    if args.burst:
        argv.append("--burst")
    if args.traceback:
        argv.append("--traceback")
    argv += telemetry.child_args(args)
    return argv


def _check_memory_limit(limit_mb: int | None) -> None:
    """Refuse a memory limit that a worker process is over before running any job: it would
    recycle as fast as it starts."""
    if limit_mb is None:
        return
    rss = resident_mb()
    if rss >= limit_mb:
        raise UsageError(
            f"--max-memory-per-process {limit_mb} is below what a worker process uses before "
            f"running any job ({rss:.0f} MiB); give it more"
        )


def _supervisor_lost(worker: Worker) -> None:
    logging.getLogger("jobq.worker").warning(
        "the supervisor that started this process is gone: finishing running jobs, then exiting"
    )
    worker.stop()


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        return enqueue_from_file(args)
    call_args = json_arg(args.args, "--args", list)
    call_kwargs = json_arg(args.kwargs, "--kwargs", dict) if args.kwargs is not None else None
    with app_for(args) as app:
        job = app.enqueue(
            args.task,
            args=call_args,
            kwargs=call_kwargs,
            queue=args.queue,
            priority=args.priority,
            delay=args.delay,
        )
        out(dumps(job_to_dict(job)) if args.json else str(job.id))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        if not args.watch:
            _print_status(app, args.json)
            return EXIT_OK
        n = 0
        rates = Rates()
        try:
            while True:
                if args.json:
                    out(dumps(_status_doc(app), indent=None))
                else:
                    clock = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
                    totals = stats_json(app.stats())["total"]
                    sys.stdout.write(_CLEAR_SCREEN)
                    out(
                        f"jobq status  {redact_url(app.url)}  {clock}  "
                        f"(every {args.interval:g}s, Ctrl-C to stop)"
                    )
                    out(rates.line(totals) or "measuring throughput...")
                    out()
                    _print_status(app, False)
                sys.stdout.flush()
                n += 1
                if args.iterations is not None and n >= args.iterations:
                    break
                time.sleep(args.interval)
        except KeyboardInterrupt:
            out()
    return EXIT_OK


def _status_doc(app: App) -> dict[str, Any]:
    """The ``status --json`` document: job counts, and the registered workers."""
    workers = workers_json(app.workers(), app.backend.now(), app.lease)
    return {**stats_json(app.stats()), "workers": workers}


def _print_status(app: App, as_json: bool) -> None:
    if as_json:
        out(dumps(_status_doc(app)))
        return
    stats = app.stats()
    workers = app.workers()
    now = app.backend.now()
    header, rows = stats_rows(stats)
    out(format_table(header, rows, right=range(1, len(header))))
    out()
    if not workers:
        out("no worker processes registered")
        return
    header, rows = workers_rows(workers, now, app.lease)
    out(format_table(header, rows, right={2, 4, 5, 6, 7}))


def cmd_jobs_list(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        jobs = app.list_jobs(
            queue=args.queue,
            state=args.state,
            task=args.task,
            limit=args.limit,
            before_id=args.before,
        )
        if args.json:
            out(dumps([job_to_dict(j) for j in jobs]))
            return EXIT_OK
        if not jobs:
            out("no jobs")
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
                when(j.created_at),
                when(j.run_at),
            ]
            for j in jobs
        ]
        out(format_table(header, rows, right={0, 4, 5}))
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        job = app.get_job(args.id)
        d = job_to_dict(job)
        if args.json:
            out(dumps(d))
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
            "progress",
            "depends_on",
            "concurrency_key",
            "rate_key",
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
            elif f == "progress" and value is not None:
                value = f"{value:.0%}" + (
                    f" {d['progress_message']}" if d["progress_message"] else ""
                )
            elif f == "progress" and d["progress_message"]:
                value = d["progress_message"]
            elif f == "depends_on":
                value = ", ".join(str(i) for i in value) or None
                if value and d["allow_failed"]:
                    value += " (runs even if one fails)"
            out(f"{f + ':':<{width + 1}} {'-' if value is None else value}")
        for f in ("args", "kwargs", "result"):
            out(f"{f + ':':<{width + 1}} {dumps(d[f], indent=None)}")
        errors = d["errors"]
        out(f"{'errors:':<{width + 1}} {len(errors) if errors else '-'}")
        for e in errors:
            out(f"  attempt {e['attempt']} at {e['at']}: {e['type']}: {e['message']}")
            if e["traceback"]:
                for line in str(e["traceback"]).rstrip("\n").splitlines():
                    out(f"    {line}")
    return EXIT_OK


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    bulk = retry_all_or_none(args)
    if bulk is not None:
        return bulk
    code = EXIT_OK
    with app_for(args) as app:
        for job_id in args.ids:
            try:
                job = app.retry(job_id)
            except JobqError as exc:
                print_error(str(exc))
                code = EXIT_RUNTIME
                continue
            out(f"job {job.id}: retried, now {job.state.value}")
    return code


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    bulk = bulk_cancel(args)
    if bulk is not None:
        return bulk
    code = EXIT_OK
    with app_for(args) as app:
        for job_id in args.ids:
            try:
                if app.cancel(job_id):
                    out(f"job {job_id}: cancelled")
                    continue
                state = app.get_job(job_id).state
            except JobqError as exc:
                print_error(str(exc))
                code = EXIT_RUNTIME
                continue
            if state is JobState.CANCELLED:
                out(f"job {job_id}: already cancelled")
            else:
                active = ", ".join(s.value for s in JobState if s not in TERMINAL_STATES)
                print_error(
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
            raise UsageError(
                f"--schema applies to PostgreSQL URLs only, not {redact_url(url or '')!r}"
            )
        query = [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "schema"]
        query.append(("schema", args.schema))
        args.url, args.app = urlsplit(url)._replace(query=urlencode(query)).geturl(), None
    with app_for(args) as app:
        version = getattr(app.backend, "schema_version", None)
        if version is None:
            out(f"{redact_url(app.url)}: nothing to migrate (in-process store)")
        else:
            out(f"{redact_url(app.url)}: jobq schema version {version()}, up to date")
    return EXIT_OK


def cmd_demo(argv: list[str]) -> int:
    try:
        module = importlib.import_module("jobq.demo.run")
    except ImportError as exc:
        raise CliError(
            f"the demo is not available: cannot import jobq.demo.run ({describe(exc)}); "
            "reinstall jobq"
        ) from exc
    demo_main = getattr(module, "main", None)
    if not callable(demo_main):
        raise CliError("the demo is not available: jobq.demo.run has no main(); reinstall jobq")
    result = cast(Callable[[list[str]], int | None], demo_main)(argv)
    return int(result or 0)
