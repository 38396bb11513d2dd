"""Every error jobq raises on purpose derives from :class:`JobqError`.

Hierarchy::

    JobqError
    ├── ConfigurationError        bad URL, option or worker setting
    ├── InvalidJobError (ValueError)   refused at enqueue; nothing was written
    │   ├── PayloadError          arguments or result not exact JSON, or too large
    │   └── DependencyError       depends_on names an unknown job (or makes a cycle)
    ├── QueueFull                 the queue is at its max_depth (backpressure); nothing written
    ├── BackendError              the store could not be opened or used
    │   ├── DatabaseOpenError     unreadable/unwritable path, WAL unsupported, …
    │   └── SchemaVersionError    the database was written by a newer jobq
    ├── JobNotFound (LookupError) no job with that id
    ├── UnknownTaskError (LookupError)  a task name this app has not registered
    ├── InvalidTransition         e.g. retrying a job that is still running
    ├── UniqueConflict            another active job holds that ``unique_key``
    ├── LockError                 a distributed lock (``App.lock``) could not be used
    │   ├── LockTimeout (TimeoutError)  not acquired within the wait
    │   └── LockLost              the lease ran out (or was taken over) while held
    ├── NoCurrentJob (RuntimeError)     ``current_job()`` outside a running task
    ├── WaitTimeout (TimeoutError)      ``Job.wait()`` ran out of time
    └── JobOutcomeError           ``Job.wait()`` on a job that did not complete
        ├── JobFailed             ended ``dead``
        ├── JobCancelled          ended ``cancelled``
        └── JobExpired            ended ``expired``

Messages say what was wrong, with which value, and what to do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobq.job import JobRecord


class JobqError(Exception):
    """Root of every exception jobq raises on purpose."""


class ConfigurationError(JobqError):
    """A URL, option or setting is invalid."""


class InvalidJobError(JobqError, ValueError):
    """A job was refused at enqueue; nothing was written."""


class PayloadError(InvalidJobError):
    """Arguments or a result are not JSON that round-trips exactly, or are too large."""


class DependencyError(InvalidJobError):
    """``depends_on`` names a job that does not exist, or would form a cycle."""


class QueueFull(JobqError):
    """The queue holds ``max_depth`` waiting jobs already; nothing was written."""


class BackendError(JobqError):
    """The job store could not be opened or used."""


class DatabaseOpenError(BackendError):
    """The database could not be opened for safe, durable use."""


class SchemaVersionError(BackendError):
    """The database schema is newer than this version of jobq understands."""


class JobNotFound(JobqError, LookupError):
    """No job has the given id (it may have been pruned)."""


class UnknownTaskError(JobqError, LookupError):
    """A task name is not registered with this app."""


class InvalidTransition(JobqError):
    """The requested change is not allowed from the job's current state."""


class UniqueConflict(JobqError):
    """Another active job already holds the same ``unique_key``."""


class LockError(JobqError):
    """A distributed lock could not be used."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not acquired within the wait."""


class LockLost(LockError):
    """The lock's lease ran out, or another holder took it over, while it was held."""


class NoCurrentJob(JobqError, RuntimeError):
    """``jobq.current_job()`` was called outside a running task."""


class WaitTimeout(JobqError, TimeoutError):
    """``Job.wait()`` gave up before the job finished."""


class JobOutcomeError(JobqError):
    """``Job.wait()`` was asked for the result of a job that did not complete."""

    def __init__(self, message: str, record: JobRecord) -> None:
        super().__init__(message)
        self.record = record


class JobFailed(JobOutcomeError):
    """The job ended ``dead``: it failed ``max_attempts`` times or could not run."""


class JobCancelled(JobOutcomeError):
    """The job ended ``cancelled``."""


class JobExpired(JobOutcomeError):
    """The job ended ``expired``: its deadline passed before it could start."""
