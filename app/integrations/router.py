"""Stripe and Shopify webhooks in (the signature authenticates: no API key), and their secrets."""

import hashlib
import time
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from app.core.errors import (
    COMMON_ERRORS,
    POST_ERRORS,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    problem_responses,
)
from app.core.json_input import RefusedJson, parse_json
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.integrations import service, shopify, stripe
from app.integrations.schemas import IntegrationEventOut, Provider, SecretOut, SecretsCreate
from app.programs.service import ProgramNotFound

webhooks = APIRouter(
    prefix="/v1/integrations",
    tags=["integrations"],
    responses=problem_responses(
        service.InvalidSignature, service.InvalidPayload, PayloadTooLarge, *COMMON_ERRORS
    ),
)
management = APIRouter(
    prefix="/v1/programs/{program_id}/integrations/{provider}",
    tags=["integrations"],
    responses=problem_responses(*AUTHENTICATED_ERRORS, ProgramNotFound),
)


def _json_object(body: bytes) -> dict[str, Any]:
    # Signed is not safe: the platform's JSON is parsed like every request body (NaN, 1e999,
    # deep nesting, huge integers and NUL refused), after the signature is checked.
    try:
        parsed = parse_json(body)
    except RefusedJson as exc:
        raise service.InvalidPayload(f"The body is not JSON this service takes: {exc}.") from exc
    if not isinstance(parsed, dict):
        raise service.InvalidPayload("The body is not a JSON object.")
    return parsed


@webhooks.post("/stripe/{program_id}/webhook", response_model=IntegrationEventOut)
async def stripe_webhook(
    program_id: UUID, request: Request, session: SessionDep
) -> IntegrationEventOut:
    """A Stripe event for the program, verified with the program's Stripe signing secrets.

    Answers 200 with what became of the event (also for ignored types and duplicates);
    400 `invalid_signature` for a wrong secret, a stale timestamp or a changed byte.
    """
    body = await request.body()
    settings = request.app.state.settings
    stripe.verify_signature(
        body,
        request.headers.get("stripe-signature"),
        await service.signing_secrets(session, program_id, "stripe"),
        time.time(),
        settings.stripe_webhook_tolerance_seconds,
    )
    event = _json_object(body)
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise service.InvalidPayload("A Stripe event has an id and a type.")
    return await service.process(
        session,
        settings,
        program_id,
        "stripe",
        event["id"],
        event["type"],
        stripe.map_event(event),
    )


@webhooks.post("/shopify/{program_id}/webhook", response_model=IntegrationEventOut)
async def shopify_webhook(
    program_id: UUID, request: Request, session: SessionDep
) -> IntegrationEventOut:
    """A Shopify webhook for the program, verified with the program's Shopify secrets.

    Deduplicated on X-Shopify-Webhook-Id; the topic comes from X-Shopify-Topic.
    """
    body = await request.body()
    headers = request.headers
    shopify.verify_signature(
        body,
        headers.get("x-shopify-hmac-sha256"),
        await service.signing_secrets(session, program_id, "shopify"),
    )
    payload = _json_object(body)
    topic = headers.get("x-shopify-topic", "")
    webhook_id = headers.get("x-shopify-webhook-id") or (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )
    return await service.process(
        session,
        request.app.state.settings,
        program_id,
        "shopify",
        webhook_id,
        topic,
        shopify.map_event(topic, payload),
    )


@management.post(
    "/secrets",
    status_code=201,
    response_model=list[SecretOut],
    responses=problem_responses(service.TooManySecrets, Unprocessable, *POST_ERRORS),
)
async def add_secrets(
    program_id: UUID,
    provider: Provider,
    body: SecretsCreate,
    session: SessionDep,
    principal: SecretKey,
) -> list[SecretOut]:
    """Add signing secrets; all of the program's are answered (prefixes only)."""
    return await service.add_secrets(session, principal, program_id, provider, body.secrets)


@management.get("/secrets", response_model=list[SecretOut])
async def list_secrets(
    program_id: UUID, provider: Provider, session: SessionDep, principal: SecretKey
) -> list[SecretOut]:
    return await service.list_secrets(session, principal, program_id, provider)


@management.delete(
    "/secrets/{secret_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(NotFound),
)
async def delete_secret(
    program_id: UUID,
    provider: Provider,
    secret_id: UUID,
    session: SessionDep,
    principal: SecretKey,
) -> Response:
    await service.delete_secret(session, principal, program_id, provider, secret_id)
    return Response(status_code=204)


@management.get(
    "/events", response_model=Page[IntegrationEventOut], responses=problem_responses(*PAGE_ERRORS)
)
async def list_events(
    program_id: UUID, provider: Provider, session: SessionDep, principal: SecretKey, page: PageDep
) -> Page[IntegrationEventOut]:
    """The platform's events for the program and what became of each, oldest first."""
    rows, next_cursor = await service.list_events(session, principal, program_id, provider, page)
    return Page(data=rows, next_cursor=next_cursor)
