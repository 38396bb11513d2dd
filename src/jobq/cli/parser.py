"""The ``jobq`` argument parser: every command, its flags and its help text."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from jobq.app import DEFAULT_URL_ENV
from jobq.cli import bulk, dashboard, flow, telemetry
from jobq.cli.arguments import (
    int_arg,
    job_id_arg,
    log_level_arg,
    positive_int_arg,
    seconds_arg,
    threads_arg,
)
from jobq.cli.commands import (
    cmd_enqueue,
    cmd_jobs_cancel,
    cmd_jobs_list,
    cmd_jobs_retry,
    cmd_jobs_show,
    cmd_migrate,
    cmd_status,
    cmd_worker,
)
from jobq.cli.cron import cmd_cron_list
from jobq.cli.errors import PROG, UsageError
from jobq.states import JobState


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of printing usage and exiting, so every error
    comes out as the same one line; abbreviated long options are refused (the flags are a
    public contract, and abbreviations would break when a new flag is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``jobq`` parser. Each command sets ``handler``, its ``cmd_*`` function; ``demo`` is
    listed for ``--help`` only, since :func:`jobq.cli.main` hands its arguments on untouched."""
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
        description="Run worker processes for an app until SIGTERM/SIGINT (or, with "
        "--burst, until the queues are empty). A supervisor starts --processes worker "
        "processes, each running --threads jobs at once, and replaces any that dies or "
        "recycles itself.",
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
        type=threads_arg,
        default=(None, 8),
        metavar="N|MIN:MAX",
        help="threads per worker process (default: 8); MIN:MAX autoscales between the two by "
        "backlog and idle time",
    )
    w.add_argument(
        "--async-limit",
        type=positive_int_arg,
        default=100,
        metavar="N",
        help="async def jobs each worker process runs at once on its event loop (default: 100)",
    )
    w.add_argument(
        "--processes",
        type=positive_int_arg,
        default=1,
        metavar="P",
        help="worker processes (default: 1)",
    )
    w.add_argument(
        "--max-jobs-per-process",
        type=positive_int_arg,
        metavar="N",
        help="replace a worker process after it has run N jobs (default: never)",
    )
    w.add_argument(
        "--max-memory-per-process",
        type=positive_int_arg,
        metavar="MB",
        help="replace a worker process once it uses more than MB MiB of memory (default: never)",
    )
    w.add_argument(
        "--lease",
        type=seconds_arg,
        metavar="SECONDS",
        help="lease length (default: the app's, 30s)",
    )
    w.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    w.add_argument(
        "--grace",
        type=seconds_arg,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish; also how long a thread may stay "
        "stuck in a timed-out job before its process is replaced (default: 30)",
    )
    w.add_argument(
        "--cancel-grace",
        type=seconds_arg,
        metavar="SECONDS",
        help="how long a running job that was cancelled may take to stop by itself before "
        "jobq.Cancelled is raised in its thread (default: 10)",
    )
    w.add_argument(
        "--log-level",
        type=log_level_arg,
        default="INFO",
        metavar="LEVEL",
        help="debug, info, warning or error (default: info)",
    )
    telemetry.add_worker_flags(w)
    # how the supervisor starts each worker process: run one worker here, no supervisor
    w.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
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
    e.add_argument("--priority", type=int_arg, metavar="N", help="higher runs first")
    e.add_argument("--delay", type=seconds_arg, metavar="SECONDS", help="run after a delay")
    e.add_argument("--queue", metavar="Q", help="queue (default: the task's, or 'default')")
    bulk.add_from_file_flag(e)
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
        type=seconds_arg,
        default=2.0,
        metavar="SECONDS",
        help="seconds between redraws with --watch (default: 2)",
    )
    s.add_argument("--iterations", type=positive_int_arg, help=argparse.SUPPRESS)
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
        type=positive_int_arg,
        default=50,
        metavar="N",
        help="at most N jobs, up to 1000 (default: 50)",
    )
    jl.add_argument(
        "--before",
        type=job_id_arg,
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
    js.add_argument("id", type=job_id_arg, metavar="ID")
    js.set_defaults(handler=cmd_jobs_show)

    jr = jsub.add_parser(
        "retry",
        parents=[common, store],
        help="run finished jobs again",
        description="Run completed, dead, cancelled or expired jobs again.",
    )
    jr.add_argument("ids", type=job_id_arg, nargs="*", metavar="ID")
    bulk.add_retry_all_flags(jr)
    jr.set_defaults(handler=cmd_jobs_retry)

    jc = jsub.add_parser(
        "cancel",
        parents=[common, store],
        help="cancel unfinished jobs",
        description="Cancel jobs that have not finished.",
    )
    jc.add_argument("ids", type=job_id_arg, nargs="*", metavar="ID")
    flow.add_bulk_cancel_flags(jc)
    jc.set_defaults(handler=cmd_jobs_cancel)
    flow.add_parsers(sub, jsub, common, store, as_json)
    dashboard.add_parser(sub, common, store)

    c = sub.add_parser(
        "cron",
        help="list periodic (cron) schedules",
        description="Periodic (cron) schedules.",
    )
    csub = c.add_subparsers(dest="cron_command", metavar="ACTION", required=True)
    cl = csub.add_parser(
        "list",
        parents=[common, store, as_json],
        help="list schedules with their last and next tick",
        description="List the app's periodic schedules (--app MODULE:APP) with the last tick "
        "enqueued (from the job store) and the next one. With --url only, the schedules the "
        "store has ticks for, without their expressions.",
    )
    cl.set_defaults(handler=cmd_cron_list)

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
