"""A threaded HTTP server on 127.0.0.1 that records requests and can be scripted to fail.

Subclasses answer `route(request)`; the script works per route key (e.g. a GraphQL root field or
"POST /v1/coupons"): answer a status instead, stall past the client's timeout, or apply the effect
and hold the answer until the test releases it (the crash test kills the service meanwhile).
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    key: str = ""
    parsed: Any = None

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int | None = None  # answer this instead of doing the call
    stall: float = 0.0  # sleep this long first (a timeout, when longer than the client's)
    hold: bool = False  # do the call, then keep the answer until released


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when a test's dispatchers call at once.
    request_queue_size = 128


class LoopbackServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.Lock()
        self.released = threading.Event()
        self.holding = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = server._handle(Request(self.command, self.path, headers, body))
                payload = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout) or died (a SIGKILL)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    # --- the script ---------------------------------------------------------------------------

    def fail(self, key: str, status: int = 500, times: int = 1) -> None:
        """Answer `status` (without doing anything) to the next `times` calls of `key`."""
        self._add(key, [_Fault(status=status) for _ in range(times)])

    def stall(self, key: str, seconds: float, times: int = 1) -> None:
        """Do the next `times` calls of `key` only after `seconds` (a client timeout first)."""
        self._add(key, [_Fault(stall=seconds) for _ in range(times)])

    def hold(self, key: str) -> None:
        """Do the next call of `key`, then keep its answer until `release()`."""
        self._add(key, [_Fault(hold=True)])

    def release(self) -> None:
        self.released.set()

    def _add(self, key: str, faults: list[_Fault]) -> None:
        with self._lock:
            self._faults.setdefault(key, []).extend(faults)

    def _handle(self, request: Request) -> Answer:
        request = self.parse(request)
        with self._lock:
            self.requests.append(request)
            queue = self._faults.get(request.key) or []
            fault = queue.pop(0) if queue else _Fault()
        if fault.status is not None:
            return self.failure(fault.status)
        if fault.stall:
            time.sleep(fault.stall)
        with self._lock:
            answer = self.route(request)
        if fault.hold:
            self.holding.set()
            self.released.wait(timeout=120)
        return answer

    def calls(self, key: str) -> list[Request]:
        return [request for request in self.requests if request.key == key]

    # --- for subclasses -----------------------------------------------------------------------

    def parse(self, request: Request) -> Request:
        return request

    def failure(self, status: int) -> Answer:
        """A scripted failure's answer, as the real service would phrase it."""
        return Answer(status, {"errors": "scripted failure"})

    def route(self, request: Request) -> Answer:  # runs under the lock
        raise NotImplementedError
