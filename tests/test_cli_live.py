"""The CLI's long-running work: bulk enqueue from a file and ``jobs retry --all`` (with their
progress bars), and the throughput line of ``status --watch``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobq
from jobq.cli import main
from jobq.cli.progress import ProgressBar, Rates


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/c.db"


@pytest.fixture
def app(url: str) -> Iterator[jobq.App]:
    a = jobq.App(url)
    yield a
    a.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_from_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, app: jobq.App
) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        "# orders to confirm\n"
        '[1, "a@example.com"]\n'
        "\n"
        '{"args": [2], "kwargs": {"to": "b@example.com"}}\n'
        '{"kwargs": {"to": "c@example.com"}}\n'
    )
    code, out, err = run(
        capsys, "enqueue", "send", "--from-file", str(calls), "--queue", "mail", "--url", url
    )
    assert (code, err) == (0, "")  # no bar: stderr is not a terminal
    assert out == "enqueued 3 jobs: ids 1..3\n"
    jobs = sorted(app.list_jobs(), key=lambda j: j.id)
    assert [(j.args, j.kwargs, j.queue) for j in jobs] == [
        ([1, "a@example.com"], {}, "mail"),
        ([2], {"to": "b@example.com"}, "mail"),
        ([], {"to": "c@example.com"}, "mail"),
    ]
    code, out, _ = run(capsys, "enqueue", "send", "--from-file", str(calls), "--json", "--url", url)
    assert json.loads(out) == [4, 5, 6]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('[1]\n{"args": 5}\n', "line 2"),
        ("[1]\nnot json\n", "line 2 is not valid JSON"),
        ('{"argz": []}\n', "line 1"),
        ("[NaN]\n", "NaN"),
    ],
)
def test_enqueue_from_bad_file_enqueues_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    app: jobq.App,
    content: str,
    fragment: str,
) -> None:
    calls = tmp_path / "bad.jsonl"
    calls.write_text(content)
    code, out, err = run(capsys, "enqueue", "send", "--from-file", str(calls), "--url", url)
    assert (code, out) == (2, "")
    assert err.startswith("jobq: error: ") and fragment in err
    assert app.list_jobs() == []


def test_enqueue_from_file_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    code, _, err = run(capsys, "enqueue", "t", "--from-file", str(tmp_path / "nope"), "--url", url)
    assert code == 2 and "cannot read --from-file" in err
    (tmp_path / "f").write_text("[1]\n")
    code, _, err = run(
        capsys, "enqueue", "t", "--from-file", str(tmp_path / "f"), "--args", "[2]", "--url", url
    )
    assert code == 2 and "leave out --args" in err


def test_jobs_retry_all(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    @app.task(name="boom", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("no")

    for _ in range(3):
        boom.enqueue()
    boom.options(queue="other").enqueue()
    app.run_worker(queues=["default", "other"], burst=True, threads=1, handle_signals=False)

    code, out, err = run(capsys, "jobs", "retry", "--all", "--queue", "default", "--url", url)
    assert (code, err) == (0, "")
    assert out == "retried 3 dead jobs\n"
    assert app.stats()["default"] == {jobq.JobState.AVAILABLE: 3}
    assert app.stats()["other"] == {jobq.JobState.DEAD: 1}
    code, out, _ = run(capsys, "jobs", "retry", "--all", "--url", url)
    assert out == "retried 1 dead job\n"

    for argv, fragment in (
        (["jobs", "retry"], "--all"),
        (["jobs", "retry", "1", "--all"], "not both"),
        (["jobs", "retry", "1", "--queue", "x"], "add --all"),
        (["jobs", "retry", "--all", "--state", "running"], "invalid choice"),
    ):
        code, _, err = run(capsys, *argv, "--url", url)
        assert code == 2 and fragment in err, (argv, err)


def test_progress_bar_draws_on_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar("retrying", 4, stream=stream, enabled=True) as bar:
        for _ in range(4):
            bar.advance()
    text = stream.getvalue()
    assert text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("retrying [" + "#" * 30 + "] 4/4 100%")
    quiet = io.StringIO()
    with ProgressBar("x", 3, stream=quiet) as bar:  # StringIO is no terminal: nothing drawn
        bar.advance(3)
    assert quiet.getvalue() == ""


def test_rates_between_redraws() -> None:
    rates = Rates()
    assert rates.line({"completed": 10}, now=100.0) is None
    line = rates.line({"completed": 30, "dead": 2}, now=102.0)
    assert line == "last 2.0s: 10.0 completed/s, 1.0 dead/s, 0.0 expired/s"
    # pruning lowers the counts: never a negative rate
    assert rates.line({"completed": 0}, now=104.0) == (
        "last 2.0s: 0.0 completed/s, 0.0 dead/s, 0.0 expired/s"
    )


def test_status_watch_shows_throughput(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run(
        capsys, "status", "--watch", "--interval", "0", "--iterations", "2", "--url", url
    )
    assert code == 0
    assert out.count("measuring throughput") == 1
    assert out.count(" completed/s, ") == 1


def test_dashboard_cli_arguments(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, _, err = run(capsys, "dashboard", "--port", "70000", "--url", url)
    assert code == 2 and "invalid port" in err
    code, _, err = run(capsys, "dashboard", "some.module:app", "--url", url)
    assert code == 2 and "not both" in err
