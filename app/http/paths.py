"""One URL per endpoint: a trailing slash is dropped before anything else sees the path.

`/v1/programs/` answers exactly as `/v1/programs` does (no redirect, which curl and most HTTP
clients do not follow and which would drop a POST body's meaning). It is done outermost, so
that CORS, load shedding, idempotency fingerprints, rate limits, logs and routing all see the
one canonical path.
"""

from starlette.types import ASGIApp, Receive, Scope, Send


class TrailingSlashMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            raw_path = scope.get("raw_path")
            if isinstance(raw_path, bytes):
                scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
