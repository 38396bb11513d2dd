"""The flow-control commands: ``jobq queues``, ``jobq prune``, ``jobq jobs delete`` and the bulk
form of ``jobq jobs cancel`` — what they print, what they change, and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobq
from jobq.cli.commands import _child_args
from jobq.cli.parser import build_parser
from tests.test_cli import assert_one_error, run


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/j.db"


@pytest.fixture
def app(url: str) -> Iterator[jobq.App]:
    a = jobq.App(url)
    yield a
    a.close()


def test_queues_pause_list_resume_and_max_depth(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    app.enqueue("t", queue="mail")
    code, out, err = run(capsys, "queues", "pause", "mail", "bills", "--url", url)
    assert code == 0, err
    assert "queue mail: paused" in out and "queue bills: paused" in out
    code, out, _ = run(capsys, "queues", "set-max-depth", "mail", "1000", "--url", url)
    assert code == 0 and "at most 1,000 waiting jobs" in out
    code, out, _ = run(capsys, "queues", "list", "--url", url)
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "PAUSED", "MAX", "DEPTH", "WAITING", "RUNNING", "DEAD"]
    assert lines[1].split() == ["bills", "yes", "-", "0", "0", "0"]
    assert lines[2].split() == ["mail", "yes", "1000", "1", "0", "0"]
    code, out, _ = run(capsys, "queues", "resume", "mail", "--url", url)
    assert code == 0 and "queue mail: resumed" in out
    run(capsys, "queues", "set-max-depth", "mail", "none", "--url", url)
    code, out, _ = run(capsys, "queues", "list", "--json", "--url", url)
    doc = json.loads(out)
    assert doc["mail"]["paused"] is False and doc["mail"]["max_depth"] is None
    assert doc["mail"]["counts"]["available"] == 1
    assert app.queues()["bills"].paused


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["queues", "set-max-depth", "mail", "0"], "invalid max depth '0'"),
        (["queues", "set-max-depth", "mail", "lots"], "invalid max depth 'lots'"),
        (["queues", "pause", "bad name"], "invalid queue name 'bad name'"),
        (["jobs", "cancel"], "needs job ids, or --queue/--state/--task"),
        (["jobs", "cancel", "1", "--queue", "q"], "not both"),
        (["jobs", "cancel", "--state", "dead"], "invalid choice"),
        (["prune", "--keep", "-1"], "invalid --keep -1"),
        (["prune", "--state", "running"], "invalid choice"),
    ],
)
def test_bad_flow_arguments_are_one_error_line(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], fragment: str
) -> None:
    code, _, err = run(capsys, *argv, "--url", url)
    assert code != 0
    assert_one_error(err, fragment)


def test_bulk_cancel_delete_and_prune(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    mail = [app.enqueue("send", queue="mail") for _ in range(3)]
    other = app.enqueue("send", queue="other")
    code, out, err = run(capsys, "jobs", "cancel", "--queue", "mail", "--url", url)
    assert code == 0, err
    assert out.strip() == "cancelled 3 jobs"
    assert other.refresh().state is jobq.JobState.AVAILABLE
    code, out, _ = run(capsys, "jobs", "delete", str(mail[0].id), "--url", url)
    assert code == 0 and f"job {mail[0].id}: deleted" in out
    code, _, err = run(capsys, "jobs", "delete", str(mail[0].id), "--url", url)
    assert code != 0 and f"no job with id {mail[0].id}" in err
    code, out, _ = run(capsys, "prune", "--state", "cancelled", "--keep", "1", "--url", url)
    assert code == 0 and out.strip() == "deleted 1 finished job"
    assert app.stats()["mail"] == {jobq.JobState.CANCELLED: 1}


def test_delete_refuses_a_running_job(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    job = app.enqueue("slow")
    (claimed,) = app.backend.claim(["default"], 1, worker_id="w", lease=app.lease)
    assert claimed.id == job.id
    code, _, err = run(capsys, "jobs", "delete", str(job.id), "--url", url)
    assert code != 0 and "running" in err and "cancel it first" in err
    assert app.get_job(job.id).state is jobq.JobState.RUNNING


def test_jobs_show_lists_progress_dependencies_and_redacts_secrets(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    @app.task(name="login", secret=["password"])
    def login(user: str, password: str) -> None: ...

    first = login.enqueue("ann", "s3cret-value")
    second = login.options(depends_on=[first]).enqueue("bob", password="other-secret")
    code, out, _ = run(capsys, "jobs", "show", str(second.id), "--url", url)
    assert code == 0
    assert "other-secret" not in out and '"password": "***"' in out
    assert "depends_on:" in out and str(first.id) in out
    code, out, _ = run(capsys, "jobs", "show", str(first.id), "--json", "--url", url)
    assert json.loads(out)["args"] == ["ann", "***"]


def test_worker_passes_cancel_grace_to_its_processes() -> None:
    args = build_parser().parse_args(["worker", "m:app", "--cancel-grace", "2.5"])
    assert "--cancel-grace=2.5" in _child_args(args)
