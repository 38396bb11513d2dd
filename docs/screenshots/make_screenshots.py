"""Make the README's dashboard screenshots from a store with an hour of realistic history.

    python docs/screenshots/make_screenshots.py [--out docs/screenshots] [--chromium PATH]

It simulates a small web shop's queues for the last hour directly against a SQLite store
(enqueues, claims and outcomes at simulated times, so the charts have history), leaves a few
jobs running with progress on three registered workers, serves the dashboard on a free
loopback port and saves ``overview.png``, ``jobs.png`` and ``job.png`` with headless Chromium.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import jobq
from jobq.backends.base import Lease, NewJob, Outcome, OutcomeKind
from jobq.dashboard.server import start_in_thread
from jobq.job import AttemptError, JobRecord

HERE = Path(__file__).resolve().parent
STEP = timedelta(seconds=3)
WORKERS = [("web-1", 4121), ("web-1", 4122), ("batch-1", 913)]
THREADS = 8

WEBHOOK_TB = """Traceback (most recent call last):
  File "/srv/shop/shop/webhooks.py", line 41, in deliver
    response = session.post(url, json=payload, timeout=10)
  File "/srv/shop/.venv/lib/python3.12/site-packages/requests/sessions.py", line 637, in post
    return self.request("POST", url, data=data, json=json, **kwargs)
  File "/srv/shop/.venv/lib/python3.12/site-packages/requests/adapters.py", line 700, in send
    raise ConnectionError(e, request=request)
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='hooks.partner.example', port=443):
Max retries exceeded with url: /orders (Caused by NewConnectionError('Connection refused'))
"""


@dataclass
class Kind:
    queue: str
    task: str
    per_min: float
    run: tuple[float, float]  # seconds, lognormal-ish range
    fail: float = 0.0
    max_attempts: int = 3
    deadline: timedelta | None = None
    priority: int = 0


KINDS = [
    Kind("emails", "shop.emails.send_order_confirmation", 24, (0.08, 0.6), fail=0.02),
    Kind("emails", "shop.auth.send_password_reset", 6, (0.05, 0.3), deadline=timedelta(seconds=5)),
    Kind("webhooks", "shop.webhooks.deliver", 10, (0.2, 2.5), fail=0.18, max_attempts=3),
    Kind("reports", "shop.reports.build_daily", 0.4, (40.0, 160.0), priority=-1),
]


def args_for(kind: Kind, n: int) -> tuple[list[object], dict[str, object], tuple[str, ...]]:
    if kind.task.endswith("send_order_confirmation"):
        return [10_000 + n, f"customer{n % 97}@example.com"], {"vip": n % 11 == 0}, ()
    if kind.task.endswith("send_password_reset"):
        return (
            [f"user{n % 53}@example.com"],
            {"token": f"rst_{random.getrandbits(64):x}"},
            ("token",),
        )
    if kind.task.endswith("deliver"):
        return (
            ["https://hooks.partner.example/orders"],
            {"event": "order.paid", "order_id": 10_000 + n},
            (),
        )
    return [f"2025-06-{1 + n % 28:02d}"], {"format": "csv"}, ()


def simulate(app: jobq.App, now: datetime) -> None:
    b = app.backend
    rng = random.Random(7)
    random.seed(7)
    t = now - timedelta(minutes=62)
    events: list[tuple[datetime, int, Outcome]] = []
    running = 0
    n = 0
    by_id: dict[int, Kind] = {}
    worker_ids = [f"{h}:{p}:{i:02x}a1b2" for i, (h, p) in enumerate(WORKERS)]
    while t < now:
        # finish what is due before this step, in time order
        while events and events[0][0] <= t:
            at, _, outcome = heapq.heappop(events)
            b.record_outcomes([outcome], now=at)
            running -= 1
        b.promote_due(now=t)
        minute = (now - t).total_seconds() / 60
        load = 1.0 + 0.6 * math.sin(minute / 9.0) + (1.4 if 18 < minute < 24 else 0.0)
        new: list[NewJob] = []
        for kind in KINDS:
            expected = kind.per_min * load * STEP.total_seconds() / 60
            for _ in range(int(expected) + (rng.random() < expected % 1)):
                n += 1
                a, k, secret = args_for(kind, n)
                new.append(
                    NewJob(
                        queue=kind.queue,
                        task=kind.task,
                        args_json=json.dumps(a),
                        kwargs_json=json.dumps(k),
                        priority=kind.priority + (5 if k.get("vip") else 0),
                        max_attempts=kind.max_attempts,
                        deadline=t + kind.deadline if kind.deadline else None,
                        secret=secret,
                    )
                )
        for r in b.enqueue_many(new, now=t):
            by_id[r.id] = next(k for k in KINDS if k.task == r.task)
        free = len(WORKERS) * THREADS - running
        # an outage of the partner's webhooks, and a slow minute for everyone
        slow = 20 < minute < 23
        claim_at = t + timedelta(seconds=rng.uniform(0.02, 0.4) + (6 if slow else 0))
        if free > 0:
            claimed = b.claim(
                ["emails", "webhooks", "reports"],
                free,
                worker_id=rng.choice(worker_ids),
                lease=timedelta(minutes=5),
                now=claim_at,
            )
            for r in claimed:
                running += 1
                kind = by_id[r.id]
                lo, hi = kind.run
                took = math.exp(rng.uniform(math.log(lo), math.log(hi)))
                heapq.heappush(
                    events,
                    (
                        claim_at + timedelta(seconds=took),
                        r.id,
                        _outcome(r, kind, claim_at, rng, slow),
                    ),
                )
        t += STEP
    while events and events[0][0] <= now:
        at, _, outcome = heapq.heappop(events)
        b.record_outcomes([outcome], now=at)
    # what is still running now: on the workers, with progress
    for i, (host, pid) in enumerate(WORKERS):
        b.register_worker(
            jobq.WorkerInfo(
                worker_ids[i], host, pid, ("emails", "webhooks", "reports"), THREADS, now, now
            )
        )
        b.worker_heartbeat(worker_ids[i], jobs_run=800 + 137 * i)
    # long reports still running, with progress
    reports = b.enqueue_many(
        [
            NewJob(
                queue="reports",
                task="shop.reports.build_daily",
                args_json=json.dumps([f"2025-06-{d:02d}"]),
                kwargs_json=json.dumps({"format": "csv"}),
                priority=-1,
                max_attempts=3,
            )
            for d in range(1, 6)
        ],
        now=now - timedelta(minutes=3),
    )
    for i in range(len(reports)):
        [claimed] = b.claim(
            ["reports"],
            1,
            worker_id=worker_ids[i % len(worker_ids)],
            lease=timedelta(minutes=5),
            now=now - timedelta(seconds=150 - 25 * i),
        )
        assert claimed.lease_token is not None
        done = 0.85 - 0.17 * i
        b.set_progress(
            Lease(claimed.id, claimed.lease_token), done, f"{int(done * 4200)} of 4200 orders"
        )
    # a backlog, a blocked job, and a paused queue
    backlog = [
        NewJob(
            queue="emails",
            task="shop.emails.send_order_confirmation",
            args_json=json.dumps([20_000 + i, f"late{i}@example.com"]),
            kwargs_json="{}",
            priority=0,
            max_attempts=3,
        )
        for i in range(37)
    ]
    recs = b.enqueue_many(backlog)
    b.enqueue_many(
        [
            NewJob(
                queue="reports",
                task="shop.reports.email_summary",
                args_json=json.dumps(["ops@example.com"]),
                kwargs_json="{}",
                priority=0,
                max_attempts=3,
                depends_on=(recs[0].id,),
            )
        ]
    )
    app.pause_queue("reports")


def _outcome(r: JobRecord, kind: Kind, at: datetime, rng: random.Random, slow: bool) -> Outcome:
    assert r.lease_token is not None
    lease = Lease(r.id, r.lease_token)
    if r.deadline is not None and at > r.deadline:
        err = AttemptError(
            r.attempt,
            at,
            "DeadlineExpired",
            f"deadline {r.deadline.isoformat()} passed before the job started",
        )
        return Outcome(lease, OutcomeKind.EXPIRED, error=err)
    fails = rng.random() < (kind.fail * (4 if slow and "webhooks" in kind.queue else 1))
    if not fails:
        return Outcome(lease, OutcomeKind.COMPLETED, result_json=json.dumps({"ok": True}))
    err = AttemptError(
        r.attempt,
        at,
        "ConnectionError",
        "HTTPSConnectionPool(host='hooks.partner.example', port=443): Max retries exceeded",
        WEBHOOK_TB,
    )
    if r.attempt >= r.max_attempts:
        return Outcome(lease, OutcomeKind.DEAD, error=err)
    return Outcome(lease, OutcomeKind.RETRY, error=err, delay=timedelta(seconds=20 * r.attempt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the header shows the store's URL: keep it short
        app = jobq.App("sqlite:///shop.db?synchronous=normal")
        simulate(app, app.backend.now())
        dead = app.list_jobs(state="dead", queue="webhooks", limit=1)[0].id
        server = start_in_thread(app)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium)
                page = browser.new_page(
                    viewport={"width": 1360, "height": 900}, device_scale_factor=1
                )
                page.add_init_script("localStorage.setItem('jobq-autorefresh', 'off')")
                page.goto(server.url + "/")
                page.screenshot(path=str(out / "overview.png"), full_page=True)
                page.goto(server.url + "/jobs?queue=reports&limit=25")
                page.screenshot(path=str(out / "jobs.png"), full_page=False)
                page.goto(f"{server.url}/jobs/{dead}")
                page.locator("details summary").last.click()
                page.screenshot(path=str(out / "job.png"), full_page=True)
                browser.close()
        finally:
            server.stop()
            app.close()
    print(f"wrote overview.png, jobs.png and job.png to {out}")


if __name__ == "__main__":
    main()
