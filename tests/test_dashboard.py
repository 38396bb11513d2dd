"""The dashboard over HTTP (a real uvicorn server on loopback): pages, filters, actions, and
the security rules of DESIGN §8 — bind, authentication, host check, CSRF, escaping, limits."""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import jobq
from jobq.cli import main
from jobq.dashboard import data, security
from jobq.dashboard.security import Auth, check_bind, is_loopback
from jobq.exceptions import ConfigurationError
from tests.dashboard_support import Client, serving

XSS = "<script>window.__xss = 1</script>"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[jobq.App]:
    a = jobq.App(f"sqlite:///{tmp_path}/d.db")

    @a.task(name="ok")
    def ok(x: Any = None) -> Any:
        return {"echo": x}

    @a.task(name="boom", max_attempts=1)
    def boom(x: Any = None) -> None:
        raise ValueError(f"cannot handle {x}")

    @a.task(name="login", secret=["password", 1])
    def login(user: str, password: str) -> str:
        return user

    yield a
    a.close()


@pytest.fixture
def client(app: jobq.App) -> Iterator[Client]:
    with serving(app) as server:
        yield Client(server.url)


def run_burst(app: jobq.App, queues: list[str] | None = None) -> None:
    app.run_worker(queues=queues or ["default"], burst=True, threads=1, handle_signals=False)


# -- pages -------------------------------------------------------------------------------------


def test_pages_load(app: jobq.App, client: Client) -> None:
    app.enqueue("ok", args=[1])
    app.enqueue("boom", args=[2])
    app.enqueue("ok", args=[3], queue="mail")
    run_burst(app)

    page = client.get("/")
    assert page.status == 200
    assert 'data-queue="default"' in page.text and 'data-queue="mail"' in page.text
    assert page.text.count("<svg") == 2  # throughput and latency charts
    assert 'id="workers"' in page.text or "No worker processes registered" in page.text

    jobs = client.get("/jobs")
    assert jobs.status == 200
    assert re.findall(r'data-job-id="(\d+)"', jobs.text) == ["3", "2", "1"]  # newest first

    dead = client.get("/jobs/2")
    assert dead.status == 200
    assert "ValueError" in dead.text and "cannot handle 2" in dead.text
    assert "Traceback (most recent call last)" in dead.text
    assert "/jobs/2/retry" in dead.text  # a dead job offers retry ...
    assert "/jobs/2/cancel" not in dead.text  # ... not cancel

    done = client.get("/jobs/1")
    assert "&#34;echo&#34;: 1" in done.text or "&quot;echo&quot;: 1" in done.text

    missing = client.get("/jobs/999")
    assert missing.status == 404
    assert "no job with id 999" in missing.text

    css = client.get("/static/dashboard.css")
    assert css.status == 200 and "text/css" in (css.header("content-type") or "")
    assert client.get("/static/dashboard.js").status == 200


