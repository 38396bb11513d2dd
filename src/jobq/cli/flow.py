"""Commands for flow control: ``jobq queues ...``, ``jobq prune``, ``jobq jobs delete`` and the
bulk form of ``jobq jobs cancel``."""

from __future__ import annotations

import argparse
from typing import Any

from jobq.cli.apps import app_for
from jobq.cli.arguments import job_id_arg, seconds_arg
from jobq.cli.errors import EXIT_OK, EXIT_RUNTIME, UsageError, print_error
from jobq.cli.render import dumps, format_table, out
from jobq.exceptions import JobqError
from jobq.states import TERMINAL_STATES, JobState

FINISHED = sorted(s.value for s in TERMINAL_STATES)
UNFINISHED = [s.value for s in JobState if s not in TERMINAL_STATES]


def max_depth_arg(text: str) -> int | None:
    if text.lower() in ("none", "off", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid max depth {text!r}: use an integer >= 1, or 'none' to remove the limit"
        )
    return value


def add_parsers(
    sub: Any,
    jsub: Any,
    common: argparse.ArgumentParser,
    store: argparse.ArgumentParser,
    as_json: argparse.ArgumentParser,
) -> None:
    """Register these commands on the ``jobq`` parser (``sub``) and its ``jobs`` parser."""
    q = sub.add_parser(
        "queues",
        help="list, pause and resume queues; set a queue's max depth",
        description="Store-wide queue settings, seen by every worker on every machine.",
    )
    qsub = q.add_subparsers(dest="queues_command", metavar="ACTION", required=True)
    ql = qsub.add_parser(
        "list",
        parents=[common, store, as_json],
        help="queues with their counts and settings",
        description="Every queue that has jobs or settings: counts, paused, max depth.",
    )
    ql.set_defaults(handler=cmd_queues_list)
    for action, text in (
        ("pause", "stop workers everywhere from starting jobs of a queue"),
        ("resume", "let workers start jobs of a paused queue again"),
    ):
        p = qsub.add_parser(action, parents=[common, store], help=text, description=text + ".")
        p.add_argument("names", nargs="+", metavar="NAME", help="queue name")
        p.set_defaults(handler=cmd_queues_pause if action == "pause" else cmd_queues_resume)
    md = qsub.add_parser(
        "set-max-depth",
        parents=[common, store],
        help="refuse enqueues past this many waiting jobs (backpressure)",
        description="Enqueues that would take the queue past N waiting (scheduled, blocked or "
        "available) jobs raise QueueFull. 'none' removes the limit.",
    )
    md.add_argument("name", metavar="NAME")
    md.add_argument("max_depth", type=max_depth_arg, metavar="N|none")
    md.set_defaults(handler=cmd_queues_max_depth)

    pr = sub.add_parser(
        "prune",
        parents=[common, store],
        help="delete finished jobs",
        description="Delete finished jobs, by age and by count per state.",
    )
    pr.add_argument(
        "--state",
        action="append",
        choices=FINISHED,
        metavar="STATE",
        help=f"only this finished state (repeatable): {', '.join(FINISHED)} (default: all)",
    )
    pr.add_argument(
        "--older-than",
        type=seconds_arg,
        default=0.0,
        metavar="SECONDS",
        help="only jobs that finished at least this long ago (default: 0)",
    )
    pr.add_argument(
        "--keep",
        type=int,
        default=0,
        metavar="N",
        help="keep the N most recently finished jobs of each state (default: 0)",
    )
    pr.set_defaults(handler=cmd_prune)

    jd = jsub.add_parser(
        "delete",
        parents=[common, store],
        help="delete jobs that are not running",
        description="Delete jobs for good (a running job must be cancelled first). Jobs "
        "waiting on a deleted job are treated as if it had been cancelled.",
    )
    jd.add_argument("ids", type=job_id_arg, nargs="+", metavar="ID")
    jd.set_defaults(handler=cmd_jobs_delete)


def add_bulk_cancel_flags(jc: argparse.ArgumentParser) -> None:
    """``jobq jobs cancel --queue Q --state S --task T``: cancel every match."""
    jc.add_argument("--queue", metavar="Q", help="cancel every unfinished job of this queue")
    jc.add_argument(
        "--state",
        choices=UNFINISHED,
        metavar="STATE",
        help=f"cancel every job in this state: {', '.join(UNFINISHED)}",
    )
    jc.add_argument("--task", metavar="T", help="cancel every unfinished job of this task")


def bulk_cancel(args: argparse.Namespace) -> int | None:
    """Run the bulk form of ``jobs cancel`` if it was asked for; None if not."""
    bulk = any(getattr(args, f, None) is not None for f in ("queue", "state", "task"))
    if not bulk:
        if not args.ids:
            raise UsageError(
                "jobs cancel needs job ids, or --queue/--state/--task to cancel every match"
            )
        return None
    if args.ids:
        raise UsageError("give job ids or --queue/--state/--task, not both")
    with app_for(args) as app:
        n = app.cancel_many(queue=args.queue, state=args.state, task=args.task)
    out(f"cancelled {n} job{'s' if n != 1 else ''}")
    return EXIT_OK


def cmd_queues_list(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        settings = app.queues()
        stats = app.stats()
    names = sorted(set(settings) | set(stats))
    doc: dict[str, dict[str, Any]] = {
        name: {
            "paused": settings[name].paused if name in settings else False,
            "max_depth": settings[name].max_depth if name in settings else None,
            "counts": {s.value: stats.get(name, {}).get(s, 0) for s in JobState},
        }
        for name in names
    }
    if args.json:
        out(dumps(doc))
        return EXIT_OK
    if not names:
        out("no queues")
        return EXIT_OK
    header = ["QUEUE", "PAUSED", "MAX DEPTH", "WAITING", "RUNNING", "DEAD"]
    rows = []
    for name, d in doc.items():
        c = d["counts"]
        waiting = c["scheduled"] + c["blocked"] + c["available"]
        depth = d["max_depth"]
        rows.append(
            [
                name,
                "yes" if d["paused"] else "no",
                "-" if depth is None else depth,
                waiting,
                c["running"],
                c["dead"],
            ]
        )
    out(format_table(header, rows, right={2, 3, 4, 5}))
    return EXIT_OK


def cmd_queues_pause(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        for name in args.names:
            app.pause_queue(name)
            out(f"queue {name}: paused (running jobs finish; nothing new starts)")
    return EXIT_OK


def cmd_queues_resume(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        for name in args.names:
            app.resume_queue(name)
            out(f"queue {name}: resumed")
    return EXIT_OK


def cmd_queues_max_depth(args: argparse.Namespace) -> int:
    with app_for(args) as app:
        app.set_max_depth(args.name, args.max_depth)
    limit = "no limit" if args.max_depth is None else f"at most {args.max_depth:,} waiting jobs"
    out(f"queue {args.name}: {limit}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    if args.keep < 0:
        raise UsageError(f"invalid --keep {args.keep}: use an integer >= 0")
    with app_for(args) as app:
        n = app.prune(states=args.state, older_than=args.older_than, keep=args.keep)
    out(f"deleted {n} finished job{'s' if n != 1 else ''}")
    return EXIT_OK


def cmd_jobs_delete(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with app_for(args) as app:
        for job_id in args.ids:
            try:
                existed = app.delete(job_id)
            except JobqError as exc:
                print_error(str(exc))
                code = EXIT_RUNTIME
                continue
            if existed:
                out(f"job {job_id}: deleted")
            else:
                print_error(f"no job with id {job_id} (it may have been pruned)")
                code = EXIT_RUNTIME
    return code
