"""The world of the authorization matrix (tests/test_authorization_matrix.py): the callers and
the key kinds, program A's objects and the helpers that make fresh ones (World), the call
and expectation types."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

from httpx import ASGITransport, AsyncClient

from app.keys.service import create_key
from tests.database import empty_tables
from tests.factories import auth

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
CALLERS = (
    "none",
    "bad",
    "publishable",
    "secret",
    "admin",
    "other_program",
    "referrer_session",
    "other_referrer",
)
SESSIONS = frozenset({"referrer_session", "other_referrer"})
PUBLIC = frozenset({"none"})
WIDGET = frozenset({"publishable", "secret", "admin"})
SECRET = frozenset({"secret", "admin"})
ADMIN = frozenset({"admin"})
REFERRER = frozenset({"referrer_session"})
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "authorization.md"
DOC_START = "<!-- matrix:start -->"
DOC_END = "<!-- matrix:end -->"


@dataclass
class Call:
    method: str
    url: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A referrer session caller sends a session minted for this call (the call ends it).
    fresh_session: bool = False

    def text(self) -> str:
        return " ".join([self.url, json.dumps(self.json), json.dumps(self.params)])


class World:
    """Program A with a referrer, code, rule, conversion and reward; program B; the keys.

    Helpers make fresh objects of program A (with the unrestricted admin key), so that a call
    that changes an object (approve, revoke, delete) never depends on another call.
    """

    def __init__(self, client: AsyncClient, keys: dict[str, str]) -> None:
        self.client = client
        self.keys = keys
        self.tag = uuid4().hex[:10]
        self.count = 0
        # Strings that only program A's data contains: none may reach another program's key.
        self.markers: set[str] = set()
        self.program: dict[str, Any] = {}
        self.referrer: dict[str, Any] = {}
        self.conversion: dict[str, Any] = {}
        self.rule: dict[str, Any] = {}
        # The referrer of program B that the "other_referrer" session belongs to.
        self.other_referrer_id = ""
        self.fulfilment_rule = ""
        self.points_rule = ""
        self.charity = ""
        self.payee: dict[str, Any] = {}
        self.batches: dict[str, str] = {}

    def unique(self, prefix: str) -> str:
        self.count += 1
        value = f"{prefix}-{self.tag}-{self.count}"
        self.markers.add(value)
        return value

    def mark(self, *values: Any) -> None:
        self.markers.update(str(value) for value in values if value)

    async def admin_post(self, url: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.post(url, json=body, headers=auth(self.keys["admin"]))
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    async def setup(self) -> None:
        self.program = await self.admin_post(
            "/v1/programs",
            {
                "name": self.unique("Program A"),
                "landing_url": f"https://a-{self.tag}.example.com/welcome",
                "currency": "EUR",
                "referee_offer": self.unique("Offer A"),
            },
        )
        self.mark(self.program["id"], f"a-{self.tag}.example.com")
        self.rule = await self.admin_post(
            f"/v1/programs/{self.pid}/reward-rules",
            {
                "name": self.unique("Rule A"),
                "recipient": "referrer",
                "kind": "fixed",
                "amount": "7.00",
                # Rewards wait pending, so that approve has something to do.
                "hold_days": 30,
            },
        )
        self.mark(self.rule["id"])
        self.referrer = await self.new_referrer()
        self.conversion = await self.new_conversion()

    @property
    def pid(self) -> str:
        return str(self.program["id"])

    async def new_referrer(self) -> dict[str, Any]:
        referrer = await self.admin_post(
            f"/v1/programs/{self.pid}/referrers",
            {
                "external_id": self.unique("a-ref"),
                "email": f"{self.unique('a-mail')}@example.com",
                "name": self.unique("A Name"),
                "metadata": {"tier": self.unique("a-meta")},
            },
        )
        self.mark(referrer["id"], referrer["default_code"]["code"])
        return referrer

    async def new_code(self) -> str:
        code = await self.admin_post(f"/v1/referrers/{self.referrer['id']}/codes", {})
        self.mark(code["code"])
        return str(code["code"])

    async def new_conversion(self) -> dict[str, Any]:
        conversion = await self.admin_post(
            "/v1/conversions",
            {
                "program_id": self.pid,
                "event_id": self.unique("a-event"),
                "customer_id": self.unique("a-cust"),
                "amount": "123.45",
                "currency": "EUR",
                "code": self.referrer["default_code"]["code"],
                "metadata": {"order": self.unique("a-order")},
            },
        )
        self.mark(conversion["id"], *(reward["id"] for reward in conversion["rewards"]))
        assert conversion["rewards"], conversion
        return conversion

    async def new_reward(self) -> str:
        conversion = await self.new_conversion()
        # The world rule's reward (pending); rules made by other calls may pay at once.
        return next(r["id"] for r in conversion["rewards"] if r["rule_id"] == self.rule["id"])

    async def new_session(self, referrer_id: str) -> dict[str, Any]:
        return await self.admin_post(f"/v1/referrers/{referrer_id}/sessions")

    async def new_key(self) -> str:
        created = await self.admin_post("/v1/api-keys", {"kind": "publishable"})
        return str(created["id"])


def pick(value: Any, missing: bool, unknown: str | None = None) -> str:
    """`value`, or for the missing-object twin of a call a value that names nothing."""
    if not missing:
        return str(value)
    return unknown if unknown is not None else str(uuid4())


MISSING_CODE = "ZZZZZZZZZZZZ"
Builder = Callable[[World, bool], Awaitable[Call]]
Scope = Literal["object", "list", "self"]


@dataclass(frozen=True)
class Expectation:
    """Who may call an endpoint, its success status, and how to build a call on A's objects."""

    kinds: frozenset[str]
    ok: int
    build: Builder
    # How the key limited to program B (or program B's referrer session) is answered when its
    # kind is admitted: "object": 404 as for a missing object; "list": the success status,
    # without A's rows; "self" (/v1/me…): the success status, with its own referrer's data.
    scope: Scope = "object"
    note: str = ""


@asynccontextmanager
async def open_world(app: Any) -> AsyncIterator[World]:
    """One world for a test module: every call that changes something makes its own objects."""
    await empty_tables(app)
    keys: dict[str, str] = {}
    async with app.state.sessionmaker() as session:
        for kind in ("admin", "secret"):
            keys[kind] = (await create_key(session, kind)).secret
        await session.commit()
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://testserver") as client:
        w = World(client, keys)
        await w.setup()
        program_b = await w.admin_post(
            "/v1/programs",
            {"name": "Program B", "landing_url": "https://b.example.com/", "currency": "EUR"},
        )
        async with app.state.sessionmaker() as session:
            publishable = await create_key(session, "publishable", [UUID(w.pid)])
            other = await create_key(session, "secret", [UUID(program_b["id"])])
            await session.commit()
        keys["publishable"] = publishable.secret
        keys["other_program"] = other.secret
        keys["bad"] = "rk_sec_" + "x" * 43
        keys["referrer_session"] = (await w.new_session(w.referrer["id"]))["token"]
        other_referrer = await w.admin_post(
            f"/v1/programs/{program_b['id']}/referrers", {"external_id": "b-referrer"}
        )
        w.other_referrer_id = other_referrer["id"]
        keys["other_referrer"] = (await w.new_session(w.other_referrer_id))["token"]
        yield w
