from typing import Any
from httpx import AsyncClient
from tests.factories import auth, make_key, make_program, make_referrer, BROWSER_UA


async def test_probe(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    ref = await make_referrer(client, admin, program["id"], "r1")
    code = ref["default_code"]["code"]
    probes = [
        ("GET", "/v1/programs", {"params": {"cursor": __import__("base64").urlsafe_b64encode(b'["9999-12-31T23:59:59-05:00", "6f1c7e4e-6bb0-4bd2-9f0e-0b7f8a1e2a11"]').decode()}}),
        ("POST", f"/v1/referrers/{ref['id']}/codes", {"json": {"expires_at": "9999-12-31T23:59:59-05:00"}}),
        ("POST", f"/v1/referrers/{ref['id']}/codes", {"json": {"expires_at": "0001-01-01T00:00:00+05:00"}}),
        ("POST", f"/v1/programs/{program['id']}/referrers", {"content": b'{"external_id": "x1", "metadata": {"a": NaN}}', "headers": {"content-type": "application/json"}}),
        ("POST", f"/v1/programs/{program['id']}/referrers", {"content": b'{"external_id": "x2", "metadata": {"a": 1e400}}', "headers": {"content-type": "application/json"}}),
        ("POST", f"/v1/programs/{program['id']}/referrers", {"json": {"external_id": "a\u0000b"}}),
        ("POST", "/v1/programs", {"json": {"name": "a\u0000b", "landing_url": "https://x.example", "currency": "USD"}}),
        ("GET", f"/r/{code}?utm_source=%00", {}),
        ("GET", "/r/%00", {}),
        ("GET", "/v1/codes/%00", {}),
        ("POST", "/v1/clicks", {"json": {"code": code, "visitor_id": "\u0000"}}),
        ("POST", "/v1/redemptions", {"json": {"code": code, "customer_id": "\u0000"}}),
        ("POST", "/v1/redemptions", {"json": {"code": "\u0000", "customer_id": "c"}}),
        ("PATCH", f"/v1/codes/{code}", {"json": {"expires_at": "9999-12-31T23:59:59-05:00"}}),
        ("GET", f"/v1/referrers/{ref['id']}", {}),
    ]
    for method, url, kw in probes:
        headers = auth(admin) | {"User-Agent": BROWSER_UA} | kw.pop("headers", {})
        try:
            r = await client.request(method, url, headers=headers, **kw)
            print("PROBE", method, url[:60], kw, "->", r.status_code, r.text[:150])
        except Exception as exc:
            print("PROBE", method, url[:60], kw, "-> RAISED", type(exc).__name__, str(exc)[:150])
