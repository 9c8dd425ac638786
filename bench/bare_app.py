"""The framework ceiling: FastAPI answering a constant, served exactly like the service.

uvicorn bare_app:app --app-dir bench --loop uvloop --http httptools --no-access-log
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}