def test_security_headers(client: Client) -> None:
    page = client.get("/")
    csp = page.header("content-security-policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.header("x-content-type-options") == "nosniff"
    assert page.header("x-frame-options") == "DENY"
    assert page.header("cache-control") == "no-store"
    assert page.header("server") is None  # no version banner
    cookie = [v for k, v in page.headers.items() if k == "set-cookie"]
    assert cookie and "httponly" in cookie[0].lower() and "samesite=strict" in cookie[0].lower()


def test_script_argument_is_escaped(app: jobq.App, client: Client) -> None:
    job = app.enqueue("ok", args=[XSS], kwargs={"x": "<img src=x onerror=alert(1)>"})
    for path in ("/jobs", f"/jobs/{job.id}", "/jobs?q=script"):
        page = client.get(path)
        assert page.status == 200
        assert XSS not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page.text


def test_queue_and_task_names_are_escaped_too(app: jobq.App, client: Client) -> None:
    app.enqueue("ok", args=[1])
    page = client.get('/jobs?task=<b>bold</b>&queue="><x')
    assert "<b>bold</b>" not in page.text
    assert '"><x' not in page.text
    assert page.status == 400  # '"><x' is not a valid queue name
    assert "invalid queue name" in page.text


def test_secret_arguments_are_redacted(app: jobq.App, client: Client) -> None:
    job = app.enqueue("login", args=["alice", "hunter2-secret"])
    other = app.enqueue("login", kwargs={"user": "bob", "password": "s3cr3t-kw"})
    for path in ("/jobs", f"/jobs/{job.id}", f"/jobs/{other.id}"):
        page = client.get(path)
        assert "hunter2-secret" not in page.text and "s3cr3t-kw" not in page.text
        assert "***" in page.text
    assert "alice" in client.get(f"/jobs/{job.id}").text


# -- the job list: filters, search, paging, limits -----------------------------------------------


def ids(page_text: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-job-id="(\d+)"', page_text)]


def test_job_list_filters(app: jobq.App, client: Client) -> None:
    a = app.enqueue("ok", args=["apple"]).id
    b = app.enqueue("boom", args=["banana"]).id
    c = app.enqueue("ok", args=["cherry"], queue="mail").id
    run_burst(app)  # a completed, b dead; c waits in "mail"

    assert ids(client.get("/jobs?queue=mail").text) == [c]
    assert ids(client.get("/jobs?state=dead").text) == [b]
    assert ids(client.get("/jobs?task=ok").text) == [c, a]
    assert ids(client.get("/jobs?q=banan").text) == [b]
    assert ids(client.get("/jobs?queue=default&state=completed").text) == [a]
    assert ids(client.get("/jobs?task=nothing").text) == []
    assert "No jobs match" in client.get("/jobs?task=nothing").text
    bad = client.get("/jobs?state=bogus")
    assert bad.status == 400 and "unknown state" in bad.text


def test_job_list_pages_and_clamps(app: jobq.App, client: Client) -> None:
    for i in range(230):
        app.enqueue("ok", args=[i])
    first = client.get("/jobs?limit=25")
    assert ids(first.text) == list(range(230, 205, -1))
    older = re.search(r'href="/jobs\?([^"]*before=(\d+)[^"]*)" rel="next"', first.text)
    assert older is not None and older.group(2) == "206"
    assert ids(client.get("/jobs?limit=25&before=206").text) == list(range(205, 180, -1))

    assert len(ids(client.get("/jobs?limit=100000").text)) == data.MAX_PAGE  # clamped
    assert len(ids(client.get("/jobs?limit=0").text)) == 1
    assert len(ids(client.get("/jobs?limit=-5").text)) == 1
    assert len(ids(client.get("/jobs?limit=abc").text)) == data.DEFAULT_PAGE
    assert len(ids(client.get("/jobs?before=abc").text)) == data.DEFAULT_PAGE  # ignored
    long = client.get("/jobs?q=" + "x" * 5000)
    assert long.status == 200 and "x" * 201 not in long.text  # cut to 200 characters


def test_clamp_page_size() -> None:
    assert data.clamp_page_size("50") == 50
    assert data.clamp_page_size(10**9) == data.MAX_PAGE
    assert data.clamp_page_size("0") == data.MIN_PAGE
    assert data.clamp_page_size("1e3") == data.DEFAULT_PAGE
    assert data.clamp_page_size(None) == data.DEFAULT_PAGE


# -- actions -----------------------------------------------------------------------------------


def test_retry_cancel_delete(app: jobq.App, client: Client) -> None:
    dead = app.enqueue("boom", args=[1]).id
    run_burst(app)
    waiting = app.enqueue("ok", args=[2]).id

    r = client.post(f"/jobs/{dead}/retry")
    assert r.status == 303 and r.header("location") == f"/jobs/{dead}"
    assert app.get_job(dead).state is jobq.JobState.AVAILABLE
    assert f"job {dead} retried: now available" in client.get(f"/jobs/{dead}").text  # flash
    assert "retried" not in client.get(f"/jobs/{dead}").text  # shown once

    assert client.post(f"/jobs/{waiting}/cancel").status == 303
    assert app.get_job(waiting).state is jobq.JobState.CANCELLED
    again = client.post(f"/jobs/{waiting}/cancel")
    assert "already cancelled" in client.get(again.header("location") or "/").text

    r = client.post(f"/jobs/{waiting}/delete", {"next": f"/jobs/{waiting}"})
    assert r.header("location") == "/jobs"  # not back to the deleted job's page
    with pytest.raises(jobq.JobNotFound):
        app.get_job(waiting)

    # a bad action is an error shown to the user, not a crash
    r = client.post(f"/jobs/{dead}/retry")  # it is available now: cannot be retried
    assert r.status == 303
    assert "only completed, dead, cancelled or expired" in client.get(f"/jobs/{dead}").text
    assert client.post(f"/jobs/{dead}/explode").status == 404


def test_bulk_retry_of_dead_jobs(app: jobq.App, client: Client) -> None:
    for i in range(3):
        app.enqueue("boom", args=[i])
    app.enqueue("boom", args=[9], queue="mail")
    run_burst(app, ["default", "mail"])
    assert app.stats()["default"][jobq.JobState.DEAD] == 3

    r = client.post("/jobs/retry-dead", {"queue": "default", "next": "/jobs?state=dead"})
    assert r.status == 303 and r.header("location") == "/jobs?state=dead"
    assert "retried 3 dead jobs in queue default" in client.get("/jobs?state=dead").text
    assert app.stats()["default"].get(jobq.JobState.DEAD, 0) == 0
    assert app.stats()["mail"][jobq.JobState.DEAD] == 1  # another queue: untouched


def test_pause_and_resume_a_queue(app: jobq.App, client: Client) -> None:
    app.enqueue("ok", args=[1], queue="mail")
    assert client.post("/queues/pause", {"queue": "mail"}).status == 303
    assert app.queues()["mail"].paused
    page = client.get("/")
    assert "queue mail paused" in page.text
    assert re.search(r'data-queue="mail">.*?paused', page.text, re.S)
    client.post("/queues/resume", {"queue": "mail"})
    assert not app.queues()["mail"].paused
    bad = client.post("/queues/pause", {"queue": "no spaces allowed"})
    assert "invalid queue name" in client.get(bad.header("location") or "/").text


def test_redirects_stay_on_the_dashboard(app: jobq.App, client: Client) -> None:
    job = app.enqueue("ok").id
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = client.post(f"/jobs/{job}/cancel", {"next": target})
        assert r.header("location") == f"/jobs/{job}", target


# -- CSRF --------------------------------------------------------------------------------------


def test_post_without_csrf_token_is_refused(app: jobq.App, client: Client) -> None:
    job = app.enqueue("ok").id
    r = client.post(f"/jobs/{job}/cancel", token=None)
    assert r.status == 403 and "CSRF token" in r.text
    r = client.post(f"/jobs/{job}/cancel", token="A" * 43)  # well-formed but not the cookie's
    assert r.status == 403
    fresh = Client(client.base)  # no cookie at all, the token of another session
    r = fresh.post(f"/jobs/{job}/cancel", token=client.csrf())
    assert r.status == 403
    assert app.get_job(job).state is jobq.JobState.AVAILABLE


def test_cross_site_post_is_refused(app: jobq.App, client: Client) -> None:
    job = app.enqueue("ok").id
    token = client.csrf()
    for origin in ("http://evil.example", "null", f"https://{client.host}.evil.example"):
        r = client.post(f"/jobs/{job}/cancel", token=token, origin=origin)
        assert r.status == 403 and "cross-site request refused" in r.text, origin
    r = client.post(f"/jobs/{job}/cancel", token=token, origin=None)  # neither Origin nor Referer
    assert r.status == 403
    r = client.post(
        f"/jobs/{job}/cancel",
        token=token,
        origin=None,
        headers={"Referer": "http://evil.example/page"},
    )
    assert r.status == 403
    assert app.get_job(job).state is jobq.JobState.AVAILABLE
    r = client.post(
        f"/jobs/{job}/cancel", token=token, origin=None, headers={"Referer": client.base + "/"}
    )
    assert r.status == 303  # a same-origin Referer will do when a browser sends no Origin
    assert app.get_job(job).state is jobq.JobState.CANCELLED


def test_form_limits(app: jobq.App, client: Client) -> None:
    job = app.enqueue("ok").id
    token = client.csrf()
    r = client.post(f"/jobs/{job}/cancel", {"junk": "x" * 20000}, token=token)
    assert r.status == 413
    r = client.request(
        "POST",
        f"/jobs/{job}/cancel",
        body=b'{"csrf_token": "x"}',
        headers={"Content-Type": "application/json", "Origin": client.base},
    )
    assert r.status == 415
    assert client.get(f"/jobs/{job}/cancel").status == 405  # no state change on GET


# -- host check, bind and authentication --------------------------------------------------------


def test_unknown_host_header_is_refused(client: Client) -> None:
    assert client.get("/", headers={"Host": "evil.example"}).status == 400  # DNS rebinding
    assert (
        client.get("/", headers={"Host": f"localhost:{client.base.rsplit(':', 1)[1]}"}).status
        == 200
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_non_loopback_bind_needs_auth(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigurationError, match="without authentication") as info:
        check_bind(host, None)
    assert "JOBQ_DASHBOARD_TOKEN" in str(info.value) and "127.0.0.1" in str(info.value)
    check_bind(host, Auth(token="t" * 20))


def test_cli_refuses_a_public_bind_without_auth(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    monkeypatch.delenv(security.BASIC_AUTH_ENV, raising=False)
    code = main(["dashboard", "--host", "0.0.0.0", "--url", f"sqlite:///{tmp_path}/x.db"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("jobq: error: refusing to serve the dashboard on '0.0.0.0'")
    assert len(err.splitlines()) == 1
    monkeypatch.setenv(security.TOKEN_ENV, "short")
    code = main(["dashboard", "--host", "0.0.0.0", "--url", f"sqlite:///{tmp_path}/x.db"])
    _, err = capsys.readouterr()
    assert code == 2 and "too short" in err


def test_auth_from_env() -> None:
    assert Auth.from_env({}) is None
    auth = Auth.from_env({security.TOKEN_ENV: "a-token-long-enough"})
    assert auth is not None and auth.token == "a-token-long-enough"
    auth = Auth.from_env({security.BASIC_AUTH_ENV: "admin:pass:with:colons"})
    assert auth is not None and (auth.username, auth.password) == ("admin", "pass:with:colons")
    with pytest.raises(ConfigurationError, match="USER:PASSWORD"):
        Auth.from_env({security.BASIC_AUTH_ENV: "nopassword"})
    assert "a-token" not in repr(Auth(token="a-token-long-enough"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_authentication(app: jobq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    token = "tok-0123456789abcdef"
    auth = Auth(token=token, username="admin", password="correct horse battery")
    with serving(app, auth=auth) as server:
        c = Client(server.url)
        denied = c.get("/")
        assert denied.status == 401
        assert (denied.header("www-authenticate") or "").startswith("Basic realm=")
        assert c.get("/metrics").status == 401
        assert c.get("/static/dashboard.css").status == 401
        assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status == 200
        assert c.get("/", headers={"Authorization": basic("anyone", token)}).status == 200
        assert (
            c.get("/", headers={"Authorization": basic("admin", "correct horse battery")}).status
            == 200
        )
        for wrong in (
            f"Bearer {token}x",
            basic("root", "correct horse battery"),
            basic("admin", "wrong"),
            "Basic !!!notbase64",
            "Digest abc",
        ):
            assert c.get("/", headers={"Authorization": wrong}).status == 401, wrong
        # authenticated, any Host is fine (served behind a name), CSRF still applies
        ok = {"Authorization": f"Bearer {token}"}
        assert c.get("/", headers={**ok, "Host": "jobs.example.com"}).status == 200
    assert calls and all(isinstance(a, bytes) for a, _ in calls)


def test_missing_web_stack_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from jobq import dashboard

    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> Any:
        if name in ("starlette", "uvicorn"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(
        ConfigurationError, match=r"starlette, uvicorn.*pip install 'jobq\[dashboard\]'"
    ):
        dashboard.require_web_stack()


# -- /metrics ----------------------------------------------------------------------------------


def test_dashboard_metrics_are_store_gauges(app: jobq.App, client: Client) -> None:
    for i in range(3):
        app.enqueue("ok", args=[i])
    app.enqueue("boom", args=[0])
    app.enqueue("ok", queue="mail", delay=timedelta(hours=1))
    run_burst(app)
    app.pause_queue("mail")
    now = app.backend.now()
    app.backend.register_worker(jobq.WorkerInfo("h:1:aa", "h", 1, ("default",), 2, now, now))

    r = client.get("/metrics")
    assert r.status == 200 and (r.header("content-type") or "").startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }

    def depth(queue: str, state: str) -> float:
        return samples[("jobq_queue_depth", (("queue", queue), ("state", state)))]

    assert depth("default", "completed") == 3
    assert depth("default", "dead") == 1
    assert depth("mail", "scheduled") == 1
    assert depth("mail", "available") == 0
    assert samples[("jobq_queue_paused", (("queue", "mail"),))] == 1
    assert samples[("jobq_workers", (("alive", "true"),))] == 1
