"""Unsubscribe tokens: the program and the recipient's address hash, signed (HMAC-SHA256).

A token names no address (only its SHA-256), never expires (a link in an old email must keep
working), and is checked in constant time. It is signed with REFERRAL_EMAIL_SECRET: changing that
secret breaks the links of emails already sent.
"""

import base64
import binascii
import hashlib
import hmac
from uuid import UUID

PREFIX = "u1."
MAC_BYTES = 16


def address_hash(address: str) -> str:
    """The suppression key of an address: SHA-256 of its trimmed, lower-cased form."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"unsubscribe:" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def unsubscribe_token(secret: str, program_id: UUID, digest: str) -> str:
    payload = program_id.bytes + bytes.fromhex(digest)
    raw = payload + _mac(secret, payload)
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(secret: str, token: str) -> tuple[UUID, str] | None:
    """(program id, address hash) of a token this service signed, else None."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + 32 + MAC_BYTES:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    return UUID(bytes=payload[:16]), payload[16:].hex()
