"""A loopback HTTP server for outbound-request tests: it records requests and replies from a script."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from typing import Any


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Seconds to wait before replying, as a slow remote would.
    delay: float = 0.0
    # When set, the reply waits until this event is set instead.
    hold: threading.Event | None = None


@dataclasses.dataclass(frozen=True)
class Received:
    method: str
    path: str
    # Header names in lower case.
    headers: dict[str, str]
    body: bytes
    # time.monotonic() when the request body had arrived, to measure the gaps between retries.
    received_at: float = dataclasses.field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class HttpStub:
    """A threaded HTTP server on 127.0.0.1; each path sends its list of replies in turn.

    The last reply of a path repeats. A path without replies returns 200 `{"ok": true}`.
    """

    def __init__(self) -> None:
        self._routes: dict[str, list[Reply]] = {}
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self.connections = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                reply = stub._record(Received(self.command, self.path, headers, body))
                if reply.hold is not None:
                    reply.hold.wait(timeout=30)
                elif reply.delay:
                    time.sleep(reply.delay)
                content = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                if "Content-Type" not in reply.headers and not isinstance(reply.body, bytes):
                    self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_request

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with stub._changed:
                    stub.connections += 1
                return True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gave up, or a server killed mid-request, closes the socket first.
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> None:
        with self._changed:
            self._routes[path] = list(replies)

    def received(self, path: str) -> list[Received]:
        with self._changed:
            return [request for request in self._received if request.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until `path` has received `count` requests; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                received = [request for request in self._received if request.path == path]
                if len(received) >= count:
                    return received
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{path} received {len(received)} of {count} requests in {timeout} s"
                self._changed.wait(remaining)

    def _record(self, request: Received) -> Reply:
        with self._changed:
            self._received.append(request)
            self._changed.notify_all()
            replies = self._routes.get(request.path.split("?")[0], [Reply(body={"ok": True})])
            served = sum(1 for seen in self._received if seen.path == request.path)
            return replies[min(served, len(replies)) - 1]

    def start(self) -> HttpStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
