"""The dashboard in headless Chromium: load each page, filter, open a job, retry a dead job and
watch a real worker run it, pause a queue, and check that a ``<script>`` argument is shown as
text (never run) and that a cross-site form POST is refused."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.worker import Worker
from tests.browser.conftest import TIMEOUT_MS
from tests.dashboard_support import serving

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS = "<script>window.__xss = 1; alert('xss')</script>"


@dataclass
class Setup:
    app: jobq.App
    url: str
    broken: dict[str, bool]
    ids: dict[str, int]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A store with a few jobs (one of them dead), a real worker thread serving "default",
    and the dashboard on a free loopback port."""
    app = jobq.App(f"sqlite:///{tmp_path}/b.db")
    broken = {"now": True}

    @app.task(name="send_email")
    def send_email(order: int, to: str) -> str:
        return f"sent {order} to {to}"

    @app.task(name="charge_card", max_attempts=1)
    def charge_card(order: int) -> str:
        if broken["now"]:
            raise ConnectionError("payment gateway unreachable")
        return f"charged {order}"

    ids = {
        "email": send_email.enqueue(1, "ann@example.com").id,
        "charge": charge_card.enqueue(2).id,
        "xss": send_email.enqueue(3, XSS).id,
        "mail": app.enqueue("digest", args=["weekly"], queue="mail").id,
    }
    worker: Worker = app.worker(["default"], threads=2, poll_interval=0.1)
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        give_up = time.monotonic() + TIMEOUT_MS / 1000
        while app.get_job(ids["charge"]).state is not jobq.JobState.DEAD:
            assert time.monotonic() < give_up, "the worker did not run the seed jobs"
            time.sleep(0.02)
        with serving(app) as server:
            yield Setup(app, server.url, broken, ids)
    finally:
        worker.stop()
        thread.join(30)
        app.close()


def expect(obj: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(obj)


def test_every_page_loads_and_filters_work(setup: Setup, page: Any) -> None:
    page.goto(setup.url + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator('#queues tr[data-queue="default"]')).to_be_visible()
    expect(page.locator('#queues tr[data-queue="mail"]')).to_be_visible()
    assert page.locator("svg.chart").count() == 2

    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("h1")).to_have_text("Jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(4)

    page.select_option('select[name="state"]', "dead")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-job-id="{setup.ids["charge"]}"]')).to_be_visible()

    page.goto(setup.url + "/jobs")
    page.fill('input[name="q"]', "ann@example")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.get_by_role("link", name=str(setup.ids["email"]), exact=True).click()

    expect(page.locator("h1")).to_contain_text(f"Job {setup.ids['email']}")
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#result")).to_contain_text("sent 1 to ann@example.com")
    expect(page.locator("#args")).to_contain_text("ann@example.com")

    page.goto(setup.url + "/metrics")
    assert "jobq_queue_depth" in page.content()


def test_retry_a_dead_job_and_see_it_run(setup: Setup, page: Any) -> None:
    job_id = setup.ids["charge"]
    page.goto(f"{setup.url}/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("dead")
    expect(page.locator("#attempts")).to_contain_text("payment gateway unreachable")
    page.get_by_text("traceback").first.click()
    expect(page.locator("pre.tb").first).to_contain_text("ConnectionError")

    setup.broken["now"] = False  # the gateway is back
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_contain_text(f"job {job_id} retried")

    # the worker thread picks it up; reload until the page shows the outcome
    give_up = time.monotonic() + TIMEOUT_MS / 1000
    while page.locator("#job-state").inner_text().strip() != "completed":
        assert time.monotonic() < give_up, "the retried job did not complete"
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#result")).to_contain_text("charged 2")
    assert setup.app.get_job(job_id).state is jobq.JobState.COMPLETED


def test_pause_and_resume_a_queue(setup: Setup, page: Any) -> None:
    page.goto(setup.url + "/")
    row = page.locator('#queues tr[data-queue="mail"]')
    row.get_by_role("button", name="Pause").click()  # confirm() is accepted by the fixture
    expect(page.locator(".flash")).to_contain_text("queue mail paused")
    expect(page.locator('#queues tr[data-queue="mail"] .badge.paused')).to_be_visible()
    assert setup.app.queues()["mail"].paused
    assert any("Pause queue mail" in message for _, message in page.dialogs)

    page.locator('#queues tr[data-queue="mail"]').get_by_role("button", name="Resume").click()
    expect(page.locator(".flash")).to_contain_text("queue mail resumed")
    expect(page.locator('#queues tr[data-queue="mail"] .badge.paused')).to_have_count(0)
    assert not setup.app.queues()["mail"].paused


def test_script_argument_is_shown_not_run(setup: Setup, page: Any) -> None:
    for path in ("/jobs", "/jobs?q=__xss", f"/jobs/{setup.ids['xss']}"):
        page.goto(setup.url + path)
        expect(page.locator("main")).to_contain_text("window.__xss = 1")
        assert page.evaluate("window.__xss") is None
    expect(page.locator("#args")).to_contain_text(XSS)  # as text, exactly
    assert not [d for d in page.dialogs if d[0] == "alert"]


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another origin's page that submits a form to the dashboard as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><html><body><h1>Win a prize</h1>"
            f'<form id="f" method="post" action="{self.target}">'
            '<input type="hidden" name="csrf_token" value="guessed-token">'
            "</form><script>document.getElementById('f').submit();</script></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_cross_site_post_is_refused(setup: Setup, page: Any) -> None:
    job_id = setup.ids["mail"]  # waiting in the paused-free "mail" queue, no worker serves it
    page.goto(f"{setup.url}/jobs/{job_id}")  # the victim has a dashboard session (cookie)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()

    handler = type("Attacker", (_AttackerPage,), {"target": f"{setup.url}/jobs/{job_id}/cancel"})
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        # "localhost" is another origin than the dashboard's "127.0.0.1"
        with page.expect_navigation(url=f"{setup.url}/jobs/{job_id}/cancel"):
            page.goto(f"http://localhost:{evil.server_address[1]}/")
        expect(page.locator("main")).to_contain_text("cross-site request refused")
    finally:
        evil.shutdown()
        evil.server_close()
    assert setup.app.get_job(job_id).state is jobq.JobState.AVAILABLE

    # the dashboard's own button still works
    page.goto(f"{setup.url}/jobs/{job_id}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash")).to_contain_text(f"job {job_id} cancelled")
    assert setup.app.get_job(job_id).state is jobq.JobState.CANCELLED
