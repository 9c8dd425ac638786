import asyncio
from typing import Any

from httpx import ASGITransport, AsyncClient

from app.http.load_shedding import LoadSheddingMiddleware


async def test_requests_past_the_limit_are_shed_at_once() -> None:
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = LoadSheddingMiddleware(slow_app, max_in_flight=3)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        held = [asyncio.create_task(client.get("/v1/clicks")) for _ in range(3)]
        await asyncio.sleep(0.05)
        shed = await asyncio.wait_for(client.get("/v1/clicks"), timeout=1)
        assert shed.status_code == 503
        assert shed.json()["code"] == "overloaded"
        assert shed.headers["retry-after"] == "1"
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert app.in_flight == 0
        assert (await client.get("/v1/clicks")).status_code == 200
