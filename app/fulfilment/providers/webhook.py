"""The fulfilment webhook: any issuer behind a URL, called like the outbound webhooks.

The service POSTs a Standard Webhooks signed request (the program's whsec_ secret) whose
`webhook-id` is the fulfilment's id, the same on every retry: the receiver must dedupe on it
and answer a retry with what it issued the first time. The contract (README: Fulfilment):

- `fulfilment.requested` → 2xx `{"reference": "…", "code": "…"}` (`code` optional: ours, the
  one in the request, is used when it is left out);
- `fulfilment.revoke_requested` (webhook-id `<id>:revoke`) → 2xx `{"status": "revoked"}` or
  `{"status": "used"}`;
- 408, 409, 425, 429, 5xx, timeouts and connection errors are retried; any other answer fails
  the fulfilment at once (the receiver refused it).
"""

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from app.core.config import Settings
from app.fulfilment.providers.base import Issued, Job, ProviderError, Revoked, excerpt
from app.webhooks.dispatcher import sign
from app.webhooks.targets import UnsafeTarget, check_target

ANSWER_BYTES = 4096
RETRYABLE = frozenset({408, 409, 425, 429})
USER_AGENT = "referral-service-fulfilment/1"


class FulfilmentWebhook:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    async def issue(self, job: Job) -> Issued:
        answer = await self._post(job, "fulfilment.requested", str(job.fulfilment_id))
        reference = answer.get("reference")
        code = answer.get("code", job.code)
        if not isinstance(reference, str) or not 0 < len(reference) <= 255:
            raise ProviderError("The fulfilment webhook answered no reference (1-255 chars).")
        if code is not None and (not isinstance(code, str) or not 0 < len(code) <= 64):
            raise ProviderError("The fulfilment webhook answered a code that is not 1-64 chars.")
        return Issued(reference, code)

    async def revoke(self, job: Job) -> Revoked:
        answer = await self._post(job, "fulfilment.revoke_requested", f"{job.fulfilment_id}:revoke")
        return Revoked(used=answer.get("status") == "used")

    async def _post(self, job: Job, event_type: str, message_id: str) -> dict[str, Any]:
        secret = job.secret  # raises when the program's credentials are gone
        url = job.credential.url if job.credential else None
        if not url:
            raise ProviderError("The program has no fulfilment webhook URL.")
        try:
            await check_target(url, self.settings)
        except UnsafeTarget as exc:
            raise ProviderError(f"The fulfilment webhook URL is refused: {exc}") from exc
        body = json.dumps(_payload(job, event_type), separators=(",", ":"))
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
        }
        try:
            async with self.http.stream("POST", url, content=body.encode(), headers=headers) as r:
                received = b""
                async for chunk in r.aiter_bytes():
                    received += chunk
                    if len(received) > ANSWER_BYTES:
                        break
                status = r.status_code
        except httpx.TimeoutException as exc:
            raise ProviderError("The fulfilment webhook did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"The fulfilment webhook could not be reached: {type(exc).__name__}."
            ) from exc
        text = received[:ANSWER_BYTES].decode("utf-8", errors="replace")
        if not 200 <= status < 300:
            retryable = status in RETRYABLE or status >= 500
            raise ProviderError(
                f"The fulfilment webhook answered {status}: {excerpt(text)}", retryable=retryable
            )
        try:
            answer = json.loads(text)
        except ValueError as exc:
            raise ProviderError("The fulfilment webhook answered something not JSON.") from exc
        if not isinstance(answer, dict):
            raise ProviderError("The fulfilment webhook answered JSON that is not an object.")
        return answer


def _payload(job: Job, event_type: str) -> dict[str, Any]:
    return {
        "type": event_type,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "fulfilment_id": str(job.fulfilment_id),
            "reward_id": str(job.reward_id),
            "program_id": str(job.program_id),
            "method": str(job.method),
            "recipient": str(job.recipient),
            "recipient_id": job.recipient_id,
            "email": job.email,
            # A percent_off coupon takes that percent off; amount is what the ledger books.
            "amount": str(job.amount),
            "currency": job.currency,
            "percent_off": f"{job.percent_off.normalize():f}" if job.percent_off else None,
            "code": job.code,
            "reference": job.reference,
        },
    }
