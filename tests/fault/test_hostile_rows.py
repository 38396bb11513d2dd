"""Hostile rows: jobs written straight into the database, bypassing ``enqueue()``'s checks.

A row must never make a worker run code (DESIGN §1, §8): each one either runs the registered
task with exactly its stored arguments, or ends ``dead`` with a clear error, and the worker
keeps going.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import jobq
from tests.fault.checker import Deaths, reconcile
from tests.fault.faultapp import build
from tests.fault.harness import STEP_WAIT, TERMINAL, Fleet, Proc, Store, record, wait_for

pytestmark = pytest.mark.slow

#: The size of the payloads that must be refused at enqueue, and stored directly.
BIG = 100 * 2**20


def pickle_exploit(marker: Path) -> str:
    """A protocol-0 pickle that runs ``touch MARKER`` when unpickled (it must never be)."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR."


def plant(store: Store, app: jobq.App, **columns: Any) -> int:
    """Write a row straight into the table: a valid job is enqueued on a queue no worker
    serves, then rewritten with ``columns`` and moved to the ``default`` queue."""
    job = app.enqueue("echo", args=[None], queue="parking")
    columns.setdefault("queue", "default")
    sets = ", ".join(f"{name} = ?" for name in columns)
    store.execute(f"UPDATE jobq_jobs SET {sets} WHERE id = ?", [*columns.values(), job.id])
    return job.id


def all_finished(store: Store, ids: list[int], worker: Proc) -> bool:
    """True once every job is finished; fails at once if the worker died meanwhile."""
    assert worker.alive(), f"the worker died:\n{worker.log()[-3000:]}"
    marks = ",".join("?" * len(ids))
    rows = store.query(f"SELECT state FROM jobq_jobs WHERE id IN ({marks})", ids)
    return all(r[0] in TERMINAL for r in rows)


def test_hostile_rows_die_with_a_clear_error_and_nothing_runs(
    store: Store, fleet: Fleet, tmp_path: Path
) -> None:
    """Rows holding a pickle exploit, the task name ``os.system`` (and ``builtins.eval``),
    malformed JSON, arguments that are not a list, a 100,000-deep nesting, a 5,000-digit
    integer, an unknown task, and a valid 100 MB payload. Proves: no code from a row runs (the
    marker file the exploits would create never appears, no task starts for a dead row),
    every undecodable or unknown row ends ``dead`` with the reason, the 100 MB row runs with
    exactly its argument (its size was only limited at enqueue), and the worker keeps
    running jobs afterwards."""
    app = build(store.url, str(fleet.side_log_path))
    marker = tmp_path / "pwned"
    shell = json.dumps([f"touch {marker}"])
    worker = fleet.worker(threads=2, lease=10.0)
    started = time.monotonic()
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "pickle exploit": ({"args": pickle_exploit(marker)}, "PayloadError"),
        "task os.system": ({"task": "os.system", "args": shell}, "UnknownTaskError"),
        "task builtins.eval": (
            {"task": "builtins.eval", "args": json.dumps([f"__import__('os').system{shell}"])},
            "UnknownTaskError",
        ),
        "malformed args": ({"args": "[1, 2"}, "PayloadError"),
        "malformed kwargs": ({"kwargs": '{"value": '}, "PayloadError"),
        "args not a list": ({"args": '{"value": 1}'}, "PayloadError"),
        "kwargs not an object": ({"kwargs": "[1]"}, "PayloadError"),
        "100,000-deep nesting": ({"args": "[" * 100_000 + "]" * 100_000}, "PayloadError"),
        "5,000-digit integer": ({"args": "[" + "9" * 5000 + "]"}, "PayloadError"),
        "unknown task": ({"task": "no_such_task"}, "UnknownTaskError"),
    }
    if store.kind == "sqlite":  # a BLOB in a TEXT column; PostgreSQL's text refuses bytes
        blob = b"\x80\x04" + pickle_exploit(marker).encode()
        cases["pickle blob"] = ({"args": blob}, "PayloadError")
    planted = {name: plant(store, app, **columns) for name, (columns, _) in cases.items()}
    big = plant(store, app, task="length", args=json.dumps(["x" * BIG]))
    wait_for(
        lambda: all_finished(store, [*planted.values(), big], worker),
        "every hostile row to finish",
        timeout=STEP_WAIT,
    )
    rows = store.rows()
    for name, (_, error) in cases.items():
        row = rows[planted[name]]
        assert row.state == "dead", f"{name}: {row}"
        assert row.error_types() == [error], f"{name}: {row.errors[:300]}"
    assert rows[big].state == "completed" and rows[big].result_value() == BIG
    assert not marker.exists(), "a row ran a shell command"
    ran = {e.job_id for e in fleet.side_log()}
    assert ran == {big}, "a task started for a row that should have been refused"
    # the worker goes on: a good job after the hostile ones completes
    good = app.tasks["work"].enqueue(1, 0)
    wait_for(lambda: good.refresh().state.value == "completed", "a good job after them")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(STEP_WAIT) == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    report = reconcile(
        f"hostile rows [{store.kind}]",
        {**dict.fromkeys(planted.values(), "dead"), big: "completed", good.id: "completed"},
        store.rows(),
        fleet.side_log(),
        Deaths(),
        allowed=[],
    )
    report.seconds = time.monotonic() - started
    report.notes += [
        f"hostile={len(planted)} dead, 100 MB row completed",
        "executed=0 worker_alive=yes",
    ]
    record(report.line())
    report.check()
    app.close()


