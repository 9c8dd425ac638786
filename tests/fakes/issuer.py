"""A gift-card issuer behind the fulfilment webhook, keeping the receiver contract: it checks
the Standard Webhooks signature (the `standardwebhooks` package), dedupes on webhook-id (a
retry gets the first answer), and answers a reference and the code."""

import itertools
from typing import Any

from standardwebhooks import Webhook

from tests.fakes.server import Answer, LoopbackServer, Request


class FakeIssuer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.secret: str | None = None
        self._ids = itertools.count(1)
        self.issued: dict[str, dict[str, Any]] = {}  # webhook-id → what was issued
        self.revoked: set[str] = set()
        self.used_codes: set[str] = set()

    @property
    def hook_url(self) -> str:
        return f"{self.url}/fulfil"

    def parse(self, request: Request) -> Request:
        key = request.headers.get("webhook-id", "").rpartition(":")[2] or "request"
        key = "revoke" if key == "revoke" else "issue"
        return Request(request.method, request.path, request.headers, request.body, key, None)

    def route(self, request: Request) -> Answer:
        assert self.secret is not None, "give the issuer the secret the service answered"
        try:
            event: dict[str, Any] = Webhook(self.secret).verify(request.body, request.headers)
        except Exception as exc:
            return Answer(401, {"error": f"bad signature: {exc}"})
        message_id = request.headers["webhook-id"]
        data = event["data"]
        if event["type"] == "fulfilment.revoke_requested":
            code = data["code"]
            if code in self.used_codes:
                return Answer(200, {"status": "used"})
            self.revoked.add(code)
            return Answer(200, {"status": "revoked"})
        if message_id not in self.issued:  # the contract: one issue per webhook-id
            self.issued[message_id] = {
                "reference": f"gc_{next(self._ids)}",
                "code": data["code"],
                "data": data,
            }
        issued = self.issued[message_id]
        return Answer(200, {"reference": issued["reference"], "code": issued["code"]})
