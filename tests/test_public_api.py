"""The public surface is pinned: additions are deliberate, removals are breaking."""

from __future__ import annotations

import jobq
from jobq import exceptions


def test_all_is_sorted_and_importable() -> None:
    assert list(jobq.__all__) == sorted(jobq.__all__)
    for name in jobq.__all__:
        assert hasattr(jobq, name), name


def test_contract_names_exist() -> None:
    for name in ["App", "Job", "JobState", "Retry", "Cancel", "Snooze", "current_job", "JobqError"]:
        assert name in jobq.__all__


def test_every_error_derives_from_jobq_error() -> None:
    for name in dir(exceptions):
        obj = getattr(exceptions, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == exceptions.__name__
        ):
            assert issubclass(obj, jobq.JobqError), name
            assert name in (exceptions.__doc__ or ""), f"{name} missing from the hierarchy doc"
