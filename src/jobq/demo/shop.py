"""The demo's shop: which customers exist, and the two email tasks it runs on jobq.

Customers are numbered 1..N. Whether a customer's mailbox works is decided by the number alone
(:func:`mailbox_fate`), so every run of the demo fails the same jobs in the same way.
"""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Literal

import jobq

Kind = Literal["reset", "vip", "normal"]
Fate = Literal["ok", "flaky", "reject"]

QUEUE = "emails"
VIP_PRIORITY, NORMAL_PRIORITY, RESET_PRIORITY = 9, 0, 10
MAX_ATTEMPTS = 3
RETRY = jobq.ExponentialBackoff(base=timedelta(milliseconds=200), max_delay=timedelta(seconds=2))
SMTP_TIMEOUT = 10.0  # seconds, for connect and every read/write of one SMTP session
TASK_TIMEOUT = timedelta(seconds=30)
SENDER = "Demo Shop <noreply@shop.example>"


def mailbox_fate(customer: int) -> Fate:
    """1 customer in 300 has no mailbox (550 on every attempt: the job ends dead); 1 in 50 is
    greylisted (451 on the first attempt only: the job succeeds on its retry)."""
    if customer % 300 == 150:
        return "reject"
    if customer % 50 == 7:
        return "flaky"
    return "ok"


def email_of(customer: int) -> str:
    return f"customer{customer}@example.com"


def order_id_of(customer: int) -> int:
    return 100_000 + customer


@dataclass
class Starts:
    """When each job's first attempt started, recorded by the tasks themselves (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: job id → (kind, enqueued at, first attempt started at), both as Unix timestamps
    by_job: dict[int, tuple[Kind, float, float]] = field(default_factory=dict)

    def record(self, kind: Kind) -> None:
        started = time.time()
        job = jobq.current_job()
        if job.attempt == 1:
            with self.lock:
                self.by_job[job.id] = (kind, job.created_at.timestamp(), started)

    def snapshot(self) -> list[tuple[Kind, float, float]]:
        with self.lock:
            return list(self.by_job.values())


def send_mail(port: int, to: str, subject: str, body: str) -> None:
    """Deliver one message to the SMTP server on 127.0.0.1:``port`` (a new connection each)."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    # local_hostname: without it smtplib resolves this host's FQDN on every connection.
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="jobq-demo-worker", timeout=SMTP_TIMEOUT
    ) as smtp:
        smtp.send_message(msg)  # a refused recipient (451 or 550) raises: jobq retries


@dataclass(frozen=True)
class Shop:
    """An app with the shop's two tasks registered under stable names."""

    app: jobq.App
    order_confirmation: jobq.Task[[int, str, bool], str]
    password_reset: jobq.Task[[int, str], str]


def build_shop(url: str, smtp_port: int, starts: Starts) -> Shop:
    """Register the email tasks on a new :class:`jobq.App` for ``url``."""
    app = jobq.App(url)

    @app.task(
        name="demo.send_order_confirmation",
        queue=QUEUE,
        priority=NORMAL_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        retry=RETRY,
        timeout=TASK_TIMEOUT,
    )
    def send_order_confirmation(order_id: int, email: str, vip: bool) -> str:
        starts.record("vip" if vip else "normal")
        greeting = "Thank you for being a VIP customer!\n\n" if vip else ""
        send_mail(
            smtp_port,
            email,
            f"Your order #{order_id} is confirmed",
            f"{greeting}We received order #{order_id} and will ship it soon.\n",
        )
        return f"sent to {email}"

    @app.task(
        name="demo.send_password_reset",
        queue=QUEUE,
        priority=RESET_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        retry=RETRY,
        timeout=TASK_TIMEOUT,
    )
    def send_password_reset(user_id: int, email: str) -> str:
        starts.record("reset")
        send_mail(
            smtp_port,
            email,
            "Reset your password",
            f"Follow this link within 30 minutes: https://shop.example/reset/{user_id}\n",
        )
        return f"sent to {email}"

    return Shop(app, send_order_confirmation, send_password_reset)
