"""Shared plumbing of the fake servers: a restartable ThreadingHTTPServer on 127.0.0.1 in a daemon thread.

Connections are HTTP/1.1 keep-alive like the real services, so an outage (`go_down`) must cut the live
connections too, not only the listening socket: otherwise a client's pooled connection keeps working.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class Abort(Exception):
    """Raised by a fake to drop the connection without an (or without the rest of its) answer."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # come_back() rebinds the same port while old sockets sit in TIME_WAIT
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, port: int, handler: type[BaseHandler], fake: FakeServer) -> None:
        self.fake = fake
        self.conns: set[socket.socket] = set()
        self.dead = False
        super().__init__(("127.0.0.1", port), handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class BaseHandler(BaseHTTPRequestHandler):
    """Request handler that forwards every request to `server.fake.handle(self, verb)`."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, delayed ACKs stall each reply ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent = False
        with self.server.fake.conns_lock:
            if self.server.dead:  # accepted during go_down(): behave like a refused connection
                _hard_close(self.connection)
            else:
                self.server.conns.add(self.connection)

    def handle(self) -> None:
        # A client that stops reading mid-answer (the SDK after [DONE]) is not a server error.
        with contextlib.suppress(ConnectionError):
            super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            with self.server.fake.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._run("GET")

    def do_POST(self) -> None:
        self._run("POST")

    def _run(self, verb: str) -> None:
        fake = self.server.fake
        try:
            fake.handle(self, verb)
        except Abort:
            self.close_connection = True
            _hard_close(self.connection)
        except OSError:  # the client went away (broken pipe, reset) or go_down() cut the socket
            self.close_connection = True
        except Exception:
            fake.internal_errors.append(traceback.format_exc())
            self.close_connection = True
            if not self.sent:
                with contextlib.suppress(OSError):
                    self.reply(500, b'{"error": "fake server bug, see .internal_errors"}')

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sent = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)  # wfile is unbuffered (wbufsize=0): bytes leave at once

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        self.sent = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class FakeServer:
    """Base class: lifecycle, outage simulation, a Condition notified on every change, `wait_for`."""

    handler_class: type[BaseHandler] = BaseHandler

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.conns_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Bumped by go_down()/stop(); a handler waiting since an older epoch gives up (its socket is gone).
        self._epoch = 0
        self.internal_errors: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is None:
            self._listen(self._port if self._port is not None else self._requested_port)
        return self

    def stop(self) -> None:
        self.go_down()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def go_down(self) -> None:
        """Simulate an outage: refuse new connections and cut the open ones. State is kept."""
        with self._cond:
            server, self._server = self._server, None
            self._epoch += 1
            self._cond.notify_all()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.conns_lock:
            server.dead = True
            conns = list(server.conns)
        for conn in conns:
            _hard_close(conn)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def come_back(self) -> None:
        """End an outage: listen again on the same port, with all state kept."""
        if self._port is None:
            raise RuntimeError("come_back() before start()")
        if self._server is None:
            self._listen(self._port)

    def _listen(self, port: int) -> None:
        server = _Server(port, self.handler_class, self)
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        with self._cond:
            self._server = server
        self._thread.start()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- synchronisation ---------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> bool:
        """Wait until `predicate()` is truthy; it is re-checked on every request and state change.

        Returns True, or raises AssertionError (with recent traffic, to debug) on timeout.
        """
        with self._cond:
            if self._cond.wait_for(predicate, timeout):
                return True
            label = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {label}\n{self._debug_summary()}")

    def _debug_summary(self) -> str:
        return ""

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _sleep(self, seconds: float, epoch: int) -> bool:
        """Wait `seconds` unless the server goes down meanwhile; True if it is still the same epoch."""
        with self._cond:
            return not self._cond.wait_for(lambda: self._epoch != epoch, seconds)

    def handle(self, request: BaseHandler, verb: str) -> None:
        raise NotImplementedError
