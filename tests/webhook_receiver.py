"""A real HTTP server on loopback that receives webhooks, answering as a test scripts it."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def type(self) -> str:
        return str(self.event["type"])

    def verify(self, secret: str) -> dict[str, Any]:
        """The payload, after the standardwebhooks package checked the signature."""
        verified: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return verified


class Receiver:
    """Records every request; answers 200 unless `answer` queued other statuses or delays."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: list[tuple[int, float]] = []
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(request)
                    status, delay = receiver._script.pop(0) if receiver._script else (200, 0.0)
                    if receiver._failures.get(request.type, 0) > 0:
                        receiver._failures[request.type] -= 1
                        status = 500
                if delay:
                    time.sleep(delay)
                payload = json.dumps({"received": True, "status": status}).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the sender gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def answer(self, *statuses: int, delay: float = 0.0) -> None:
        """Answer the next requests with these statuses (after `delay` seconds each)."""
        with self._lock:
            self._script.extend((status, delay) for status in statuses)

    def fail(self, event_type: str, times: int = 1) -> None:
        """Answer 500 to the next `times` requests carrying this event type."""
        with self._lock:
            self._failures[event_type] = self._failures.get(event_type, 0) + times

    def types(self) -> list[str]:
        return [request.type for request in self.received]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()
