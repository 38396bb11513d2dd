"""A system's producer in a process of its own, driven by the runner over stdin/stdout.

The runner never imports a system's module: every system (jobq from jobq's environment, each
peer from the peers' environment) is described and driven through this module, run with that
system's interpreter::

    python -m benchmarks.client describe MODULE          # SYSTEM's fields, as JSON
    python -m benchmarks.client serve MODULE LOCATOR     # a producer, one JSON request a line

Timed loops (N enqueues one call at a time, the bulk call, the paced latency enqueues) run
inside the producer process and report their own times, so the pipe between runner and
producer is never inside a measurement.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from benchmarks.common import ROOT, Client, System, SystemInfo, subprocess_env

_START_TIMEOUT_SECONDS = 120.0


def load(module: str) -> System:
    system: System = importlib.import_module(module).SYSTEM
    return system


def describe(module: str, python: str) -> SystemInfo:
    """``module``'s SYSTEM as the runner needs it, read by ``python`` (raises with its stderr)."""
    done = subprocess.run(
        [python, "-m", "benchmarks.client", "describe", module],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=_START_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"cannot load {module} with {python}: {last}")
    return SystemInfo.from_description(json.loads(done.stdout.splitlines()[-1]), python)


# --------------------------------------------------------------------------------------------
# The producer process


def _enqueue_noop_n(client: Client, out: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        client.enqueue_noop(out)
    return time.perf_counter() - start


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _enqueue_paced(client: Client, out: str, jobs: int, rate: float) -> dict[str, float]:
    """``jobs`` latency jobs at ``rate``/s, each carrying ``time.time()`` taken just before
    its enqueue call."""
    start = time.perf_counter()
    late = 0.0
    for i in range(jobs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        client.enqueue_latency(out, time.time())
    return {"span_s": time.perf_counter() - start, "late_s": late}


def _handle(client: Client, op: str, args: dict[str, Any]) -> Any:
    if op == "enqueue_noop_n":
        return _enqueue_noop_n(client, args["out"], args["n"])
    if op == "enqueue_noop":
        return client.enqueue_noop(args["out"])
    if op == "enqueue_noop_many":
        return _timed(client.enqueue_noop_many, args["out"], args["n"])
    if op == "enqueue_backlog":
        return _timed(client.enqueue_backlog, args["out"], args["n"])
    if op == "enqueue_paced":
        return _enqueue_paced(client, args["out"], args["jobs"], args["rate"])
    if op == "pending":
        return client.pending()
    if op == "completed":
        return client.completed()
    raise ValueError(f"unknown operation {op!r}")


def serve(module: str, locator: str) -> int:
    """Answer the runner's requests on a producer for ``locator`` until ``close`` or EOF."""
    # Replies go to the real stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        client = load(module).connect(locator)
    except Exception as exc:
        replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    replies.write(json.dumps({"ok": "ready"}) + "\n")
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "close":
                break
            try:
                reply = {"ok": _handle(client, request["op"], request.get("args", {}))}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            replies.write(json.dumps(reply) + "\n")
    finally:
        client.close()
    replies.write(json.dumps({"ok": "closed"}) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "describe":
        print(json.dumps(load(args[1]).describe()))
        return 0
    if len(args) == 3 and args[0] == "serve":
        return serve(args[1], args[2])
    print(__doc__, file=sys.stderr)
    return 2


# --------------------------------------------------------------------------------------------
# The runner's side


class RemoteError(RuntimeError):
    pass


class RemoteClient:
    """The runner's handle on one producer process (``serve``); a context manager."""

    def __init__(self, system: SystemInfo, locator: str, workdir: Path, label: str) -> None:
        self.system = system
        self.log_path = workdir / f"producer-{system.name}-{label}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [system.python, "-m", "benchmarks.client", "serve", system.module, locator],
                cwd=ROOT,
                env=subprocess_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        self._read()  # "ready", or the reason it could not connect

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self) -> Any:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise RemoteError(
                f"{self.system.name} producer exited with {self.proc.returncode}: "
                f"{self._log_tail()}"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RemoteError(f"{self.system.name} producer: {reply['error']}")
        return reply["ok"]

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def call(self, op: str, **args: Any) -> Any:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        stdin.flush()
        return self._read()

    # The Client protocol's operations, timed inside the producer where they are measured.

    def enqueue_noop_n(self, out: str, n: int) -> float:
        """Enqueue ``n`` no-op jobs one call at a time; returns the seconds it took."""
        return float(self.call("enqueue_noop_n", out=out, n=n))

    def enqueue_noop(self, out: str) -> None:
        self.call("enqueue_noop", out=out)

    def enqueue_noop_many(self, out: str, n: int) -> float:
        """The bulk call; returns its seconds."""
        return float(self.call("enqueue_noop_many", out=out, n=n))

    def enqueue_backlog(self, out: str, n: int) -> float:
        return float(self.call("enqueue_backlog", out=out, n=n))

    def enqueue_paced(self, out: str, jobs: int, rate: float) -> dict[str, float]:
        result: dict[str, float] = self.call("enqueue_paced", out=out, jobs=jobs, rate=rate)
        return result

    def pending(self) -> int:
        return int(self.call("pending"))

    def completed(self) -> int | None:
        value = self.call("completed")
        return None if value is None else int(value)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                stdin = self.proc.stdin
                assert stdin is not None
                stdin.write(json.dumps({"op": "close"}) + "\n")
                stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    sys.exit(main())
