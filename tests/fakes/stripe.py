"""The Stripe API on loopback, for the official library (its own request encoding).

Form-encoded bodies with bracketed keys (`metadata[reward_id]`, `promotion[coupon]`) are
parsed as Stripe parses them; idempotency keys replay the first answer (another body with the
same key is an `idempotency_error`); objects answer in Stripe's shapes. Route keys are
"METHOD /path" with ids replaced by `{id}`, e.g. "POST /v1/promotion_codes".
"""

import itertools
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import Answer, LoopbackServer, Request

SECRET_KEY = "sk_test_fulfilment0123456789abcdef"
ID = re.compile(r"/(cus|promo|cbtxn)_[0-9A-Za-z]+")


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """a[b][c]=1 → {"a": {"b": {"c": "1"}}}."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def _error(status: int, kind: str, message: str, code: str | None = None) -> Answer:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return Answer(status, {"error": error})


class FakeStripe(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.coupons: dict[str, dict[str, Any]] = {}
        self.promotion_codes: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, str] = {}  # id → email
        self.balance: dict[str, list[dict[str, Any]]] = {}
        self._replies: dict[str, tuple[dict[str, Any], Answer]] = {}

    def add_customer(self, customer_id: str, email: str) -> str:
        self.customers[customer_id] = email
        return customer_id

    def parse(self, request: Request) -> Request:
        parts = urlsplit(request.path)
        pairs = parse_qsl(parts.query) if request.method == "GET" else parse_qsl(request.text)
        key = f"{request.method} {ID.sub('/{id}', parts.path)}"
        return Request(
            request.method, parts.path, request.headers, request.body, key, _nested(pairs)
        )

    def failure(self, status: int) -> Answer:
        kinds = {401: "invalid_request_error", 429: "invalid_request_error"}
        return _error(status, kinds.get(status, "api_error"), f"scripted {status}")

    def params(self, key: str) -> list[dict[str, Any]]:
        return [request.parsed for request in self.calls(key)]

    def route(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        idempotency_key = request.headers.get("idempotency-key")
        if request.method == "POST" and idempotency_key:
            earlier = self._replies.get(idempotency_key)
            if earlier is not None:
                params, answer = earlier
                if params != request.parsed:
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters",
                    )
                return Answer(answer.status, answer.body, {"idempotent-replayed": "true"})
        answer = self._route(request)
        if request.method == "POST" and idempotency_key and answer.status < 500:
            self._replies[idempotency_key] = (request.parsed, answer)
        return answer

    def _route(self, request: Request) -> Answer:
        params, path = request.parsed, request.path
        if request.key == "POST /v1/coupons":
            return self._create_coupon(params)
        if request.key == "POST /v1/promotion_codes":
            return self._create_promotion_code(params)
        if request.key == "GET /v1/promotion_codes":
            found = [p for p in self.promotion_codes.values() if p["code"] == params.get("code")]
            return Answer(200, _list(found, "/v1/promotion_codes"))
        if request.key in ("GET /v1/promotion_codes/{id}", "POST /v1/promotion_codes/{id}"):
            promotion = self.promotion_codes.get(path.rsplit("/", 1)[-1])
            if promotion is None:
                return _error(404, "invalid_request_error", "No such promotion code")
            if request.method == "POST" and "active" in params:
                promotion["active"] = params["active"] == "true"
            return Answer(200, promotion)
        if request.key == "GET /v1/customers":
            found = [
                {"id": cid, "object": "customer", "email": email}
                for cid, email in self.customers.items()
                if email == params.get("email")
            ]
            return Answer(200, _list(found, "/v1/customers"))
        if request.key.endswith("/{id}/balance_transactions"):
            customer = path.split("/")[3]
            if customer not in self.customers:
                return _error(404, "invalid_request_error", f"No such customer: '{customer}'")
            if request.method == "GET":
                rows = list(reversed(self.balance.get(customer, [])))
                return Answer(200, _list(rows, f"/v1/customers/{customer}/balance_transactions"))
            return self._credit(customer, params)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({request.key})")

    def _create_coupon(self, params: dict[str, Any]) -> Answer:
        coupon_id = params.get("id") or f"coupon_{next(self._ids)}"
        if coupon_id in self.coupons:
            return _error(
                400,
                "invalid_request_error",
                "Coupon already exists.",
                "resource_already_exists",
            )
        if ("amount_off" in params) == ("percent_off" in params):
            return _error(400, "invalid_request_error", "give amount_off or percent_off")
        if "amount_off" in params and "currency" not in params:
            return _error(400, "invalid_request_error", "amount_off needs a currency")
        coupon = {
            "id": coupon_id,
            "object": "coupon",
            "amount_off": int(params["amount_off"]) if "amount_off" in params else None,
            "currency": params.get("currency"),
            "percent_off": float(params["percent_off"]) if "percent_off" in params else None,
            "duration": params.get("duration"),
            "max_redemptions": int(params.get("max_redemptions", 0)) or None,
            "metadata": params.get("metadata", {}),
            "name": params.get("name"),
            "times_redeemed": 0,
            "valid": True,
        }
        self.coupons[coupon_id] = coupon
        return Answer(200, coupon)

    def _create_promotion_code(self, params: dict[str, Any]) -> Answer:
        promotion = params.get("promotion") or {}
        if promotion.get("type") != "coupon" or promotion.get("coupon") not in self.coupons:
            return _error(400, "invalid_request_error", "No such coupon")
        code = params.get("code")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            return _error(400, "invalid_request_error", f"No such customer: '{customer}'")
        if any(p["code"].upper() == str(code).upper() for p in self.promotion_codes.values()):
            return _error(
                400,
                "invalid_request_error",
                "A promotion code with this code already exists.",
                "resource_already_exists",
            )
        created = {
            "id": f"promo_{next(self._ids)}",
            "object": "promotion_code",
            "active": True,
            "code": code,
            "customer": customer,
            "max_redemptions": int(params.get("max_redemptions", 0)) or None,
            "metadata": params.get("metadata", {}),
            "promotion": {"type": "coupon", "coupon": promotion["coupon"]},
            "times_redeemed": 0,
        }
        self.promotion_codes[created["id"]] = created
        return Answer(200, created)

    def _credit(self, customer: str, params: dict[str, Any]) -> Answer:
        rows = self.balance.setdefault(customer, [])
        amount = int(params["amount"])
        ending = sum(row["amount"] for row in rows) + amount
        transaction = {
            "id": f"cbtxn_{next(self._ids)}",
            "object": "customer_balance_transaction",
            "amount": amount,
            "currency": params["currency"],
            "customer": customer,
            "description": params.get("description"),
            "ending_balance": ending,
            "metadata": params.get("metadata", {}),
            "type": "adjustment",
        }
        rows.append(transaction)
        return Answer(200, transaction)


def _list(rows: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": rows, "has_more": False, "url": url}
