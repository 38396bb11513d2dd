"""The ``jobq`` command line.

Commands::

    jobq worker MODULE:APP [--queues a,b:3] [--processes P] [--threads N|MIN:MAX] [--burst] ...
    jobq enqueue TASK [--args JSON] [--kwargs JSON] [--priority N] [--delay S] [--queue Q] [--json]
    jobq status [--watch] [--interval S] [--json]
    jobq jobs list [--state S] [--queue Q] [--task T] [--limit N] [--before ID] [--json]
    jobq jobs show ID [--json]
    jobq jobs retry ID... | --all [--state S] [--queue Q] [--task T]
    jobq jobs cancel ID... | [--queue Q] [--state S] [--task T]
    jobq jobs delete ID...
    jobq queues list | pause NAME... | resume NAME... | set-max-depth NAME N|none
    jobq cron list [--json]
    jobq prune [--state S] [--older-than S] [--keep N]
    jobq dashboard [MODULE:APP | --url URL] [--host H] [--port P]
    jobq migrate [--schema NAME]
    jobq demo [ARGS...]

Every command except ``worker`` and ``demo`` takes ``--url URL`` or ``--app MODULE:APP``; without
either it uses ``$JOBQ_URL``. Read-only commands only need ``--url``: they never import the app's
code.

Errors are one line on stderr starting ``jobq: error:``. Exit codes: 0 success, 1 a runtime error
(the store cannot be opened, no such job, a job in the wrong state, ...), 2 a usage error (bad
flags, bad JSON, a bad ``MODULE:APP``, a bad URL or option value). ``--traceback`` also prints the
traceback, for debugging.

This module holds :func:`main`, the entry point (``jobq`` and ``python -m jobq.cli``), and turns
errors into that one line and an exit code. The rest lives in :mod:`jobq.cli.parser` (the
commands and flags), :mod:`jobq.cli.arguments` (checking argument values),
:mod:`jobq.cli.apps` (finding the app or store), :mod:`jobq.cli.commands` (the ``cmd_*``
handlers), :mod:`jobq.cli.render` (JSON and tables) and :mod:`jobq.cli.errors` (exit codes and
:class:`CliError`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import cast

from jobq.cli.apps import load_app as load_app
from jobq.cli.arguments import parse_queues as parse_queues
from jobq.cli.commands import cmd_demo as cmd_demo
from jobq.cli.commands import cmd_enqueue as cmd_enqueue
from jobq.cli.commands import cmd_jobs_cancel as cmd_jobs_cancel
from jobq.cli.commands import cmd_jobs_list as cmd_jobs_list
from jobq.cli.commands import cmd_jobs_retry as cmd_jobs_retry
from jobq.cli.commands import cmd_jobs_show as cmd_jobs_show
from jobq.cli.commands import cmd_migrate as cmd_migrate
from jobq.cli.commands import cmd_status as cmd_status
from jobq.cli.commands import cmd_worker as cmd_worker
from jobq.cli.errors import EXIT_OK as EXIT_OK
from jobq.cli.errors import EXIT_RUNTIME as EXIT_RUNTIME
from jobq.cli.errors import EXIT_USAGE as EXIT_USAGE
from jobq.cli.errors import PROG as PROG
from jobq.cli.errors import CliError as CliError
from jobq.cli.errors import describe, exit_code, print_error
from jobq.cli.parser import build_parser as build_parser
from jobq.cli.render import format_table as format_table
from jobq.cli.render import job_to_dict as job_to_dict
from jobq.exceptions import JobqError

# The names above imported "as" themselves are re-exported: they were this module's public names
# before it became a package. ``from jobq.cli import *`` still gives just main().
__all__ = ["main"]


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
        print_error(str(exc))
        return exc.code
    except JobqError as exc:
        if show_tb:
            traceback.print_exc()
        print_error(str(exc))
        return exit_code(exc)
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
        print_error(f"unexpected {describe(exc)} (run with --traceback for details)")
        return EXIT_RUNTIME
