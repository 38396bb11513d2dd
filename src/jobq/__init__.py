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
from jobq.backends.base import Backend, WorkerInfo
from jobq.context import current_job
from jobq.control import Cancel, Retry, Snooze
from jobq.exceptions import (
    BackendError,
    ConfigurationError,
    DatabaseOpenError,
    InvalidJobError,
    InvalidTransition,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    JobOutcomeError,
    JobqError,
    NoCurrentJob,
    PayloadError,
    SchemaVersionError,
    UniqueConflict,
    UnknownTaskError,
    WaitTimeout,
)
from jobq.job import AttemptError, Job, JobRecord
from jobq.retry import ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy
from jobq.states import JobState
from jobq.task import Task, TaskCall
from jobq.worker import Aging, Worker, WorkerSummary

__version__ = "0.1.0"

__all__ = [
    "Aging",
    "App",
    "AttemptError",
    "Backend",
    "BackendError",
    "Cancel",
    "ConfigurationError",
    "DatabaseOpenError",
    "ExponentialBackoff",
    "FixedDelay",
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
    "NoCurrentJob",
    "NoRetry",
    "PayloadError",
    "Retry",
    "RetryPolicy",
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
