"""Structured logging: job lines carry job_id, task, queue and attempt, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import jobq
from jobq.logs import JobContextFilter, JsonFormatter, TextFormatter, make_handler
from tests.dashboard_support import DEADLINE


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Root logging into a JSON handler at DEBUG, for the length of a test."""
    stream = io.StringIO()
    handler = make_handler(stream, "json")
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_job_lines_carry_the_job_fields(tmp_path: Path, captured: io.StringIO) -> None:
    app = jobq.App(f"sqlite:///{tmp_path}/l.db")

    @app.task(name="chatty", queue="mail", max_attempts=2, retry=jobq.FixedDelay(timedelta(0)))
    def chatty(n: int) -> int:
        logging.getLogger("myapp.mail").info("sending %d", n)
        if jobq.current_job().attempt == 1:
            raise RuntimeError("smtp down")
        return n

    job = chatty.enqueue(7)
    app.run_worker(queues=["mail"], burst=True, threads=1, handle_signals=False)
    app.close()
    records = lines(captured)
    about_job = [r for r in records if r.get("job_id") == job.id]
    mine = [r for r in about_job if r["logger"] == "myapp.mail"]
    assert [r["attempt"] for r in mine] == [1, 2]  # the task's own lines, each attempt
    assert all(r["task"] == "chatty" and r["queue"] == "mail" for r in about_job)
    failed = [r for r in about_job if "smtp down" in str(r["message"])]
    assert failed and failed[0]["level"] == "WARNING" and failed[0]["attempt"] == 1
    ends = [r for r in about_job if r["logger"] == "jobq.job"]
    assert [r["message"].split()[2] for r in ends if "started" not in str(r["message"])] == [  # type: ignore[union-attr]
        "retry",
        "completed",
    ]
    # lines that are not about a job have no job fields
    assert any("job_id" not in r for r in records if r["logger"] == "jobq.worker")


def test_json_formatter_fields_and_exceptions() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    JobContextFilter().filter(record)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "boom now" and doc["level"] == "ERROR" and doc["logger"] == "x"
    assert "job_id" not in doc and doc["time"].endswith("+00:00")
    try:
        raise ValueError("bad <value>")
    except ValueError:
        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad <value>" in doc["exception"]


def test_text_formatter_tags_job_lines() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    for name, value in {"job_id": 5, "task": "t", "queue": "q", "attempt": 2}.items():
        setattr(record, name, value)
    assert TextFormatter().format(record).endswith("x: hello [job=5 task=t queue=q attempt=2]")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    JobContextFilter().filter(plain)
    assert TextFormatter().format(plain).endswith("INFO x: hello")


def test_unknown_log_format() -> None:
    with pytest.raises(jobq.ConfigurationError, match="text, json"):
        make_handler(io.StringIO(), "xml")


APP = """
import os
import logging
import jobq

app = jobq.App(os.environ["LOGS_TEST_URL"])


@app.task(name="say")
def say(word):
    logging.getLogger("app").warning("saying %s", word)
    return word


@app.task(name="fail", max_attempts=1)
def fail():
    raise KeyError("missing")
"""


@pytest.mark.slow
def test_worker_log_format_json(tmp_path: Path) -> None:
    (tmp_path / "logs_app.py").write_text(textwrap.dedent(APP))
    url = f"sqlite:///{tmp_path}/w.db"
    app = jobq.App(url)
    say = app.enqueue("say", args=["hi"])
    fail = app.enqueue("fail", max_attempts=1)  # by name: the task is not registered here
    app.close()
    env = dict(os.environ, LOGS_TEST_URL=url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "jobq.cli", "worker", "logs_app:app", "--burst"),
            *("--log-format", "json", "--log-level", "debug"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    said = [d for d in docs if d["logger"] == "app"]
    assert said and said[0]["job_id"] == say.id and said[0]["task"] == "say"
    assert said[0]["queue"] == "default" and said[0]["attempt"] == 1
    dead = [d for d in docs if d.get("job_id") == fail.id and "dead" in d["message"]]
    assert dead and dead[0]["level"] == "WARNING" and "KeyError" in dead[0]["message"]
    assert any(d["logger"] == "jobq.supervisor" or "worker" in d["logger"] for d in docs)
