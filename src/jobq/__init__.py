"""jobq: a durable job queue for Python — embedded on SQLite, priorities, deadlines, retries.

Quick start::

    import jobq

    app = jobq.App("sqlite:///jobs.db")

    @app.task(queue="emails", max_attempts=5)
    def send_email(order_id: int, to: str) -> str: ...

    send_email.enqueue(42, "a@example.com")
    app.run_worker(queues=["emails"], threads=8)
"""

from jobq.app import App
from jobq.backends.base import Backend, QueueSettings, WorkerInfo
from jobq.context import RunningJob, current_job
from jobq.control import Cancel, Cancelled, Retry, Snooze
from jobq.cron import Cron
from jobq.exceptions import (
    BackendError,
    ConfigurationError,
    DatabaseOpenError,
    DependencyError,
    InvalidJobError,
    InvalidTransition,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    JobOutcomeError,
    JobqError,
    LockError,
    LockLost,
    LockTimeout,
    NoCurrentJob,
    PayloadError,
    QueueFull,
    SchemaVersionError,
    UniqueConflict,
    UnknownTaskError,
    WaitTimeout,
)
from jobq.group import Group
from jobq.job import AttemptError, Job, JobRecord
from jobq.locks import Lock
from jobq.options import RateLimit
from jobq.periodic import Periodic
from jobq.retry import ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy
from jobq.states import JobState
from jobq.task import Call, Task, TaskCall
from jobq.worker import Aging, Worker, WorkerSummary

__version__ = "0.1.0"

__all__ = [
    "Aging",
    "App",
    "AttemptError",
    "Backend",
    "BackendError",
    "Call",
    "Cancel",
    "Cancelled",
    "ConfigurationError",
    "Cron",
    "DatabaseOpenError",
    "DependencyError",
    "ExponentialBackoff",
    "FixedDelay",
    "Group",
    "InvalidJobError",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "JobOutcomeError",
    "JobRecord",
    "JobState",
    "JobqError",
    "Lock",
    "LockError",
    "LockLost",
    "LockTimeout",
    "NoCurrentJob",
    "NoRetry",
    "PayloadError",
    "Periodic",
    "QueueFull",
    "QueueSettings",
    "RateLimit",
    "Retry",
    "RetryPolicy",
    "RunningJob",
    "SchemaVersionError",
    "Snooze",
    "Task",
    "TaskCall",
    "UniqueConflict",
    "UnknownTaskError",
    "WaitTimeout",
    "Worker",
    "WorkerInfo",
    "WorkerSummary",
    "current_job",
]
