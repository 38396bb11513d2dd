"""``jobq demo``: the e-commerce case end to end, with nothing to install.

A local SMTP sink stands in for the mail server; a fresh SQLite file holds the queue. Order
confirmations (10% of them VIP, priority 9) and password resets (priority 10, with a deadline)
are enqueued in batches and sent as real email by a worker. A few mailboxes are greylisted
(451 once: retried) and a few do not exist (550: dead after 3 attempts). The summary checks
that no job was lost and that priorities worked.

    python -m jobq.demo.run --jobs 3000 --threads 8
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import TextIO
from urllib.parse import quote

import jobq
from jobq.demo.shop import (
    QUEUE,
    VIP_PRIORITY,
    Kind,
    Shop,
    Starts,
    build_shop,
    email_of,
    mailbox_fate,
    order_id_of,
)
from jobq.demo.smtp_sink import SmtpSink

BATCH = 500
RESET_DEADLINE = timedelta(seconds=30)
FINAL = (
    jobq.JobState.COMPLETED,
    jobq.JobState.DEAD,
    jobq.JobState.CANCELLED,
    jobq.JobState.EXPIRED,
)
LABELS: dict[Kind, str] = {
    "reset": "password resets",
    "vip": "VIP orders",
    "normal": "normal orders",
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="jobq demo",
        description=(
            "The e-commerce case end to end: order confirmations and password resets sent as "
            "real email to a local SMTP sink through a jobq queue on SQLite; nothing to install."
        ),
    )
    p.add_argument("--jobs", type=int, default=3000, help="how many emails (default 3000)")
    p.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    p.add_argument("--db", help="SQLite file to create (default: a temporary one)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    p.add_argument("--seed", type=int, default=1, help="seed of the order mix (default 1)")
    args = p.parse_args(list(argv))
    if args.jobs < 1 or not 1 <= args.threads <= 1024 or args.timeout <= 0:
        p.error("--jobs must be >= 1, --threads 1..1024 and --timeout > 0")
    if args.db and os.path.exists(args.db):
        p.error(f"--db {args.db} exists; the demo creates a fresh store, pick a new path")
    return args


def make_mix(count: int, seed: int) -> list[tuple[int, Kind]]:
    """(customer number, kind) for each job: 5% password resets, 10% VIP, the rest normal."""
    rng = random.Random(seed)
    mix: list[tuple[int, Kind]] = []
    for customer in range(1, count + 1):
        r = rng.random()
        mix.append((customer, "reset" if r < 0.05 else "vip" if r < 0.15 else "normal"))
    return mix


def enqueue_all(shop: Shop, mix: list[tuple[int, Kind]]) -> set[int]:
    """Enqueue in batches of :data:`BATCH` customers, one ``enqueue_many`` per kind."""
    ids: set[int] = set()
    vip_orders = shop.order_confirmation.options(priority=VIP_PRIORITY)
    for start in range(0, len(mix), BATCH):
        chunk = mix[start : start + BATCH]
        resets = shop.password_reset.options(deadline=datetime.now(UTC) + RESET_DEADLINE)
        batches = (
            (resets, [(c, email_of(c)) for c, k in chunk if k == "reset"]),
            (vip_orders, [(order_id_of(c), email_of(c), True) for c, k in chunk if k == "vip"]),
            (
                shop.order_confirmation,
                [(order_id_of(c), email_of(c), False) for c, k in chunk if k == "normal"],
            ),
        )
        for call, calls in batches:
            if calls:
                ids.update(job.id for job in call.enqueue_many(calls))
    return ids


class Progress:
    """A one-line bar redrawn ~5x/s on a terminal, else a plain line every ~2 s."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and stream.isatty()
        self.every = 0.2 if self.tty else 2.0
        self.last = 0.0
        self.width = 0  # longest line drawn: a shorter one is padded to erase the old one

    def show(self, counts: dict[jobq.JobState, int], elapsed: float, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.every):
            return
        self.last = now
        done = sum(counts.get(s, 0) for s in FINAL)
        filled = int(30 * done / self.total)
        line = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
            f"{100 * done / self.total:5.1f}%  {done / max(elapsed, 1e-9):6.0f} jobs/s  "
            f"waiting to retry {counts.get(jobq.JobState.SCHEDULED, 0)}  "
            f"dead {counts.get(jobq.JobState.DEAD, 0)}"
        )
        self.width = max(self.width, len(line))
        self.stream.write(f"\r{line.ljust(self.width)}" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def wait_until_final(
    app: jobq.App,
    total: int,
    t0: float,
    give_up: float,
    progress: Progress,
    runner: threading.Thread,
) -> bool:
    """Poll the store until ``total`` jobs are final; False if ``give_up`` came first (or the
    worker thread died)."""
    while True:
        counts = app.stats().get(QUEUE, {})
        done = sum(counts.get(s, 0) for s in FINAL) >= total
        over = time.monotonic() >= give_up or not runner.is_alive()
        progress.show(counts, time.monotonic() - t0, force=done or over)
        if done or over:
            progress.close()
            return done
        time.sleep(0.05 if total < 1000 else 0.1)


def collect(app: jobq.App, ids: set[int]) -> list[jobq.JobRecord]:
    """The stored records of ``ids``, paging through the queue newest first."""
    records: list[jobq.JobRecord] = []
    before, low = max(ids) + 1, min(ids)
    while before > low:
        page = app.list_jobs(queue=QUEUE, limit=1000, before_id=before)
        if not page:
            break
        records += [job.record for job in page if job.id in ids]
        before = page[-1].id
    return records


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def report(
    out: TextIO,
    *,
    records: list[jobq.JobRecord],
    enqueued: int,
    received: int,
    starts: list[tuple[Kind, float, float]],
    t0_wall: float,
    elapsed: float,
    enqueue_s: float,
    timed_out: bool,
    mix: list[tuple[int, Kind]],
    store: str,
) -> bool:
    """Print the summary; True when no job was lost and the sink agrees with the store."""
    state = {s: sum(r.state is s for r in records) for s in jobq.JobState}
    final = sum(state[s] for s in FINAL)
    retried = sum(r.attempt > 1 for r in records)
    kinds = {k: sum(kind == k for _, kind in mix) for k in LABELS}
    latencies = sorted(1000 * (started - created) for _, created, started in starts)
    offsets = {
        k: [1000 * (started - t0_wall) for kind, _, started in starts if kind == k] for k in LABELS
    }
    mean = {k: sum(v) / len(v) if v else math.nan for k, v in offsets.items()}
    dead = [r for r in records if r.state is jobq.JobState.DEAD]
    err = dead[0].last_error if dead else None
    example = f"; e.g. job {dead[0].id}: {err.type}: {err.message}" if err else ""
    flaky = sum(mailbox_fate(c) == "flaky" for c, _ in mix)
    rejected = sum(mailbox_fate(c) == "reject" for c, _ in mix)
    if not offsets["normal"] or not (offsets["vip"] or offsets["reset"]):
        verdict = "  -> too few jobs started to compare"
    elif all(mean[k] < mean["normal"] for k in ("vip", "reset") if offsets[k]):
        verdict = "  -> OK: urgent mail went first"
    else:
        verdict = "  -> NOT as expected: urgent mail did not go first"
    problems = [
        text
        for bad, text in (
            (timed_out, f"timed out with {enqueued - final} jobs not final"),
            (len(records) != enqueued or (final != enqueued and not timed_out), "jobs lost"),
            (
                received != state[jobq.JobState.COMPLETED],
                f"the sink got {received} emails for "
                f"{state[jobq.JobState.COMPLETED]} completed jobs",
            ),
        )
        if bad
    ]
    lines = [
        f"jobq demo: {enqueued} jobs ({kinds['normal']} normal orders, {kinds['vip']} VIP "
        f"orders, {kinds['reset']} password resets); {flaky} greylisted and {rejected} "
        "non-existent mailboxes",
        f"  store        {store}",
        f"  jobs         {enqueued} enqueued in {enqueue_s:.2f} s "
        f"({enqueued / max(enqueue_s, 1e-9):,.0f} jobs/s, batches of {BATCH})",
        f"  completed    {state[jobq.JobState.COMPLETED]}",
        f"  retried      {retried} (jobs that needed more than one attempt)",
        f"  dead         {state[jobq.JobState.DEAD]} (failed all attempts{example})",
    ]
    for s in (jobq.JobState.EXPIRED, jobq.JobState.CANCELLED):
        if state[s]:
            lines.append(f"  {s.value:<12} {state[s]}")
    if final != enqueued:
        lines.append(f"  not final    {enqueued - final}")
    lines += [
        f"  emails       {received} received by the SMTP sink",
        f"  elapsed      {elapsed:.2f} s",
        f"  throughput   {final / max(elapsed, 1e-9):,.0f} jobs/s",
        f"  latency      enqueue -> first start: p50 {percentile(latencies, 50):.0f} ms, "
        f"p90 {percentile(latencies, 90):.0f} ms, p99 {percentile(latencies, 99):.0f} ms",
        "  priority     mean start after the first enqueue: "
        + ", ".join(f"{LABELS[k]} {mean[k]:.0f} ms" for k in LABELS if offsets[k])
        + verdict,
        "  result       "
        + (
            "FAILED: " + "; ".join(problems)
            if problems
            else "OK: every job reached a final state and the sink got one email per completed job"
        ),
    ]
    print("\n".join(lines), file=out, flush=True)
    return not problems


def main(argv: Sequence[str]) -> int:
    """Run the demo; 0 when every job reached a final state and the emails add up."""
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\njobq demo: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    """Sink up, store created, worker started, jobs enqueued and awaited, summary printed."""
    mix = make_mix(args.jobs, args.seed)
    rejected = {email_of(c) for c, _ in mix if mailbox_fate(c) == "reject"}
    flaky = {email_of(c) for c, _ in mix if mailbox_fate(c) == "flaky"}
    quiet = logging.getLogger("jobq")  # failed attempts are expected here; the summary counts them
    old_level = quiet.level
    quiet.setLevel(logging.ERROR)
    with ExitStack() as stack:
        stack.callback(quiet.setLevel, old_level)
        sink = stack.enter_context(
            SmtpSink(
                reject=lambda rcpt: rcpt in rejected,
                tempfail=lambda rcpt, attempt: attempt == 1 and rcpt in flaky,
                max_connections=max(100, 2 * args.threads),
            )
        )
        path = args.db or os.path.join(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="jobq-demo-")), "jobs.db"
        )
        starts = Starts()
        shop = build_shop(f"sqlite:///{quote(os.path.abspath(path))}", sink.port, starts)
        stack.enter_context(shop.app)
        worker = shop.app.worker(
            queues=[QUEUE], threads=args.threads, poll_interval=0.05, grace=timedelta(seconds=5)
        )
        runner = threading.Thread(target=worker.run, name="jobq-demo-worker", daemon=True)
        runner.start()
        stack.callback(runner.join)
        stack.callback(worker.stop)

        t0, t0_wall = time.monotonic(), time.time()
        ids = enqueue_all(shop, mix)
        enqueue_s = time.monotonic() - t0
        progress = Progress(len(ids), sys.stderr, not args.no_progress)
        done = wait_until_final(shop.app, len(ids), t0, t0 + args.timeout, progress, runner)
        elapsed = time.monotonic() - t0
        worker.stop()
        runner.join()
        ok = report(
            sys.stdout,
            records=collect(shop.app, ids),
            enqueued=args.jobs,
            received=sink.count,
            starts=starts.snapshot(),
            t0_wall=t0_wall,
            elapsed=elapsed,
            enqueue_s=enqueue_s,
            timed_out=not done,
            mix=mix,
            store=os.path.abspath(path) if args.db else "temporary SQLite file",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
