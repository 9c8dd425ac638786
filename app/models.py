"""Every table, imported in one place so that Alembic and the tests see the whole schema."""

from app.db import Base
from app.keys.models import ApiKey
from app.programs.models import Program
from app.referrers.models import Code, Referrer
from app.tracking.models import Click, Referral

__all__ = ["ApiKey", "Base", "Click", "Code", "Program", "Referral", "Referrer"]
