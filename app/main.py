"""The application factory: settings in, a FastAPI app with its engine and routers out."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.background import run_housekeeping
from app.conversions.router import router as conversions_router
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.customers.router import router as customers_router
from app.dashboard.router import router as dashboard_router
from app.emails.dispatcher import EmailDispatcher
from app.emails.outbox import switch_on as switch_emails_on
from app.emails.router import router as emails_router
from app.fulfilment.dispatcher import Dispatcher as FulfilmentDispatcher
from app.fulfilment.router import router as fulfilment_router
from app.http.auth import principal_cache, session_cache
from app.http.cors import CorsMiddleware, OriginCache, key_origins
from app.http.errors import install_error_handlers
from app.http.lean import LeanPathMiddleware
from app.http.load_shedding import InFlight, LoadSheddingMiddleware
from app.http.observability import (
    RequestLogMiddleware,
    configure_logging,
    ensure_metrics_protected,
    metrics_body,
    require_metrics_token,
)
from app.http.paths import TrailingSlashMiddleware
from app.http.ratelimit import RateLimiter
from app.http.unit_of_work import UnitOfWorkMiddleware
from app.integrations.router import management as integrations_router
from app.integrations.router import webhooks as integration_webhooks_router
from app.keys.router import router as keys_router
from app.me.router import router as me_router
from app.metrics.router import router as metrics_router
from app.payouts.router import router as payouts_router
from app.points.router import me as points_me_router
from app.points.router import router as points_router
from app.portal.router import router as portal_router
from app.programs.router import router as programs_router
from app.qr.router import router as qr_router
from app.referrer_sessions.router import router as referrer_sessions_router
from app.referrers.router import router as referrers_router
from app.referrers.service import code_cache
from app.rewards.router import router as rewards_router
from app.storefront.router import router as storefront_router
from app.tracking.click_writer import ClickWriter
from app.tracking.router import lean_routes
from app.tracking.router import router as tracking_router
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger("app")


IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Retries with the same key and body get the first final answer again "
    "(with Idempotent-Replayed: true); kept 24 h, scoped to the API key. Final: 2xx and the "
    "4xx the same request would get again; a 429, 409 concurrent_update or "
    "idempotency_key_in_progress, or 5xx is not kept, so the retry runs anew.",
}


def document_idempotency_key(app: FastAPI) -> None:
    """Every authenticated POST honours Idempotency-Key (app.http.unit_of_work): say so."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            for path, operations in schema["paths"].items():
                post = operations.get("post")
                if post is not None and not path.startswith("/v1/integrations/"):
                    post.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
        return app.openapi_schema or build_schema()

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    ensure_metrics_protected(settings)
    if settings.environment != "test":
        configure_logging(settings.log_level)
    engine = create_engine(settings.database_url, settings)
    # Metrics read through a replica when one is set (they lag it by the replication delay).
    read_engine = (
        create_engine(settings.database_read_url, settings) if settings.database_read_url else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = None
        if settings.housekeeping_interval_seconds > 0:
            sweeper = asyncio.create_task(
                run_housekeeping(app.state.sessionmaker, settings.housekeeping_interval_seconds)
            )
        dispatcher = None
        if settings.webhook_dispatch_interval_seconds > 0:
            dispatcher = asyncio.create_task(app.state.webhook_dispatcher.run())
        fulfiller = None
        if settings.fulfilment_dispatch_interval_seconds > 0:
            fulfiller = asyncio.create_task(app.state.fulfilment_dispatcher.run())
        mailer = None
        email_dispatcher: EmailDispatcher | None = app.state.email_dispatcher
        if email_dispatcher is not None and settings.email_dispatch_interval_seconds > 0:
            mailer = asyncio.create_task(email_dispatcher.run())
        try:
            yield
        finally:
            for task in (dispatcher, fulfiller, mailer):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            await app.state.webhook_dispatcher.aclose()
            await app.state.fulfilment_dispatcher.aclose()
            await app.state.click_writer.stop()
            if sweeper is not None:
                sweeper.cancel()
                with suppress(asyncio.CancelledError):
                    await sweeper
            await engine.dispose()
            if read_engine is not None:
                await read_engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the service itself (fastapi-offline bundles
    # them), so they work offline and behind a strict network.
    app = FastAPIOffline(
        title="Referral tracking service",
        version="0.1.0",
        summary="Referral codes and links, clicks, redemptions, conversions, rewards and metrics.",
        lifespan=lifespan,
        # No badge from swagger.io's online validator: the page loads nothing from elsewhere.
        swagger_ui_parameters={"validatorUrl": None},
        # No 307 to the other spelling: app.http.paths serves both the same.
        redirect_slashes=False,
        # The service's telemetry is its Prometheus series (app.http.observability); FastAPI's
        # own OpenTelemetry layer would only look for providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.read_sessionmaker = create_sessionmaker(read_engine) if read_engine else None
    app.state.rate_limiter = RateLimiter(settings)
    app.state.principal_cache = principal_cache(settings)
    app.state.session_cache = session_cache(settings)
    app.state.code_cache = code_cache(settings)
    app.state.key_origins = key_origins(settings)
    app.state.click_writer = ClickWriter(
        app.state.sessionmaker, timedelta(hours=settings.duplicate_click_window_hours)
    )
    app.state.webhook_dispatcher = Dispatcher(app.state.sessionmaker, settings)
    app.state.fulfilment_dispatcher = FulfilmentDispatcher(app.state.sessionmaker, settings)
    # Lifecycle emails only with SMTP configured: then requests queue them, and this sends them.
    app.state.email_dispatcher = None
    if settings.emails_enabled:
        switch_emails_on(app.state.sessionmaker)
        app.state.email_dispatcher = EmailDispatcher(app.state.sessionmaker, settings)
    install_error_handlers(app)
    app.add_middleware(UnitOfWorkMiddleware, sessionmaker=app.state.sessionmaker, settings=settings)
    origins = OriginCache(app.state.sessionmaker, settings.cors_cache_seconds)
    in_flight = app.state.in_flight = InFlight(settings.max_in_flight_requests)
    app.add_middleware(CorsMiddleware, origins=origins)
    app.add_middleware(LoadSheddingMiddleware, max_in_flight=in_flight.limit, in_flight=in_flight)
    app.add_middleware(RequestLogMiddleware)  # sees every answer, even a 413
    app.add_middleware(TrailingSlashMiddleware)  # every layer below sees the one path
    # The public hot paths, from the caches, before all of the above (ARCHITECTURE.md: lean).
    app.add_middleware(
        LeanPathMiddleware,
        routes=lean_routes(app.state),
        max_body_bytes=settings.max_body_bytes,
        in_flight=in_flight,
        limiter=app.state.rate_limiter,
        origins=origins,
    )
    if settings.forwarded_allow_ips:
        # Outermost: everything else sees the client, the right-most untrusted X-Forwarded-For
        # address. Here rather than in uvicorn, so that it holds however the app is served
        # (`referral-service serve` and the Dockerfile turn uvicorn's own handling off).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    for router in (
        programs_router,
        referrers_router,
        tracking_router,
        conversions_router,
        rewards_router,
        fulfilment_router,
        payouts_router,
        points_router,
        customers_router,
        keys_router,
        metrics_router,
        integrations_router,
        integration_webhooks_router,
        webhooks_router,
        referrer_sessions_router,
        me_router,
        points_me_router,
        dashboard_router,
        portal_router,
        storefront_router,
        qr_router,
        emails_router,
    ):
        app.include_router(router)

    document_idempotency_key(app)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
    async def prometheus_metrics() -> Response:
        body, content_type = metrics_body(engine)
        return Response(body, media_type=content_type)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Database unreachable"}})
    async def readyz() -> JSONResponse:
        """The database answers."""

        async def ping() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        try:
            # A database that accepts connections but never answers is not ready either.
            await asyncio.wait_for(ping(), timeout=2)
        except Exception as exc:
            logger.warning("readiness check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
