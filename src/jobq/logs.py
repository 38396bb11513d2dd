"""Structured logging: every line logged while a job runs, and every line jobq logs about a
job's start and end, carries the job's ``job_id``, ``task``, ``queue`` and ``attempt``.

* :class:`JobContextFilter` adds those four attributes to each log record: the values a line
  passed with ``extra=job_fields(record)``, else those of the job running in the current thread
  or asyncio task (:func:`jobq.current_job`), else None. Lines that a task's own code logs get
  them too.
* :class:`TextFormatter` appends ``[job=42 task=send queue=mail attempt=1]`` to such lines;
  :class:`JsonFormatter` writes one JSON object per line (``time``, ``level``, ``logger``,
  ``message``, the job fields, ``exception``).
* :func:`make_handler` builds a handler with both; ``jobq worker --log-format json`` uses it.

Job arguments are never logged here (they may hold secrets).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from jobq.context import _current
from jobq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from jobq.job import JobRecord

#: The attributes :class:`JobContextFilter` adds to every log record.
JOB_FIELDS = ("job_id", "task", "queue", "attempt")
#: Values of ``jobq worker --log-format``.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_fields(record: JobRecord) -> dict[str, Any]:
    """``extra=`` for a log line about ``record``: its id, task, queue and attempt."""
    return {
        "job_id": record.id,
        "task": record.task,
        "queue": record.queue,
        "attempt": record.attempt,
    }


class JobContextFilter(logging.Filter):
    """Adds :data:`JOB_FIELDS` to each record (see the module docstring); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            job = _current.get()
            fields: dict[str, Any] = (
                job_fields(job.record) if job is not None else dict.fromkeys(JOB_FIELDS)
            )
            for name, value in fields.items():
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` plus ``[job=.. task=.. queue=.. attempt=..]`` on job
    lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if getattr(record, "job_id", None) is None:
            return text
        tag = " ".join(
            f"{'job' if f == 'job_id' else f}={getattr(record, f, None)}" for f in JOB_FIELDS
        )
        first, sep, rest = text.partition("\n")  # keep a traceback below the tagged line
        return f"{first} [{tag}]{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO-8601), ``level``, ``logger``, ``message``,
    the job fields when set, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``log_format``, one of :data:`LOG_FORMATS`."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ConfigurationError(f"unknown log format {log_format!r}; use one of: text, json")


def make_handler(stream: IO[str], log_format: str = "text") -> logging.Handler:
    """A stream handler writing ``log_format`` lines that carry the job fields."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(JobContextFilter())
    return handler
