"""``jobq dashboard``: serve the web dashboard over a job store."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jobq.backends import redact_url
from jobq.cli.apps import app_for
from jobq.cli.arguments import log_level_arg
from jobq.cli.errors import EXIT_OK, UsageError
from jobq.dashboard import require_web_stack
from jobq.dashboard.security import BASIC_AUTH_ENV, TOKEN_ENV, Auth, check_bind

log = logging.getLogger("jobq.dashboard")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C. Credentials come from ``$JOBQ_DASHBOARD_TOKEN`` /
    ``$JOBQ_DASHBOARD_BASIC_AUTH`` (never from flags, which other users can see in ``ps``)."""
    if args.app_spec is not None:
        if args.app is not None or args.url is not None:
            raise UsageError("give the app either as MODULE:APP or with --app/--url, not both")
        args.app = args.app_spec
    require_web_stack()
    auth = Auth.from_env()
    check_bind(args.host, auth)  # before opening the store: a refusal is one quick line
    from jobq.dashboard.server import serve

    with app_for(args) as app:
        shown = f"[{args.host}]" if ":" in args.host else args.host
        sys.stderr.write(
            f"jobq dashboard for {redact_url(app.url)} on http://{shown}:{args.port}/ "
            f"({'authentication required' if auth else 'loopback only, no authentication'}; "
            "Ctrl-C to stop)\n"
        )
        sys.stderr.flush()
        serve(
            app,
            host=args.host,
            port=args.port,
            auth=auth,
            allowed_hosts=args.allowed_host or (),
            log_level=args.log_level.lower(),
        )
    return EXIT_OK


AUTH_HELP = (
    f"Authentication: set ${TOKEN_ENV} to a token (12+ characters; send it as 'Authorization: "
    "Bearer TOKEN', or as the password of the browser's login prompt with any user name), "
    f"and/or ${BASIC_AUTH_ENV}=USER:PASSWORD. Without either, the dashboard serves only on a "
    "loopback address."
)


def add_parser(sub: Any, common: argparse.ArgumentParser, store: argparse.ArgumentParser) -> None:
    """Register ``jobq dashboard`` on the ``jobq`` parser."""
    d = sub.add_parser(
        "dashboard",
        parents=[common, store],
        help="serve the web dashboard",
        description="Serve the web dashboard (overview, jobs, actions, /metrics) over a job "
        "store until Ctrl-C.",
        epilog=AUTH_HELP,
    )
    d.add_argument(
        "app_spec",
        nargs="?",
        metavar="MODULE:APP",
        help="the jobq.App whose store to show (or use --app / --url / $JOBQ_URL)",
    )
    d.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; any other needs authentication)",
    )
    d.add_argument(
        "--port", type=port_arg, default=8080, metavar="PORT", help="port (default: 8080)"
    )
    d.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name the dashboard answers to besides its loopback names, e.g. the name a "
        "reverse proxy forwards (repeatable)",
    )
    d.add_argument(
        "--log-level",
        type=log_level_arg,
        default="INFO",
        metavar="LEVEL",
        help="debug (logs every request), info, warning or error (default: info)",
    )
    d.set_defaults(handler=cmd_dashboard)


def port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use an integer from 1 to 65535")
    return value
