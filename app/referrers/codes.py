"""Referral code text: generation from an unambiguous alphabet, normalisation, and state."""

import math
import secrets
from datetime import datetime

from app.programs.models import Program, ProgramStatus
from app.referrers.models import Code

# No 0/O, 1/I/L: codes are read aloud and typed from screenshots.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
BITS_PER_CHAR = math.log2(len(ALPHABET))
MIN_RANDOM_BITS = 40


def generate_code(length: int) -> str:
    if length * BITS_PER_CHAR < MIN_RANDOM_BITS:
        raise ValueError(f"a code of {length} characters has fewer than {MIN_RANDOM_BITS} bits")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalize(code: str) -> str:
    return code.strip().upper()


def code_state(code: Code, program: Program, now: datetime) -> str:
    """Why a code can or cannot be used now.

    One of valid, disabled, expired, exhausted, program_not_active.
    """
    if program.status != ProgramStatus.ACTIVE:
        return "program_not_active"
    if code.disabled:
        return "disabled"
    if code.expires_at is not None and code.expires_at <= now:
        return "expired"
    if code.max_redemptions is not None and code.redemption_count >= code.max_redemptions:
        return "exhausted"
    return "valid"
