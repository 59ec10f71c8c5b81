"""The HTTP transport: a `ThreadingHTTPServer` that feeds `simulator.app.Simulator` and can drop connections.

`start()` serves in a daemon thread and returns a `RunningSimulator` handle; `stop()` also cuts open
keep-alive connections, so a stopped simulator really is gone for its clients.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from simulator.app import Simulator
from simulator.auth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from simulator.jsonapi import error_response, standard_error
from simulator.protocol import JSON_API, Request, Response
from simulator.store import Store

log = logging.getLogger("simulator")

MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_SECONDS = 120  # an idle keep-alive connection is closed after this long
_HOST_HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CommerceLayerSimulator/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self._server.untrack(self.connection)

    # Every method reaches the simulator, which answers 404/405 as JSON:API errors.
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_GET

    def _dispatch(self) -> None:
        started = time.monotonic()
        received_at = time.time()
        path, query = _split_target(self.path)
        body = self._read_body()
        if isinstance(body, Response):
            response = body
        else:
            request = Request(
                method=self.command,
                path=path,
                query=query,
                headers=tuple(self.headers.items()),
                body=body,
                base_url=self._base_url(),
                received_at=received_at,
            )
            response = self._server.simulator.handle(request)
        if response.drop:
            self._drop()
        else:
            self._write(response)
        elapsed_ms = (time.monotonic() - started) * 1000
        status = "dropped" if response.drop else str(response.status)
        log.info("%s %s %s %.1fms", self.command, _printable(path), status, elapsed_ms)

    def _base_url(self) -> str:
        host = self.headers.get("Host", "").strip()
        if host and len(host) <= 255 and set(host) <= _HOST_HEADER_CHARS:
            return f"http://{host}"
        return self._server.url

    def _read_body(self) -> bytes | Response:
        """The request body, or the error to answer (the connection is then closed)."""
        transfer_encoding = self.headers.get("Transfer-Encoding")
        if transfer_encoding is not None:
            if transfer_encoding.strip().lower() != "chunked":
                return _closing(standard_error(400, detail="Unsupported Transfer-Encoding."))
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            return _closing(standard_error(400, detail="Invalid Content-Length."))
        if length > MAX_BODY_BYTES:
            return _closing(standard_error(413))
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | Response:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return _closing(standard_error(400, detail="Invalid chunked body."))
            if size == 0:
                while self.rfile.readline(65536).strip():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                return _closing(standard_error(413))
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            no_body = response.status in (204, 304) or response.status < 200
            if response.content_type and not no_body:
                self.send_header("Content-Type", response.content_type)
            if not no_body:
                self.send_header("Content-Length", str(len(response.body)))
            if response.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if response.body and not no_body and self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, headers too long...) as JSON:API."""
        try:
            short, long = self.responses.get(code, ("Error", "Error"))
            response = error_response(
                code,
                message or short,
                explain or long,
                short.upper().replace(" ", "_").replace("-", "_"),
            )
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # not parsed yet: answer with a status line anyway
                self.request_version = "HTTP/1.0"
            self.send_response(code, message)
            self.send_header("Content-Type", JSON_API)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_dispatch` logs one line per request itself (without query strings or headers)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], _printable(format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.url = ""
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class RunningSimulator:
    """A simulator serving in a background thread."""

    def __init__(self, server: _Server, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        self.host = host
        self.port = int(server.server_address[1])
        self.listen_url = f"http://{_url_host(host)}:{self.port}"
        connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.url = f"http://{_url_host(connect_host)}:{self.port}"
        server.url = self.url

    @property
    def simulator(self) -> Simulator:
        return self._server.simulator

    @property
    def store(self) -> Store:
        return self._server.simulator.store

    def reset(self) -> None:
        self._server.simulator.reset()

    def stop(self) -> None:
        """Stop serving and cut every open connection; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    token_ttl: int = 7200,
    test_mode: bool = True,
    sample: bool = False,
) -> RunningSimulator:
    """Start a simulator on host:port (0: any free port) in a daemon thread."""
    simulator = Simulator(
        client_id=client_id,
        client_secret=client_secret,
        token_ttl=token_ttl,
        test_mode=test_mode,
    )
    if sample:
        simulator.store.seed_sample()
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), simulator)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"simulator-{server.server_address[1]}",
        daemon=True,
    )
    running = RunningSimulator(server, thread, host)
    thread.start()
    return running


def _split_target(target: str) -> tuple[str, str]:
    """Path and raw query of a request target (origin-form or absolute-form)."""
    if not target.startswith("/"):
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    target = target.split("#", 1)[0]
    path, _, query = target.partition("?")
    return path, query


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _closing(response: Response) -> Response:
    response.close = True
    return response


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
