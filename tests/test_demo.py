"""The `jobq demo` command, run in-process on a small workload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobq.demo.run import main
from jobq.demo.shop import mailbox_fate


def field(summary: str, name: str) -> int:
    match = re.search(rf"^\s+{name}\s+(\d+)", summary, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{summary}"
    return int(match[1])


def test_failure_rule_covers_both_kinds_in_300_customers() -> None:
    fates = [mailbox_fate(c) for c in range(1, 301)]
    assert fates.count("reject") == 1
    assert fates.count("flaky") == 6


@pytest.mark.slow
def test_demo_300_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--jobs", "300", "--threads", "4", "--no-progress", "--timeout", "120"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert err == ""  # --no-progress: nothing on stderr
    completed, dead = field(out, "completed"), field(out, "dead")
    assert completed + dead == 300
    assert dead == 1  # the one non-existent mailbox, after its 3 attempts
    assert field(out, "retried") == 7  # 6 greylisted (451 once) + the dead one
    assert field(out, "emails") == completed
    assert "result       OK" in out
    assert re.search(r"latency .* p50 \d+ ms, p90 \d+ ms, p99 \d+ ms", out)
    assert "password resets" in out and "VIP orders" in out


@pytest.mark.slow
def test_demo_keeps_db_and_refuses_to_reuse_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["--jobs", "20", "--threads", "2", "--no-progress", "--db", str(db)]) == 0
    assert db.exists()
    assert str(db) in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--jobs", "20", "--db", str(db)])
    assert info.value.code == 2
