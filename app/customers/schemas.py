from app.core.schemas import OutputModel


class ErasureOut(OutputModel):
    customer_id: str
    replaced_by: str
    clicks: int
    referrals: int
    conversions: int
    referrers: int
