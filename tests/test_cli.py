"""The ``jobq`` command line: in-process for the store commands, subprocesses for the worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

import jobq
from jobq import cli
from jobq.cli import main

DEADLINE = 60.0  # generous: only reached when something is broken


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/j.db"


@pytest.fixture
def app(url: str) -> Iterator[jobq.App]:
    a = jobq.App(url)
    yield a
    a.close()


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """cwd = tmp_path (where tests write app modules); sys.path and sys.modules restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or ""):
            del sys.modules[name]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jobq: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


def enqueue(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> int:
    code, out, err = run(capsys, "enqueue", *argv, "--url", url)
    assert code == 0, err
    return int(out.strip())


# -- enqueue -------------------------------------------------------------------------------------


def test_enqueue_prints_the_new_id_and_stores_the_job(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    first = enqueue(
        capsys,
        url,
        "send",
        "--args",
        '[1, "a"]',
        "--kwargs",
        '{"to": "x"}',
        "--priority",
        "7",
        "--queue",
        "mail",
    )
    second = enqueue(capsys, url, "send")
    assert second == first + 1
    job = app.get_job(first)
    assert (job.task, job.queue, job.priority) == ("send", "mail", 7)
    assert job.args == [1, "a"]
    assert job.kwargs == {"to": "x"}
    assert job.state is jobq.JobState.AVAILABLE
    assert app.get_job(second).args == []


def test_enqueue_json_and_delay(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = run(
        capsys, "enqueue", "later", "--args", "[]", "--delay", "3600", "--json", "--url", url
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["task"] == "later"
    assert data["state"] == "scheduled"
    assert data["errors"] == []
    created = datetime.fromisoformat(data["created_at"])
    run_at = datetime.fromisoformat(data["run_at"])
    assert created.tzinfo is not None
    assert 3599 <= (run_at - created).total_seconds() <= 3601


def test_url_from_environment(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBQ_URL", url)
    code, out, err = run(capsys, "enqueue", "t")
    assert code == 0, err
    assert out.strip() == "1"


def test_app_option_uses_the_apps_store(
    capsys: pytest.CaptureFixture[str], in_tmp_dir: Path, url: str, app: jobq.App
) -> None:
    (in_tmp_dir / "cli_opt_app.py").write_text(
        textwrap.dedent(f"""
        import jobq
        app = jobq.App({url!r})

        @app.task(name="hello", queue="greetings", priority=3)
        def hello(name):
            return "hi " + name
    """)
    )
    code, out, err = run(capsys, "enqueue", "hello", "--args", '["x"]', "--app", "cli_opt_app:app")
    assert code == 0, err
    job = app.get_job(int(out))
    assert (job.queue, job.priority) == ("greetings", 3)  # the registered task's defaults


# -- status --------------------------------------------------------------------------------------


def _status_fixture(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    enqueue(capsys, url, "a", "--queue", "high")
    enqueue(capsys, url, "a", "--queue", "high")
    enqueue(capsys, url, "b", "--queue", "low", "--delay", "600")
    cancelled = enqueue(capsys, url, "b", "--queue", "low")
    assert app.cancel(cancelled)


def test_status_table(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    _status_fixture(capsys, url, app)
    code, out, err = run(capsys, "status", "--url", url)
    assert code == 0, err
    lines = out.split("\n\n")[0].splitlines()  # the counts table; the workers follow
    header = lines[0].split()
    assert header == ["QUEUE", *(s.value for s in jobq.JobState), "total"]
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in lines[1:]}
    states = list(jobq.JobState)
    high, low, total = rows["high"], rows["low"], rows["total"]
    assert high[states.index(jobq.JobState.AVAILABLE)] == 2
    assert low[states.index(jobq.JobState.SCHEDULED)] == 1
    assert low[states.index(jobq.JobState.CANCELLED)] == 1
    assert total == [h + lo for h, lo in zip(high, low, strict=True)]
    assert total[-1] == 4
    assert list(rows) == ["high", "low", "total"]
    assert len({len(line) for line in lines}) == 1  # aligned: right-justified to equal widths


def test_status_empty_store(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run(capsys, "status", "--url", url)
    assert code == 0
    counts, workers = out.split("\n\n")
    assert counts.splitlines()[-1].split() == ["total"] + ["0"] * (len(jobq.JobState) + 1)
    assert workers.strip() == "no worker processes registered"


def test_status_json(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    _status_fixture(capsys, url, app)
    code, out, _ = run(capsys, "status", "--json", "--url", url)
    assert code == 0
    data = json.loads(out)
    assert list(data["queues"]["high"]) == [s.value for s in jobq.JobState]
    assert data["queues"]["high"]["available"] == 2
    assert data["queues"]["low"] == {
        **dict.fromkeys([s.value for s in jobq.JobState], 0),
        "scheduled": 1,
        "cancelled": 1,
    }
    assert data["total"]["available"] == 2


def test_status_watch_redraws(capsys: pytest.CaptureFixture[str], url: str) -> None:
    enqueue(capsys, url, "a")
    code, out, _ = run(
        capsys, "status", "--watch", "--interval", "0", "--iterations", "3", "--url", url
    )
    assert code == 0
    assert out.count("\x1b[2J") == 3
    assert out.count("QUEUE") == 3


def test_status_watch_stops_on_ctrl_c(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    code, out, err = run(capsys, "status", "--watch", "--url", url)
    assert code == 0
    assert out.count("QUEUE") == 1
    assert err == ""


# -- jobs list / show ----------------------------------------------------------------------------


def test_jobs_list_filters(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    a = enqueue(capsys, url, "alpha", "--queue", "q1")
    b = enqueue(capsys, url, "beta", "--queue", "q2")
    c = enqueue(capsys, url, "alpha", "--queue", "q2")
    app.cancel(c)

    code, out, _ = run(capsys, "jobs", "list", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "QUEUE", "TASK"]
    assert [int(line.split()[0]) for line in lines[1:]] == [c, b, a]  # newest first

    def ids(*argv: str) -> list[int]:
        code, out, err = run(capsys, "jobs", "list", "--json", "--url", url, *argv)
        assert code == 0, err
        return [j["id"] for j in json.loads(out)]

    assert ids("--state", "cancelled") == [c]
    assert ids("--queue", "q2") == [c, b]
    assert ids("--task", "alpha") == [c, a]
    assert ids("--limit", "1") == [c]
    assert ids("--before", str(b)) == [a]
    assert ids("--task", "nothing") == []

    code, out, _ = run(capsys, "jobs", "list", "--task", "nothing", "--url", url)
    assert (code, out) == (0, "no jobs\n")


def test_jobs_show_everything(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    @app.task(name="boom", max_attempts=1)
    def boom(x: int) -> None:
        raise ZeroDivisionError(f"cannot divide {x}")

    @app.task(name="ok")
    def ok(x: int, y: int = 0) -> dict[str, int]:
        return {"sum": x + y}

    failed = enqueue(capsys, url, "boom", "--args", "[5]")
    done = enqueue(capsys, url, "ok", "--args", "[1]", "--kwargs", '{"y": 2}')
    app.run_worker(burst=True, threads=1, handle_signals=False, queues=["default"])

    code, out, err = run(capsys, "jobs", "show", str(failed), "--url", url)
    assert code == 0, err
    # enqueued by name with the default 3 attempts: waiting for its retry
    assert re.search(r"^state:\s+scheduled$", out, re.M), out
    assert re.search(r"^args:\s+\[5\]$", out, re.M), out
    assert "ZeroDivisionError: cannot divide 5" in out
    assert "Traceback (most recent call last)" in out  # the attempt's traceback

    code, out, _ = run(capsys, "jobs", "show", str(done), "--json", "--url", url)
    assert code == 0
    data = json.loads(out)
    assert data["state"] == "completed"
    assert data["args"] == [1]
    assert data["kwargs"] == {"y": 2}
    assert data["result"] == {"sum": 3}
    assert datetime.fromisoformat(data["finished_at"]) >= datetime.fromisoformat(data["started_at"])

    code, out, _ = run(capsys, "jobs", "show", str(failed), "--json", "--url", url)
    [error] = json.loads(out)["errors"]
    assert error["type"] == "ZeroDivisionError"
    assert error["attempt"] == 1
    assert "Traceback" in error["traceback"]
    datetime.fromisoformat(error["at"])


# -- jobs retry / cancel ---------------------------------------------------------------------


def test_jobs_cancel_and_retry(capsys: pytest.CaptureFixture[str], url: str, app: jobq.App) -> None:
    a = enqueue(capsys, url, "t")
    b = enqueue(capsys, url, "t")

    code, out, err = run(capsys, "jobs", "cancel", str(a), str(b), "--url", url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"job {a}: cancelled", f"job {b}: cancelled"]
    assert app.get_job(a).state is jobq.JobState.CANCELLED

    code, out, _ = run(capsys, "jobs", "cancel", str(a), "--url", url)
    assert (code, out) == (0, f"job {a}: already cancelled\n")

    code, out, err = run(capsys, "jobs", "retry", str(a), "--url", url)
    assert (code, err) == (0, "")
    assert out == f"job {a}: retried, now available\n"
    assert app.get_job(a).state is jobq.JobState.AVAILABLE

    # A job that has not finished cannot be retried: the rest are still handled.
    code, out, err = run(capsys, "jobs", "retry", str(a), str(b), "--url", url)
    assert code == 1
    assert out == f"job {b}: retried, now available\n"
    assert_one_error(err, f"job {a}", "available")


def test_jobs_cancel_finished_job_fails(
    capsys: pytest.CaptureFixture[str], url: str, app: jobq.App
) -> None:
    @app.task(name="ok")
    def ok() -> int:
        return 1

    job_id = enqueue(capsys, url, "ok")
    app.run_worker(burst=True, threads=1, handle_signals=False, queues=["default"])
    code, out, err = run(capsys, "jobs", "cancel", str(job_id), "--url", url)
    assert (code, out) == (1, "")
    assert_one_error(err, f"job {job_id}", "completed")


def test_jobs_retry_and_cancel_unknown_ids(capsys: pytest.CaptureFixture[str], url: str) -> None:
    for action in ("retry", "cancel"):
        code, out, err = run(capsys, "jobs", action, "404", "--url", url)
        assert (code, out) == (1, "")
        assert_one_error(err, "404")


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragments"),
    [
        (["enqueue", "t", "--args", "{oops"], 2, ["--args", "{oops", "not valid JSON"]),
        (["enqueue", "t", "--args", '{"a": 1}'], 2, ["--args", "JSON array"]),
        (["enqueue", "t", "--kwargs", "[1]"], 2, ["--kwargs", "JSON object"]),
        (["enqueue", "t", "--args", "[NaN]"], 2, ["NaN"]),
        (["enqueue", "t", "--priority", "high"], 2, ["--priority", "high"]),
        (["enqueue", "t", "--delay", "-1"], 2, ["--delay", "-1"]),
        (["enqueue", "t", "--queue=-bad"], 2, ["-bad"]),
        (["enqueue", "t", "--queue", "a b"], 2, ["'a b'"]),
        (["enqueue", "t", "--priority", "99999999"], 2, ["99999999"]),
        (["jobs", "list", "--state", "bogus"], 2, ["bogus", "available"]),
        (["jobs", "list", "--limit", "0"], 2, ["--limit", "'0'"]),
        (["jobs", "show", "999"], 1, ["999"]),
        (["jobs", "show", "abc"], 2, ["abc", "job id"]),
        (["jobs", "show"], 2, ["ID"]),
        (["jobs", "frob"], 2, ["frob"]),
        (["frob"], 2, ["frob"]),
        ([], 2, ["COMMAND"]),
        (["status", "--bogus"], 2, ["--bogus"]),
    ],
)
def test_error_paths(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], code: int, fragments: list[str]
) -> None:
    needs_store = bool(argv) and argv[0] in ("enqueue", "jobs", "status")
    got, out, err = run(capsys, *argv, *(["--url", url] if needs_store else []))
    assert got == code, err
    assert out == ""
    assert_one_error(err, *fragments)


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("no_colon_here", ["no_colon_here", "MODULE:APP"]),
        ("bad module:app", ["bad module:app", "MODULE:APP"]),
        ("jobq_no_such_module_xyz:app", ["jobq_no_such_module_xyz", "PYTHONPATH"]),
        ("cli_bad_apps:missing", ["cli_bad_apps", "'missing'"]),
        ("cli_bad_apps:not_an_app", ["cli_bad_apps:not_an_app", "int", "jobq.App"]),
    ],
)
def test_bad_app_spec(
    capsys: pytest.CaptureFixture[str], in_tmp_dir: Path, spec: str, fragments: list[str]
) -> None:
    (in_tmp_dir / "cli_bad_apps.py").write_text("not_an_app = 42\n")
    for argv in (["worker", spec, "--burst"], ["status", "--app", spec]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), err
        assert_one_error(err, *fragments)


def test_app_module_that_fails_to_import(
    capsys: pytest.CaptureFixture[str], in_tmp_dir: Path
) -> None:
    (in_tmp_dir / "cli_broken_app.py").write_text("import jobq_missing_dependency_xyz\n")
    (in_tmp_dir / "cli_raising_app.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    code, _, err = run(capsys, "worker", "cli_broken_app:app")
    assert code == 1
    assert_one_error(err, "cli_broken_app", "jobq_missing_dependency_xyz", "--traceback")
    code, _, err = run(capsys, "worker", "cli_raising_app:app")
    assert code == 1
    assert_one_error(err, "cli_raising_app", "RuntimeError: boom second line")


@pytest.mark.parametrize(
    ("store", "code", "fragments"),
    [
        ("redis://user:secret@db/jobs", 2, ["redis://user:***@db/jobs", "sqlite:///"]),
        (
            "postgresql://user:secret@127.0.0.1:1/jobs",
            1,
            ["cannot connect to PostgreSQL", "postgresql://user:***@127.0.0.1:1/jobs"],
        ),
        ("", 2, ["sqlite:///"]),
        ("sqlite://", 2, ["sqlite://"]),
        ("sqlite:///{tmp}/missing/dir/j.db", 1, ["missing/dir", "does not exist"]),
        ("sqlite:///{tmp}/a_file/j.db", 1, ["a_file"]),
    ],
)
def test_bad_store_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store: str, code: int, fragments: list[str]
) -> None:
    (tmp_path / "a_file").write_text("a file, not a directory")
    store = store.format(tmp=tmp_path)
    for argv in (["status"], ["enqueue", "t"], ["jobs", "list"], ["jobs", "show", "1"]):
        got, out, err = run(capsys, *argv, "--url", store)
        assert (got, out) == (code, ""), err
        assert_one_error(err, *fragments)
        assert "secret" not in err


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root can write to read-only directories",
)
def test_unwritable_db_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "status", "--url", f"sqlite:///{ro}/j.db")
    finally:
        ro.chmod(0o700)
    assert code == 1
    assert_one_error(err, str(ro))


def test_no_store_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBQ_URL", raising=False)
    code, out, err = run(capsys, "status")
    assert (code, out) == (2, "")
    assert_one_error(err, "--url", "JOBQ_URL")


def test_url_and_app_are_exclusive(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, _, err = run(capsys, "status", "--url", url, "--app", "x:app")
    assert code == 2
    assert_one_error(err, "--app", "--url")


def test_traceback_flag(capsys: pytest.CaptureFixture[str], url: str) -> None:
    for argv in (["--traceback", "jobs", "show", "7"], ["jobs", "show", "7", "--traceback"]):
        code, out, err = run(capsys, *argv, "--url", url)
        assert (code, out) == (1, "")
        assert "Traceback (most recent call last)" in err
        assert "JobNotFound" in err
        assert err.splitlines()[-1].startswith("jobq: error: no job with id 7")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["worker", "--help"], ["jobs", "list", "--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert "usage: jobq" in out
    _, out, _ = run(capsys, "status", "--help")
    assert "--iterations" not in out  # a testing aid, not documented


# -- parsing helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "queues", "weights"),
    [
        ("default", ["default"], None),
        ("a,b", ["a", "b"], None),
        (" a , b ", ["a", "b"], None),
        ("high:3,low:1", ["high", "low"], {"high": 3, "low": 1}),
        ("high:3,low", ["high", "low"], {"high": 3, "low": 1}),
        ("tenant:eu,bulk:2", ["tenant:eu", "bulk"], {"tenant:eu": 1, "bulk": 2}),
    ],
)
def test_parse_queues(text: str, queues: list[str], weights: dict[str, int] | None) -> None:
    assert cli.parse_queues(text) == (queues, weights)


@pytest.mark.parametrize("text", ["", "a,,b", "a:0", "a:-2", "a,a:2"])
def test_parse_queues_refuses(capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, _, err = run(capsys, "worker", "whatever:app", "--queues", text)
    assert code == 2
    assert_one_error(err, "--queues")


def test_worker_flag_values_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--threads", "0"],
        ["--lease", "soon"],
        ["--grace", "-1"],
        ["--log-level", "loud"],
    ):
        code, _, err = run(capsys, "worker", "whatever:app", *argv)
        assert code == 2
        assert_one_error(err, argv[0], argv[1])


# -- demo ----------------------------------------------------------------------------------------


def test_demo_forwards_arguments(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    fake = types.ModuleType("jobq.demo.run")
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jobq.demo.run", fake)
    assert main(["demo", "--jobs", "10", "--help"]) == 3
    assert main(["demo"]) == 3
    assert seen == [["--jobs", "10", "--help"], []]


def test_demo_missing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jobq.demo.run", None)  # makes the import fail
    code, out, err = run(capsys, "demo")
    assert (code, out) == (1, "")
    assert_one_error(err, "demo", "jobq.demo.run")


# -- the worker, in a subprocess -----------------------------------------------------------------

APP_MODULE = """
import os
import time

import jobq

app = jobq.App(os.environ["CLI_TEST_URL"])


@app.task(name="add")
def add(a, b):
    return a + b


@app.task(name="other", queue="other")
def other():
    return "other"


@app.task(name="block")
def block(started, release):
    open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return "released"
"""


@pytest.fixture
def worker_env(tmp_path: Path, url: str) -> dict[str, str]:
    (tmp_path / "tests_app_module.py").write_text(APP_MODULE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    env["CLI_TEST_URL"] = url
    env.pop("JOBQ_URL", None)
    return env


def _worker(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobq.cli", "worker", "tests_app_module:app", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + DEADLINE
    delay = 0.005
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@pytest.mark.slow
def test_worker_burst(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    app: jobq.App,
    worker_env: dict[str, str],
) -> None:
    ids = [enqueue(capsys, url, "add", "--args", f"[{i}, 10]") for i in range(5)]
    other = enqueue(capsys, url, "other", "--queue", "other")
    proc = _worker(tmp_path, worker_env, "--burst", "--queues", "default:2", "--threads", "2")
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "INFO jobq.worker" in err  # logging to stderr at INFO
    assert out == ""
    for i, job_id in enumerate(ids):
        job = app.get_job(job_id)
        assert job.state is jobq.JobState.COMPLETED
        assert job.result() == i + 10
    assert app.get_job(other).state is jobq.JobState.AVAILABLE  # not a queue it served


@pytest.mark.slow
def test_worker_bad_app_in_subprocess(tmp_path: Path, worker_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "worker", "tests_app_module:nope", "--burst"],
        cwd=tmp_path,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert proc.returncode == 2
    assert_one_error(proc.stderr, "tests_app_module", "nope")


class _StderrReader:
    """Collects a subprocess's stderr lines in a thread, so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._lock:
                self.lines.append(line)

    def has(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self.lines)

    def text(self) -> str:
        """Everything read so far (all of it, once the process has exited)."""
        with self._lock:
            return "".join(self.lines)

    def close(self) -> str:
        self._thread.join(DEADLINE)
        self._stream.close()
        return self.text()


def _stop(proc: subprocess.Popen[str], reader: _StderrReader) -> str:
    """Kill ``proc`` if it still runs, close its pipes; returns its stderr."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(DEADLINE)
    assert proc.stdout is not None
    proc.stdout.close()
    return reader.close()


def _start_blocking_job(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    app: jobq.App,
    worker_env: dict[str, str],
    *worker_args: str,
) -> tuple[int, Path, subprocess.Popen[str], _StderrReader]:
    started, release = tmp_path / "started", tmp_path / "release"
    job_id = enqueue(capsys, url, "block", "--args", json.dumps([str(started), str(release)]))
    proc = _worker(tmp_path, worker_env, *worker_args)
    reader = _StderrReader(proc)
    try:
        _wait_for(
            lambda: app.get_job(job_id).state is jobq.JobState.RUNNING and started.exists(),
            "the job to run",
        )
    except BaseException:
        _stop(proc, reader)
        raise
    return job_id, release, proc, reader


@pytest.mark.slow
def test_worker_sigterm_drains_running_job(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    app: jobq.App,
    worker_env: dict[str, str],
) -> None:
    job_id, release, proc, reader = _start_blocking_job(capsys, tmp_path, url, app, worker_env)
    try:
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: reader.has("received SIGTERM"), "the worker to get SIGTERM")
        # The worker has stopped claiming but must wait for the running job.
        assert proc.poll() is None
        assert app.get_job(job_id).state is jobq.JobState.RUNNING
        release.touch()
        assert proc.wait(timeout=DEADLINE) == 0, reader.text()
    finally:
        err = _stop(proc, reader)
    assert "Traceback" not in err
    job = app.get_job(job_id)
    assert job.state is jobq.JobState.COMPLETED
    assert job.result() == "released"


@pytest.mark.slow
def test_worker_sigterm_grace_releases_unfinished_job(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    app: jobq.App,
    worker_env: dict[str, str],
) -> None:
    job_id, release, proc, reader = _start_blocking_job(
        capsys, tmp_path, url, app, worker_env, "--grace", "0.2"
    )
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, reader.text()
    finally:
        release.touch()  # lets the abandoned task thread end, if the process is still alive
        err = _stop(proc, reader)
    assert "releasing 1 running job" in err
    job = app.get_job(job_id)
    assert job.state is jobq.JobState.AVAILABLE  # handed back to run elsewhere


# -- migrate ---------------------------------------------------------------------------------


def test_migrate_sqlite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from jobq.backends.sqlite_schema import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path}/m.db"
    code, out, err = run(capsys, "migrate", "--url", url)
    assert (code, err) == (0, "")
    assert f"schema version {SCHEMA_VERSION}, up to date" in out
    code, _, err = run(capsys, "migrate", "--url", url, "--schema", "x")
    assert code == 2
    assert_one_error(err, "--schema applies to PostgreSQL")


def test_migrate_postgres_into_its_own_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    from jobq.backends.postgres_schema import SCHEMA_VERSION as PG_VERSION
    from tests.conftest import postgres_or_skip

    base = postgres_or_skip()
    schema = "jobq_t_cli_migrate"
    try:
        for _ in range(2):  # idempotent
            code, out, err = run(capsys, "migrate", "--url", base, "--schema", schema)
            assert (code, err) == (0, ""), err
            assert f"schema={schema}: jobq schema version {PG_VERSION}, up to date" in out
        with psycopg.connect(base) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY 1",
                (schema,),
            ).fetchall()
        assert [t for (t,) in tables] == [
            "jobq_cron_ticks",
            "jobq_deps",
            "jobq_jobs",
            "jobq_locks",
            "jobq_meta",
            "jobq_queues",
            "jobq_rate_starts",
            "jobq_workers",
        ]
        code, _, err = run(capsys, "migrate", "--url", base, "--schema", "Bad-Name")
        assert code == 2
        assert_one_error(err, "invalid PostgreSQL schema name 'Bad-Name'")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize(("text", "want"), [("8", (None, 8)), ("2:16", (2, 16)), ("1:1", (1, 1))])
def test_threads_argument(text: str, want: tuple[int | None, int]) -> None:
    from jobq.cli.arguments import threads_arg

    assert threads_arg(text) == want


@pytest.mark.parametrize("bad", ["0", "4:2", "0:3", "x", "2:", ":3"])
def test_bad_threads_argument(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    code, _, err = run(capsys, "worker", "some.module:app", "--threads", bad)
    assert code == 2
    assert_one_error(err, "thread count")


def test_status_lists_registered_workers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:

    url = f"sqlite:///{tmp_path}/w.db"
    app = jobq.App(url)
    now = app.backend.now()
    app.backend.register_worker(
        jobq.WorkerInfo("web-1:4242:ab12cd", "web-1", 4242, ("mail", "default"), 8, now, now)
    )
    app.backend.register_worker(
        jobq.WorkerInfo("web-2:77:ffeedd", "web-2", 77, ("default",), 2, now, now)
    )
    app.backend.worker_heartbeat("web-1:4242:ab12cd", jobs_run=12)
    app.close()
    code, out, _ = run(capsys, "status", "--url", url)
    assert code == 0
    workers = out.split("\n\n")[1].splitlines()
    assert workers[0].split() == [
        "WORKER",
        "HOST",
        "PID",
        "QUEUES",
        "THREADS",
        "UP",
        "SEEN",
        "JOBS",
        "ALIVE",
    ]
    row = next(line.split() for line in workers if line.startswith("web-1"))
    assert row[1:5] == ["web-1", "4242", "mail,default", "8"] and row[-2:] == ["12", "yes"]
    code, out, _ = run(capsys, "status", "--url", url, "--json")
    doc = json.loads(out)
    assert {w["id"] for w in doc["workers"]} == {"web-1:4242:ab12cd", "web-2:77:ffeedd"}
    assert all(w["alive"] for w in doc["workers"])
