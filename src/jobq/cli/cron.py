"""``jobq cron list``: the periodic schedules, with their last tick (from the job store) and
their next one.

Schedules are defined in code, so the full table needs ``--app MODULE:APP``; with ``--url`` only,
the schedules that have ever enqueued a tick are listed from the store, without expressions.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobq.app import App
from jobq.cli.apps import app_for
from jobq.cli.errors import EXIT_OK
from jobq.cli.render import dumps, format_table, out, when
from jobq.periodic import Periodic, Scheduler


def app_schedules(app: App) -> Mapping[str, Periodic]:
    """The periodic schedules registered with ``app`` (none if it has no scheduler)."""
    scheduler = getattr(app, "scheduler", None)
    return scheduler.schedules if isinstance(scheduler, Scheduler) else {}


def cron_entries(
    schedules: Mapping[str, Periodic], stored: Mapping[str, datetime], now: datetime
) -> list[dict[str, Any]]:
    """One JSON-ready entry per schedule of the app, then per name only the store knows,
    sorted by name."""
    entries: list[dict[str, Any]] = []
    for name in sorted(set(schedules) | set(stored)):
        p = schedules.get(name)
        last = stored.get(name)
        entries.append(
            {
                "name": name,
                "cron": p.cron.expression if p else None,
                "timezone": p.cron.timezone if p else None,
                "task": p.task if p else None,
                "missed": p.missed if p else None,
                "catch_up_limit": p.catch_up_limit if p and p.missed == "catch_up" else None,
                "last_tick": last,
                "next_tick": p.cron.next_after(max(now, last) if last else now) if p else None,
                "registered": p is not None,
            }
        )
    return entries


def cmd_cron_list(args: argparse.Namespace) -> int:
    """``jobq cron list [--json]``."""
    with app_for(args) as app:
        schedules = app_schedules(app)
        entries = cron_entries(schedules, app.backend.cron_ticks(), app.backend.now())
    if args.json:
        out(dumps(entries))
        return EXIT_OK
    if not entries:
        out("no periodic schedules" + ("" if args.app else _NEED_APP))
        return EXIT_OK
    header = ["NAME", "CRON", "TIMEZONE", "TASK", "MISSED", "LAST TICK", "NEXT TICK"]
    rows = [
        [
            e["name"],
            e["cron"] or "-",
            e["timezone"] or "-",
            e["task"] or ("(not in this app)" if args.app else "-"),
            _missed(e),
            when(e["last_tick"]),
            when(e["next_tick"]),
        ]
        for e in entries
    ]
    out(format_table(header, rows))
    if not schedules and not args.app:
        out()
        out(_NEED_APP.strip())
    return EXIT_OK


_NEED_APP = (
    " (schedules are defined in code: pass --app MODULE:APP to list the app's schedules with "
    "their expressions and next ticks)"
)


def _missed(entry: Mapping[str, Any]) -> str:
    if entry["missed"] is None:
        return "-"
    if entry["missed"] == "catch_up":
        return f"catch_up:{entry['catch_up_limit']}"
    return str(entry["missed"])
