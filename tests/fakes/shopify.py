"""A Shopify Admin GraphQL API on loopback: the operations the fulfilment makes, as documented.

Each request's root field (the first selection of its operation) is its route key, e.g.
`discountCodeBasicCreate`. Variables are read as Shopify reads them; answers carry `data` with
`userErrors`, or top-level `errors`. State: discount codes, customers, store credit accounts
and gift cards, so lookups after a lost answer find what the lost call made.
"""

import itertools
import json
import re
from decimal import Decimal
from typing import Any

from tests.fakes.server import Answer, LoopbackServer, Request

TOKEN = "shpat_test_0123456789abcdef0123"
VERSION_PATH = "/admin/api/2025-10/graphql.json"
OPERATION = re.compile(r"^\s*(query|mutation)\s*(\w+)?\s*(\([^)]*\))?\s*\{\s*(\w+)", re.S)
CUSTOMER = "gid://shopify/Customer/"


class FakeShopify(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1001)
        self.discounts: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, str] = {}  # gid → email
        self.credits: dict[str, list[dict[str, Any]]] = {}  # customer gid → transactions
        self.gift_cards: dict[str, dict[str, Any]] = {}  # code → card

    def add_customer(self, number: int, email: str) -> str:
        gid = f"{CUSTOMER}{number}"
        self.customers[gid] = email
        return gid

    def parse(self, request: Request) -> Request:
        try:
            body = json.loads(request.body)
            match = OPERATION.match(body["query"])
        except (ValueError, KeyError, TypeError):
            return request
        if match is None:
            return request
        kind, name, _, root = match.groups()
        parsed = {"kind": kind, "name": name, "variables": body.get("variables") or {}}
        return Request(request.method, request.path, request.headers, request.body, root, parsed)

    def variables(self, key: str) -> list[dict[str, Any]]:
        return [request.parsed["variables"] for request in self.calls(key)]

    def route(self, request: Request) -> Answer:
        if request.method != "POST" or request.path != VERSION_PATH:
            return Answer(404, {"errors": "Not Found"})
        if request.headers.get("x-shopify-access-token") != TOKEN:
            return Answer(401, {"errors": "[API] Invalid API key or access token"})
        if request.parsed is None:
            return Answer(200, {"errors": [{"message": "Parse error", "extensions": {}}]})
        handler = getattr(self, f"_{request.key}", None)
        if handler is None:
            message = f"Field '{request.key}' doesn't exist on type 'QueryRoot'"
            return Answer(200, {"errors": [{"message": message}]})
        data = handler(request.parsed["variables"])
        return Answer(200, {"data": {request.key: data}, "extensions": {"cost": {}}})

    def _next_id(self, kind: str) -> str:
        return f"gid://shopify/{kind}/{next(self._ids)}"

    # --- discounts ----------------------------------------------------------------------------

    def _codeDiscountNodeByCode(self, variables: dict[str, Any]) -> Any:
        found = self.discounts.get(str(variables["code"]).upper())
        if found is None:
            return None
        return {
            "id": found["id"],
            "codeDiscount": {
                "__typename": "DiscountCodeBasic",
                "status": found["status"],
                "asyncUsageCount": found["usage"],
            },
        }

    def _discountCodeBasicCreate(self, variables: dict[str, Any]) -> Any:
        given = variables["basicCodeDiscount"]
        errors = [
            {"field": ["basicCodeDiscount", name], "code": "BLANK", "message": f"{name} is blank"}
            for name in ("code", "title", "startsAt", "customerGets")
            if not given.get(name)
        ]
        code = str(given.get("code", "")).upper()
        if code in self.discounts:
            errors.append(
                {
                    "field": ["basicCodeDiscount", "code"],
                    "code": "TAKEN",
                    "message": "Code must be unique. Please try a different code.",
                }
            )
        value = (given.get("customerGets") or {}).get("value") or {}
        if not ("percentage" in value) ^ ("discountAmount" in value):
            errors.append({"field": ["value"], "code": "INVALID", "message": "give one value"})
        if errors:
            return {"codeDiscountNode": None, "userErrors": errors}
        node = {
            "id": self._next_id("DiscountCodeNode"),
            "input": given,
            "status": "ACTIVE",
            "usage": 0,
        }
        self.discounts[code] = node
        return {"codeDiscountNode": {"id": node["id"]}, "userErrors": []}

    def _discountCodeDeactivate(self, variables: dict[str, Any]) -> Any:
        for node in self.discounts.values():
            if node["id"] == variables["id"]:
                node["status"] = "EXPIRED"
                summary = {"__typename": "DiscountCodeBasic", "status": "EXPIRED"}
                return {
                    "codeDiscountNode": {"id": node["id"], "codeDiscount": summary},
                    "userErrors": [],
                }
        error = {"field": ["id"], "code": "INVALID", "message": "Discount does not exist"}
        return {"codeDiscountNode": None, "userErrors": [error]}

    # --- customers and store credit -----------------------------------------------------------

    def _customers(self, variables: dict[str, Any]) -> Any:
        match = re.fullmatch(r'email:"(.*)"', str(variables.get("query", "")))
        wanted = json.loads(f'"{match.group(1)}"') if match else None
        nodes = [{"id": gid} for gid, email in self.customers.items() if email == wanted]
        return {"nodes": nodes[: int(variables.get("first", 2))]}

    def _storeCreditAccountCredit(self, variables: dict[str, Any]) -> Any:
        owner = str(variables["id"])
        money = variables["creditInput"]["creditAmount"]
        if owner not in self.customers:
            error = {"field": ["id"], "code": "ACCOUNT_NOT_FOUND", "message": "Owner not found"}
            return {"storeCreditAccountTransaction": None, "userErrors": [error]}
        if Decimal(str(money["amount"])) <= 0:
            error = {"field": ["amount"], "code": "NEGATIVE_OR_ZERO_AMOUNT", "message": "bad"}
            return {"storeCreditAccountTransaction": None, "userErrors": [error]}
        account = f"gid://shopify/StoreCreditAccount/{owner.rsplit('/', 1)[-1]}"
        transaction = {
            "__typename": "StoreCreditAccountCreditTransaction",
            "id": self._next_id("StoreCreditAccountCreditTransaction"),
            "createdAt": "2030-01-01T00:00:00Z",
            "amount": {"amount": str(money["amount"]), "currencyCode": money["currencyCode"]},
            "account": {"id": account},
        }
        self.credits.setdefault(owner, []).append(transaction)
        return {"storeCreditAccountTransaction": transaction, "userErrors": []}

    def _customer(self, variables: dict[str, Any]) -> Any:
        owner = str(variables["id"])
        if owner not in self.customers:
            return None
        transactions = list(reversed(self.credits.get(owner, [])))
        account = f"gid://shopify/StoreCreditAccount/{owner.rsplit('/', 1)[-1]}"
        nodes = [{"id": account, "transactions": {"nodes": transactions}}] if transactions else []
        return {"storeCreditAccounts": {"nodes": nodes}}

    # --- gift cards ---------------------------------------------------------------------------

    def _giftCards(self, variables: dict[str, Any]) -> Any:
        wanted = str(variables.get("query", "")).upper()
        nodes = [
            {"id": card["id"], "lastCharacters": code[-4:].lower()}
            for code, card in self.gift_cards.items()
            if code == wanted
        ]
        return {"nodes": nodes}

    def _giftCardCreate(self, variables: dict[str, Any]) -> Any:
        given = variables["input"]
        code = str(given.get("code", "")).upper()
        if code in self.gift_cards:
            error = {"field": ["input", "code"], "code": "TAKEN", "message": "Code has been taken"}
            return {"giftCard": None, "giftCardCode": None, "userErrors": [error]}
        if not 8 <= len(code) <= 20 or not code.isalnum():
            error = {"field": ["input", "code"], "code": "INVALID", "message": "Code is invalid"}
            return {"giftCard": None, "giftCardCode": None, "userErrors": [error]}
        card = {"id": self._next_id("GiftCard"), "input": given}
        self.gift_cards[code] = card
        last = code[-4:].lower()
        return {
            "giftCard": {"id": card["id"], "lastCharacters": last},
            "giftCardCode": code.lower(),
            "userErrors": [],
        }
