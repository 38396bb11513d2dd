"""Tests for the demo SMTP sink (jobq.demo.smtp_sink)."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from jobq.demo.smtp_sink import Message, SmtpSink

WAIT = 30.0  # generous: only reached on failure


@contextmanager
def raw_session(port: int) -> Iterator[tuple[socket.socket, Iterator[bytes]]]:
    """A plain socket to the sink plus an iterator over the reply lines it sends."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock,
        sock.makefile("rb") as reader,
    ):
        yield sock, iter(reader.readline, b"")


def reply(lines: Iterator[bytes]) -> bytes:
    """Read one (possibly multi-line) SMTP reply and return its last line."""
    while (line := next(lines))[3:4] == b"-":
        pass
    return line


def test_delivers_messages_with_dot_unstuffing_and_multiple_recipients() -> None:
    body = b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two dots\r\nend\r\n"
    with SmtpSink() as sink, smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT) as smtp:
        assert smtp.sendmail("from@example.com", ["a@example.com", "b@example.com"], body) == {}
        for i in range(3):
            smtp.sendmail("from@example.com", [f"r{i}@example.com"], f"Subject: {i}\r\n\r\nhi\r\n")
        assert sink.wait_for(4, timeout=WAIT)
        messages = sink.messages
    assert sink.count == 4
    first = messages[0]
    assert isinstance(first, Message)
    assert first.mail_from == "from@example.com"
    assert first.rcpt_to == ("a@example.com", "b@example.com")
    assert first.data == body
    assert first.received_at > 0
    assert [m.rcpt_to for m in messages[1:]] == [(f"r{i}@example.com",) for i in range(3)]
    with pytest.raises(AttributeError):
        first.data = b""  # type: ignore[misc]


def test_permanent_reject_raises_recipients_refused_550() -> None:
    with SmtpSink(reject=lambda rcpt: rcpt.startswith("bad")) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT) as smtp:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
                smtp.sendmail("f@example.com", ["bad@example.com"], b"Subject: x\r\n\r\nx\r\n")
            code, text = info.value.recipients["bad@example.com"]
            assert (code, text) == (550, b"5.1.1 mailbox unavailable")
            refused = smtp.sendmail(
                "f@example.com", ["bad@example.com", "ok@example.com"], b"Subject: y\r\n\r\ny\r\n"
            )
            assert refused == {"bad@example.com": (550, b"5.1.1 mailbox unavailable")}
        assert sink.wait_for(1, timeout=WAIT)
        assert [m.rcpt_to for m in sink.messages] == [("ok@example.com",)]


def test_tempfail_on_first_attempt_then_success() -> None:
    seen: list[tuple[str, int]] = []

    def tempfail(rcpt: str, attempt: int) -> bool:
        seen.append((rcpt, attempt))
        return attempt == 1

    with SmtpSink(tempfail=tempfail) as sink:
        for _ in range(2):  # a new connection per attempt, like a retrying worker
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT) as smtp:
                try:
                    smtp.sendmail("f@example.com", ["t@example.com"], b"Subject: t\r\n\r\nt\r\n")
                except smtplib.SMTPRecipientsRefused as exc:
                    assert exc.recipients == {"t@example.com": (451, b"4.3.0 try again later")}
                    assert sink.count == 0
        assert sink.wait_for(1, timeout=WAIT)
    assert seen == [("t@example.com", 1), ("t@example.com", 2)]


def test_concurrent_deliveries_from_eight_threads() -> None:
    total = 200

    def send(i: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as smtp:
            smtp.sendmail("f@example.com", [f"u{i}@example.com"], f"Subject: {i}\r\n\r\n{i}\r\n")

    with SmtpSink() as sink:
        port = sink.port
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(send, range(total)))
        assert sink.wait_for(total, timeout=WAIT)
        assert sink.count == total
        assert {m.rcpt_to[0] for m in sink.messages} == {f"u{i}@example.com" for i in range(total)}


def test_unknown_and_out_of_sequence_commands() -> None:
    with SmtpSink() as sink, smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT) as smtp:
        assert smtp.docmd("FROBNICATE")[0] in (500, 502)
        assert smtp.docmd("VRFY", "someone")[0] == 502
        assert smtp.docmd("MAIL", "FROM:<f@example.com>")[0] == 503  # before EHLO
        smtp.ehlo()
        assert smtp.docmd("RCPT", "TO:<a@example.com>")[0] == 503  # before MAIL
        assert smtp.docmd("DATA")[0] == 503
        assert smtp.mail("f@example.com")[0] == 250
        assert smtp.docmd("MAIL", "FROM:<g@example.com>")[0] == 503  # nested
        assert smtp.docmd("DATA")[0] == 503  # no recipient yet
        assert smtp.noop()[0] == 250
        assert smtp.rset()[0] == 250
        assert smtp.docmd("RCPT", "TO:<a@example.com>")[0] == 503  # RSET cleared MAIL
        assert smtp.helo()[0] == 250
    assert sink.count == 0


def test_too_long_line_gets_500_and_session_continues() -> None:
    with SmtpSink() as sink, raw_session(sink.port) as (sock, lines):
        assert reply(lines).startswith(b"220")
        sock.sendall(b"NOOP " + b"x" * 5000 + b"\r\n")
        assert reply(lines).startswith(b"500")
        sock.sendall(b"NOOP\r\n")
        assert reply(lines).startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        assert reply(lines).startswith(b"221")


def test_oversized_message_gets_552() -> None:
    big = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 30  # ~2 KiB, short lines
    with SmtpSink(max_message_bytes=1000) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as info:  # rejected via SIZE=
                smtp.sendmail("f@example.com", ["a@example.com"], big)
            assert info.value.smtp_code == 552
            smtp.rset()
            smtp.helo()  # no ESMTP, so no SIZE hint: the limit is enforced on DATA
            assert smtp.mail("f@example.com")[0] == 250
            assert smtp.rcpt("a@example.com")[0] == 250
            assert smtp.data(big)[0] == 552
            assert smtp.sendmail("f@example.com", ["a@example.com"], b"small\r\n") == {}
        assert sink.wait_for(1, timeout=WAIT)
        assert sink.count == 1


def test_idle_connection_times_out_with_421() -> None:
    with SmtpSink(idle_timeout=0.2) as sink, raw_session(sink.port) as (_sock, lines):
        assert reply(lines).startswith(b"220")
        assert reply(lines).startswith(b"421")
        assert next(lines, b"") == b""  # then the server closes the connection


def test_connection_limit_answers_421() -> None:
    with SmtpSink(max_connections=1) as sink, raw_session(sink.port) as (_sock, lines):
        assert reply(lines).startswith(b"220")
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP("127.0.0.1", sink.port, timeout=WAIT)
        assert info.value.smtp_code == 421


def test_wait_for_times_out_without_messages() -> None:
    with SmtpSink() as sink:
        assert sink.wait_for(1, timeout=0.05) is False
        assert sink.wait_for(0, timeout=0) is True


def test_clean_shutdown_closes_port_and_open_sessions() -> None:
    sink = SmtpSink()
    with pytest.raises(RuntimeError):
        _ = sink.port
    with sink, raw_session(sink.port) as (_sock, lines):
        port = sink.port
        assert reply(lines).startswith(b"220")
        sink.close()  # with a client still connected and idle
        assert next(lines, b"") == b""  # the session was ended, not left to time out
    assert not [t for t in threading.enumerate() if t.name.startswith("smtp-sink")]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    with SmtpSink() as again:  # a sink can be started after another one closed
        assert again.port > 0
