"""The dashboard's pages and actions: one Starlette route each, server-rendered with Jinja2
(autoescaped), store work run in a thread so the event loop never waits on the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobq.app import App
from jobq.backends import redact_url
from jobq.dashboard import charts, data
from jobq.dashboard.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Auth,
    Guard,
    csrf_ok,
    new_csrf_token,
    same_origin,
    valid_csrf_cookie,
)
from jobq.exceptions import InvalidTransition, JobNotFound, JobqError
from jobq.metrics import store_registry
from jobq.states import JobState

T = TypeVar("T")
FLASH_COOKIE = "jobq_flash"
#: Largest form body accepted (the forms hold a token and a few short fields).
MAX_FORM_BYTES = 16 * 1024
MAX_FLASH_CHARS = 300


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("jobq.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name: a job's data is never markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["duration"] = data.duration
    env.filters["percent"] = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    env.globals["states"] = [s.value for s in JobState]
    env.globals["page_sizes"] = data.PAGE_SIZES
    env.globals["qs"] = lambda params: urlencode(params)
    return env


def safe_next(value: str | None, default: str) -> str:
    """A same-site path to go back to after an action, never another site's URL."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


class Dashboard:
    """The pages and actions of one dashboard over ``app``'s store."""

    def __init__(self, app: App, *, refresh_seconds: float = 5.0) -> None:
        self.app = app
        self.refresh_seconds = refresh_seconds
        self.env = _templates()
        self.cache: data.TTLCache[data.Activity] = data.TTLCache(2.0)
        self.registry = store_registry(app)

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id:int}", self.job, methods=["GET"]),
            Route("/jobs/{job_id:int}/{action:str}", self.job_action, methods=["POST"]),
            Route("/jobs/retry-dead", self.retry_dead, methods=["POST"]),
            Route("/queues/{action:str}", self.queue_action, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Mount("/static", StaticFiles(packages=[("jobq.dashboard", "static")]), name="static"),
        ]

    # -- rendering ---------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        """Render ``template`` with the CSRF token and any flash message; set their cookies."""
        token = valid_csrf_cookie(request.cookies.get(CSRF_COOKIE))
        fresh = token is None
        if token is None:
            token = new_csrf_token()
        flash = _read_flash(request.cookies.get(FLASH_COOKIE))
        html = self.env.get_template(template).render(
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            flash=flash,
            store=redact_url(self.app.url),
            path=request.url.path,
            here=_here(request),
            refresh_seconds=self.refresh_seconds,
            **ctx,
        )
        response = HTMLResponse(html, status_code=status)
        secure = request.url.scheme == "https"
        if fresh:
            response.set_cookie(
                CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
            )
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(
            request, "error.html", status=status, status_code=status, message=message
        )

    # -- pages -------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        ov = await run_in_threadpool(data.overview, self.app, self.cache)
        return self.render(
            request,
            "overview.html",
            ov=ov,
            throughput=charts.throughput_chart(ov.activity.buckets),
            latency=charts.latency_chart(ov.activity.buckets),
        )

    async def jobs(self, request: Request) -> Response:
        f = data.JobFilters.from_query(request.query_params)
        queues = await run_in_threadpool(self._queue_names)
        try:
            page = await run_in_threadpool(data.job_page, self.app, f)
        except JobqError as exc:
            return self.render(
                request, "jobs.html", status=400, f=f, page=None, queues=queues, problem=str(exc)
            )
        return self.render(request, "jobs.html", f=f, page=page, queues=queues, problem=None)

    async def job(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        try:
            detail = await run_in_threadpool(data.job_detail, self.app, job_id)
        except JobNotFound as exc:
            return self.error(request, 404, str(exc))
        return self.render(request, "job.html", d=detail, r=detail.record)

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # -- actions -----------------------------------------------------------------------------

    async def job_action(self, request: Request) -> Response:
        form = await self.read_form(request)
        job_id = int(request.path_params["job_id"])
        action = request.path_params["action"]
        if action not in ("retry", "cancel", "delete"):
            raise HTTPException(404, f"unknown job action {action!r}: use retry, cancel or delete")
        back = safe_next(form.get("next"), f"/jobs/{job_id}")
        if action == "delete" and back.split("?")[0] == f"/jobs/{job_id}":
            back = "/jobs"  # its page is gone
        return await self._act(lambda: self._job_verb(job_id, action), back)

    def _job_verb(self, job_id: int, action: str) -> str:
        if action == "retry":
            return f"job {job_id} retried: now {self.app.retry(job_id).state.value}"
        if action == "cancel":
            if self.app.cancel(job_id):
                return f"job {job_id} cancelled"
            state = self.app.get_job(job_id).state.value
            raise InvalidTransition(f"job {job_id} is already {state}: nothing to cancel")
        if self.app.delete(job_id):
            return f"job {job_id} deleted"
        raise JobNotFound(f"no job with id {job_id} (it may have been deleted or pruned)")

    async def retry_dead(self, request: Request) -> Response:
        form = await self.read_form(request)
        queue = (form.get("queue") or "").strip() or None
        task = (form.get("task") or "").strip() or None
        back = safe_next(form.get("next"), "/jobs?state=dead")

        def run() -> str:
            n = self.app.retry_many(queue=queue, state=JobState.DEAD, task=task)
            where = " ".join(
                x
                for x in (f"in queue {queue}" if queue else "", f"of task {task}" if task else "")
                if x
            )
            return f"retried {n} dead job{'s' if n != 1 else ''}{' ' + where if where else ''}"

        return await self._act(run, back)

    async def queue_action(self, request: Request) -> Response:
        form = await self.read_form(request)
        action = request.path_params["action"]
        name = (form.get("queue") or "").strip()
        back = safe_next(form.get("next"), "/")

        def run() -> str:
            if action == "pause":
                self.app.pause_queue(name)
                return f"queue {name} paused: workers start none of its jobs until it is resumed"
            self.app.resume_queue(name)
            return f"queue {name} resumed"

        if action not in ("pause", "resume"):
            raise HTTPException(404, f"unknown queue action {action!r}: use pause or resume")
        return await self._act(run, back)

    async def _act(self, run: Callable[[], str], back: str) -> Response:
        """Run a state-changing action, then redirect (303) to ``back`` with its message."""
        try:
            message, kind = await run_in_threadpool(run), "ok"
        except JobqError as exc:
            message, kind = str(exc), "error"
        self.cache.clear()
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(
            FLASH_COOKIE,
            quote(f"{kind}:{message[:MAX_FLASH_CHARS]}"),
            httponly=True,
            samesite="strict",
            path="/",
            max_age=60,
        )
        return response

    async def read_form(self, request: Request) -> dict[str, str]:
        """The urlencoded form of a POST, after the CSRF checks; 403/413/415 otherwise."""
        if not same_origin(request.headers):
            raise HTTPException(
                403,
                "cross-site request refused: the Origin (or Referer) of this request is not this "
                "dashboard; use the dashboard's own buttons",
            )
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, f"form larger than {MAX_FORM_BYTES} bytes")
        try:
            parsed = parse_qs(body.decode("utf-8"), max_num_fields=20, keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "malformed form") from None
        form = {k: v[0] for k, v in parsed.items()}
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            raise HTTPException(
                403, "missing or wrong CSRF token: reload the page and try the action again"
            )
        return form

    def _queue_names(self) -> list[str]:
        return sorted(set(self.app.stats()) | set(self.app.queues()))


def _here(request: Request) -> str:
    """This page's path and query, to come back to after an action."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _read_flash(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    kind, _, message = unquote(raw).partition(":")
    if kind not in ("ok", "error") or not message:
        return None
    return {"kind": kind, "message": message[:MAX_FLASH_CHARS]}


def create_app(
    app: App,
    *,
    auth: Auth | None = None,
    allowed_hosts: frozenset[str] = frozenset(),
    refresh_seconds: float = 5.0,
) -> Any:
    """The dashboard as an ASGI application over ``app``'s store, behind the :class:`Guard`.

    ``allowed_hosts``: the ``Host`` names requests may use (see
    :func:`jobq.dashboard.security.allowed_host_names`); empty means any.
    """
    dashboard = Dashboard(app, refresh_seconds=refresh_seconds)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return dashboard.error(request, exc.status_code, str(exc.detail))

    starlette = Starlette(routes=dashboard.routes(), exception_handlers={HTTPException: http_error})
    starlette.state.dashboard = dashboard
    return Guard(starlette, auth=auth, allowed_hosts=allowed_hosts)