def test_enqueue_refuses_what_it_must_and_writes_nothing(store: Store, tmp_path: Path) -> None:
    """A 100 MB payload, task names that are shell or SQL, queue names with SQL
    metacharacters: each is refused at ``enqueue()`` with the documented error
    (``PayloadError`` / ``InvalidJobError``) and nothing is written."""
    app = build(store.url, str(tmp_path / "side.log")).open()
    before = store.counts()
    with pytest.raises(jobq.PayloadError, match="over the limit"):
        app.enqueue("length", args=["x" * BIG])
    with pytest.raises(jobq.PayloadError, match="over the limit"):
        app.tasks["length"].enqueue_many([("x",), ("x" * BIG,)])  # all or nothing
    for task in ["os.system; rm -rf /", "echo'; DROP TABLE jobq_jobs; --", "a b", "", "é"]:
        with pytest.raises(jobq.InvalidJobError, match="invalid task name"):
            app.enqueue(task)
    for queue in ["q'; DROP TABLE jobq_jobs; --", 'q" OR 1=1', "%(now)s", "{t}", "q\x00", ""]:
        with pytest.raises(jobq.InvalidJobError, match="invalid queue name"):
            app.enqueue("echo", queue=queue)
        with pytest.raises(jobq.InvalidJobError, match="invalid queue name"):
            app.list_jobs(queue=queue)
        with pytest.raises(jobq.ConfigurationError):
            app.worker([queue])
    assert store.counts() == before
    record(
        f"enqueue refusals [{store.kind}]: 100 MB payload -> PayloadError, 5 task names and "
        "6 queue names with shell/SQL metacharacters -> InvalidJobError, rows written=0"
    )
    app.close()


