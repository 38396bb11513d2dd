"""A small, self-contained SMTP sink for the ``jobq demo`` command.

:class:`SmtpSink` accepts mail on a local port so the demo can "send" real email
through :mod:`smtplib` without touching the network. It binds to the loopback
interface (``127.0.0.1``) by default, keeps every delivered message in memory and
can simulate permanent (550) and transient (451) recipient failures so the demo can
show retries and dead-lettering. It is a test double, not a mail server: there is
no TLS, no AUTH and nothing is relayed anywhere. Standard library only.

    with SmtpSink(tempfail=lambda rcpt, attempt: attempt == 1) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        sink.wait_for(1, timeout=5.0)
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["Message", "SmtpSink"]

MAX_LINE = 1000  # RFC 5321 limit for command and text lines, CRLF included
MAX_RECIPIENTS = 100
_HOSTNAME = "jobq-demo-sink"
_ADDRESS = re.compile(r"(?i)^(FROM|TO):\s*(<[^<>]*>|[^\s<>]+)\s*(.*)$")
_UNIMPLEMENTED = frozenset(
    {"VRFY", "EXPN", "HELP", "TURN", "ETRN", "AUTH", "STARTTLS", "BDAT", "SEND", "SOML", "SAML"}
)
_Request = socket.socket | tuple[bytes, socket.socket]


@dataclass(frozen=True, slots=True)
class Message:
    """One message the sink accepted: envelope, raw (dot-unstuffed) data, arrival time."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    received_at: float


class _Closed(Exception):
    """The client went away (EOF in the middle of the session)."""


