"""A worker process keeps freed heap (glibc's M_TOP_PAD): when it does, and when it must not."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import jobq
from jobq import heap
from jobq.cli import main


class Mallopt:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer

    def factory(self) -> Callable[[], Callable[[int, int], int] | None]:
        return lambda: self


def test_sets_glibcs_top_pad_to_16_mib() -> None:
    m = Mallopt()
    assert heap.keep_freed_heap(environ={}, platform="linux", mallopt=m.factory()) is True
    assert m.calls == [(heap.M_TOP_PAD, 16 * 1024 * 1024)]


@pytest.mark.parametrize("name", heap.MALLOC_ENV)
def test_leaves_malloc_alone_when_the_environment_tunes_it(name: str) -> None:
    m = Mallopt()
    tuned = {name: "1048576"}
    assert heap.keep_freed_heap(environ=tuned, platform="linux", mallopt=m.factory()) is False
    assert m.calls == []


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_does_nothing_off_linux(platform: str) -> None:
    m = Mallopt()
    assert heap.keep_freed_heap(environ={}, platform=platform, mallopt=m.factory()) is False
    assert m.calls == []


def test_does_nothing_without_glibc_or_when_mallopt_refuses() -> None:
    assert heap.keep_freed_heap(environ={}, platform="linux", mallopt=lambda: None) is False
    refusing = Mallopt(answer=0)
    assert heap.keep_freed_heap(environ={}, platform="linux", mallopt=refusing.factory()) is False
    assert refusing.calls == [(heap.M_TOP_PAD, heap.TOP_PAD_BYTES)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_the_real_mallopt_takes_it_on_glibc() -> None:
    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    assert heap._glibc_mallopt() is not None
    assert heap.keep_freed_heap(environ={}) is True


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr("jobq.app.keep_freed_heap", lambda: seen.append("app") or True)
    monkeypatch.setattr("jobq.cli.commands.keep_freed_heap", lambda: seen.append("cli") or True)
    return seen


def test_run_worker_owns_its_process_and_keeps_freed_heap(calls: list[str]) -> None:
    app = jobq.App("memory://")
    app.run_worker(burst=True, handle_signals=False)
    assert calls == ["app"]


def test_a_worker_embedded_in_someone_elses_process_leaves_malloc_alone(calls: list[str]) -> None:
    app = jobq.App("memory://")
    app.worker(burst=True).run()
    assert calls == []


def test_a_worker_child_of_jobq_worker_keeps_freed_heap(
    calls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "q.db"
    (tmp_path / "heap_test_app.py").write_text(
        f"import jobq\napp = jobq.App({f'sqlite:///{db}'!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["worker", "heap_test_app:app", "--child", "--burst"]) == 0
    assert calls == ["cli"]