def test_rows_with_json_that_is_not_json_are_refused(
    store: Store, fleet: Fleet, tmp_path: Path
) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259), and ``enqueue()``
    refuses them; a row holding them must not run either (DESIGN §3: an undecodable payload
    makes the job ``dead``)."""
    app = build(store.url, str(fleet.side_log_path))
    worker = fleet.worker(threads=1, lease=10.0)
    planted = [plant(store, app, args=f"[{c}]") for c in ("NaN", "Infinity", "-Infinity")]
    wait_for(lambda: all_finished(store, planted, worker), "the rows to finish")
    rows = store.rows()
    ran = {e.job_id for e in fleet.side_log()}
    record(
        f"non-JSON numbers in rows [{store.kind}]: "
        + " ".join(f"{rows[i].state}/{rows[i].error_types()}" for i in planted)
        + f" ran={len(ran & set(planted))}"
    )
    assert not ran & set(planted), "a task ran with NaN/Infinity decoded from a row"
    for i in planted:
        assert rows[i].state == "dead" and rows[i].error_types() == ["PayloadError"]
    app.close()


def test_sqlite_rows_with_malformed_json_columns_do_not_stop_workers(tmp_path: Path) -> None:
    """SQLite keeps ``tags`` and ``errors`` as JSON text too. A row whose ``tags`` or
    ``errors`` is not JSON must end ``dead`` with a clear error (or run), never take down the
    worker that claims it, and never block the rescue of other workers' jobs."""
    db = tmp_path / "jobs.db"
    store = Store("sqlite", f"sqlite:///{db}", path=db)
    fleet = Fleet(store, tmp_path)
    try:
        app = build(store.url, str(fleet.side_log_path))
        worker = fleet.worker(threads=2, lease=2.0)
        bad_tags = plant(store, app, tags="not json")
        bad_errors = plant(store, app, task="no_such_task", errors="not json")
        # a job whose worker "died": its lease ran out, so maintenance must rescue it
        lost = plant(store, app, task="work", args="[0]")
        store.execute(
            "UPDATE jobq_jobs SET state = 'running', attempt = 1, lease_token = 'gone', "
            "leased_until = 0, errors = 'not json either' WHERE id = ?",
            [lost],
        )
        good = [app.tasks["work"].enqueue(i, 0).id for i in range(20)]
        ids = [bad_tags, bad_errors, lost, *good]

        def settled() -> bool:
            return not worker.alive() or all_finished(store, ids, worker)

        wait_for(settled, "every row to finish, or the worker to die")
        rows = store.rows()
        record(
            "malformed JSON columns [sqlite]: "
            + " ".join(
                f"{n}={rows[i].state}"
                for n, i in [("tags", bad_tags), ("errors", bad_errors), ("expired lease", lost)]
            )
            + f" good_completed={sum(rows[i].state == 'completed' for i in good)}/{len(good)}"
            + f" worker_alive={worker.alive()}"
        )
        assert worker.alive(), worker.log()[-3000:]
        assert all(rows[i].state == "completed" for i in good)
        assert rows[bad_errors].state == "dead" and rows[lost].state == "completed"
    finally:
        fleet.stop_all()


def test_a_result_json_cannot_hold_does_not_wedge_the_worker(tmp_path: Path) -> None:
    """A task returning an integer longer than Python's JSON may write (4,300 digits): the
    attempt must fail with a clear ``PayloadError`` (DESIGN §7: the worker logs, never dies,
    on a job's exception), and the job behind it on the same thread must still run."""
    db = tmp_path / "jobs.db"
    store = Store("sqlite", f"sqlite:///{db}", path=db)
    fleet = Fleet(store, tmp_path)
    try:
        app = build(store.url, str(fleet.side_log_path))
        worker = fleet.worker(threads=1, lease=5.0)
        big = app.tasks["bigint"].options(max_attempts=1).enqueue(5000)
        after = app.tasks["work"].enqueue(1, 0)

        def settled() -> bool:
            # stop early on the failure this test is about: an executor thread that died
            return "Exception in thread" in worker.log() or all_finished(
                store, [big.id, after.id], worker
            )

        wait_for(settled, "both jobs to finish")
        rows = store.rows()
        record(
            f"unstorable result [sqlite]: bigint job {rows[big.id].state} "
            f"{rows[big.id].error_types()}, next job {rows[after.id].state}, "
            f"thread died={'Exception in thread' in worker.log()}"
        )
        assert "Exception in thread" not in worker.log(), worker.log()[-3000:]
        assert rows[big.id].state == "dead" and rows[big.id].error_types() == ["PayloadError"]
        assert rows[after.id].state == "completed"
    finally:
        fleet.stop_all()