class _Handler(socketserver.StreamRequestHandler):
    """One SMTP session; runs in its own thread."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sink.idle_timeout)
        self._greeted = False
        self._reset()

    def _reset(self) -> None:
        self._mail_from: str | None = None
        self._rcpt_to: list[str] = []

    def _reply(self, *lines: str) -> None:
        # One write per reply: a multi-line reply sent in pieces stalls on Nagle + delayed ACK.
        self.wfile.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def _readline(self) -> tuple[bytes, bool]:
        """Return ``(line, too_long)``; the rest of an over-long line is discarded."""
        line = self.rfile.readline(MAX_LINE + 1)
        if line.endswith(b"\n"):
            return line, len(line) > MAX_LINE
        if len(line) <= MAX_LINE:  # EOF, possibly after a partial line
            raise _Closed
        while not (rest := self.rfile.readline(MAX_LINE + 1)).endswith(b"\n"):
            if not rest:
                raise _Closed
        return line, True

    def handle(self) -> None:
        try:
            self._reply(f"220 {_HOSTNAME} ESMTP jobq demo sink ready")
            while self._command():
                pass
        except TimeoutError:
            with contextlib.suppress(OSError):
                self._reply("421 4.4.2 idle timeout, closing connection")
        except (_Closed, OSError):
            pass

    def _command(self) -> bool:
        raw, too_long = self._readline()
        if too_long:
            self._reply("500 5.5.2 line too long")
            return True
        verb, _, arg = raw.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
        verb, arg = verb.upper(), arg.strip()
        if verb in ("EHLO", "HELO"):
            if not arg:
                self._reply(f"501 5.5.4 syntax: {verb} hostname")
                return True
            self._greeted = True
            self._reset()
            if verb == "HELO":
                self._reply(f"250 {_HOSTNAME}")
            else:
                size = self.server.sink.max_message_bytes
                self._reply(f"250-{_HOSTNAME}", "250-8BITMIME", f"250-SIZE {size}", "250 OK")
        elif verb == "MAIL":
            self._mail(arg)
        elif verb == "RCPT":
            self._rcpt(arg)
        elif verb == "DATA":
            self._data()
        elif verb == "RSET":
            self._reset()
            self._reply("250 2.0.0 OK")
        elif verb == "NOOP":
            self._reply("250 2.0.0 OK")
        elif verb == "QUIT":
            self._reply("221 2.0.0 bye")
            return False
        elif verb in _UNIMPLEMENTED:
            self._reply("502 5.5.1 command not implemented")
        else:
            self._reply("500 5.5.2 command not recognized")
        return True

    def _mail(self, arg: str) -> None:
        if not self._greeted:
            return self._reply("503 5.5.1 send EHLO or HELO first")
        if self._mail_from is not None:
            return self._reply("503 5.5.1 nested MAIL command")
        match = _ADDRESS.match(arg)
        if match is None or match[1].upper() != "FROM":
            return self._reply("501 5.5.4 syntax: MAIL FROM:<address>")
        for param in match[3].split():
            key, _, value = param.partition("=")
            limit = self.server.sink.max_message_bytes
            if key.upper() == "SIZE" and value.isdigit() and int(value) > limit:
                return self._reply("552 5.3.4 message size exceeds fixed limit")
        self._mail_from = match[2].strip("<>")
        self._reply("250 2.1.0 OK")

    def _rcpt(self, arg: str) -> None:
        if self._mail_from is None:
            return self._reply("503 5.5.1 need MAIL before RCPT")
        match = _ADDRESS.match(arg)
        if match is None or match[1].upper() != "TO" or match[2] == "<>":
            return self._reply("501 5.5.4 syntax: RCPT TO:<address>")
        if len(self._rcpt_to) >= MAX_RECIPIENTS:
            return self._reply("452 4.5.3 too many recipients")
        recipient = match[2].strip("<>")
        reply = self.server.sink._check_recipient(recipient)
        if reply.startswith("250"):
            self._rcpt_to.append(recipient)
        self._reply(reply)

    def _data(self) -> None:
        if self._mail_from is None or not self._rcpt_to:
            return self._reply("503 5.5.1 need MAIL and RCPT before DATA")
        self._reply("354 end data with <CR><LF>.<CR><LF>")
        limit = self.server.sink.max_message_bytes
        chunks: list[bytes] = []
        size, too_big, any_too_long = 0, False, False
        while True:
            line, too_long = self._readline()
            if line in (b".\r\n", b".\n"):
                break
            any_too_long = any_too_long or too_long
            if line.startswith(b"."):
                line = line[1:]  # dot-unstuffing (RFC 5321 section 4.5.2)
            size += len(line)
            too_big = too_big or size > limit
            if not (too_big or any_too_long):
                chunks.append(line)  # stop buffering once the message is doomed
        mail_from, rcpt_to = self._mail_from, tuple(self._rcpt_to)
        self._reset()
        if any_too_long:
            return self._reply("500 5.5.2 line too long")
        if too_big:
            return self._reply("552 5.3.4 message size exceeds fixed limit")
        self.server.sink._deliver(Message(mail_from, rcpt_to, b"".join(chunks), time.time()))
        self._reply("250 2.0.0 OK: queued")


class _Server(socketserver.TCPServer):
    """A TCP server running each connection in a daemon thread it can force-close and join."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sink: SmtpSink, address: tuple[str, int]) -> None:
        self.sink = sink
        self.lock = threading.Lock()
        self.active: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        assert isinstance(request, socket.socket)  # TCP: always a connected socket
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="smtp-sink-conn"
        )
        with self.lock:
            full = len(self.active) >= self.sink.max_connections
            if not full:
                self.active[thread] = request
        if full:
            with contextlib.suppress(OSError):
                request.sendall(b"421 4.7.0 too many connections\r\n")
            self.shutdown_request(request)
        else:
            thread.start()

    def _run(self, request: _Request, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self.lock:
                del self.active[threading.current_thread()]
            self.shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        """Wake every open session (its next read sees EOF) and join its thread."""
        with self.lock:  # held so no session can close its socket while we shut it down
            threads = list(self.active)
            for sock in self.active.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SmtpSink:
    """A local SMTP server that records what it receives; for the ``jobq demo`` command.

    Binds ``127.0.0.1`` by default (``port=0`` picks a free port, see :attr:`port`) and
    serves from a background daemon thread between :meth:`start` and :meth:`close`, or
    inside a ``with`` block. ``reject(recipient)`` returning true answers that RCPT with
    ``550 5.1.1`` (permanent); ``tempfail(recipient, attempt_no)`` returning true answers
    ``451 4.3.0`` (transient), where ``attempt_no`` counts RCPTs for that exact address
    over the sink's lifetime, starting at 1. ``reject`` is consulted first. Exceptions
    from either callback end that client's connection. Lines over 1000 bytes get 500,
    messages over ``max_message_bytes`` get 552, sessions idle for ``idle_timeout``
    seconds are closed with 421, and connections beyond ``max_connections`` get 421.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reject: Callable[[str], bool] | None = None,
        tempfail: Callable[[str, int], bool] | None = None,
        max_message_bytes: int = 1 << 20,
        idle_timeout: float = 30.0,
        max_connections: int = 100,
    ) -> None:
        self.host, self._requested_port = host, port
        self._reject = reject or (lambda _rcpt: False)
        self._tempfail = tempfail or (lambda _rcpt, _attempt: False)
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._delivered = threading.Condition(threading.Lock())
        self._messages: list[Message] = []
        self._attempts: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    def start(self) -> Self:
        """Bind and start serving in a background daemon thread."""
        if self._server is not None:
            raise RuntimeError("SmtpSink is already running")
        server = _Server(self, (self.host, self._requested_port))
        self._port = int(server.socket.getsockname()[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"smtp-sink:{self._port}",
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end open sessions, close the socket and join the threads."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        server.shutdown()  # returns once serve_forever has stopped: no new sessions after this
        server.close_connections(timeout)
        server.server_close()
        thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("SmtpSink is not running")
        return self._port

    @property
    def messages(self) -> list[Message]:
        """A snapshot of the messages delivered so far, in arrival order."""
        with self._delivered:
            return list(self._messages)

    @property
    def count(self) -> int:
        """How many messages have been delivered."""
        with self._delivered:
            return len(self._messages)

    def wait_for(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` messages were delivered; False if ``timeout`` ran out."""
        with self._delivered:
            return self._delivered.wait_for(lambda: len(self._messages) >= n, timeout)

    def _check_recipient(self, recipient: str) -> str:
        with self._delivered:
            attempt = self._attempts[recipient] = self._attempts.get(recipient, 0) + 1
        if self._reject(recipient):
            return "550 5.1.1 mailbox unavailable"
        if self._tempfail(recipient, attempt):
            return "451 4.3.0 try again later"
        return "250 2.1.5 OK"

    def _deliver(self, message: Message) -> None:
        with self._delivered:
            self._messages.append(message)
            self._delivered.notify_all()
