"""Exceptions a task raises to steer its own job: :class:`Retry`, :class:`Cancel`, :class:`Snooze`.

They are control flow, not errors, so they do not derive from :class:`jobq.JobqError`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from jobq.clock import as_duration, require_aware


class Retry(Exception):
    """Fail this attempt and run again after ``delay`` (counts toward ``max_attempts``).

    With ``delay=None`` the task's retry policy picks the delay.
    """

    def __init__(self, delay: timedelta | float | None = None, reason: str = "") -> None:
        self.delay = None if delay is None else as_duration(delay, "Retry delay")
        self.reason = reason
        super().__init__(reason or f"retry requested (delay={self.delay})")


class Cancel(Exception):
    """Stop now and mark the job ``cancelled``; it is not retried."""

    def __init__(self, reason: str = "cancelled by the task") -> None:
        self.reason = reason
        super().__init__(reason)


class Snooze(Exception):
    """Run again at ``until`` (a datetime) or after a delay; does not use up an attempt."""

    def __init__(self, until: datetime | timedelta | float) -> None:
        self.at: datetime | None = None
        self.delay: timedelta | None = None
        if isinstance(until, datetime):
            self.at = require_aware(until, "Snooze until")
        else:
            self.delay = as_duration(until, "Snooze delay")
        super().__init__(f"snoozed until {self.at or self.delay}")


#: What a task sees when its job is cancelled while running and the worker stops it: asyncio's
#: ``CancelledError`` in an ``async def`` task (at its next ``await``), and the same exception
#: raised into a thread task that ignored ``current_job().cancel_requested`` past the worker's
#: ``cancel_grace``. A ``BaseException``: ``except Exception`` does not swallow it.
Cancelled = asyncio.CancelledError
