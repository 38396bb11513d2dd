"""A group: jobs enqueued together, with one handle to wait on and optional callback jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobq.exceptions import WaitTimeout
from jobq.job import Job, _outcome_error, wait_until
from jobq.states import JobState

if TYPE_CHECKING:
    from jobq.app import App


class Group:
    """The jobs of one :meth:`jobq.App.group` call and its callbacks."""

    def __init__(
        self, app: App, jobs: list[Job], on_complete: Job | None, on_success: Job | None
    ) -> None:
        self._app = app
        self.jobs = jobs
        #: runs once every job finished, however it ended (None if not asked for)
        self.on_complete = on_complete
        #: runs only if every job completed; cancelled otherwise (None if not asked for)
        self.on_success = on_success

    def __repr__(self) -> str:
        return f"<Group of {len(self.jobs)} jobs {self.counts()}>"

    @property
    def ids(self) -> list[int]:
        return [j.id for j in self.jobs]

    def refresh(self) -> Group:
        """Re-read every job of the group (and its callbacks) from the store."""
        for job in [*self.jobs, self.on_complete, self.on_success]:
            if job is not None:
                job.refresh()
        return self

    def counts(self) -> dict[str, int]:
        """How many of the group's jobs are in each state (from the last refresh)."""
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.state.value] = out.get(job.state.value, 0) + 1
        return out

    @property
    def done(self) -> bool:
        """Whether every job of the group has finished (from the last refresh)."""
        return all(job.state.is_terminal for job in self.jobs)

    def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> list[Any]:
        """Block until every job of the group finished; return their results in order.

        Raises :class:`jobq.JobFailed` / ``JobCancelled`` / ``JobExpired`` for the first job
        (in order) that did not complete, and :class:`jobq.WaitTimeout` after ``timeout``.
        """
        if not wait_until(lambda: self.refresh().done, timeout, poll):
            raise WaitTimeout(
                f"group of {len(self.jobs)} jobs not finished after {timeout}s: {self.counts()}"
            )
        for job in self.jobs:
            if job.state is not JobState.COMPLETED:
                raise _outcome_error(job.record)
        return [job.result() for job in self.jobs]
