"""The generated data set's rows: shapes, ids and timestamps, as CSV text for COPY.

Full size: 10,000,000 clicks, 100,000 referrers (one code each), 500,000 referrals, 200,000
conversions and their rewards, over 180 days. Shapes: Zipf popularity across codes, ~5 % bots,
~10 % duplicate clicks, utm sources from a small set, more traffic late in the period and on
weekdays, every table written in time order (as a live service writes it). Pure: no database
here; bench/dataset/load.py writes these rows.
"""

from __future__ import annotations

import hashlib
import operator
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

GENERATOR_VERSION = 1  # bump when the shapes change: loaded data sets are then regenerated
DAY = 86_400
CHUNK_ROWS = 50_000
TAIL_POOL = 1 << 17


@dataclass(frozen=True)
class Params:
    """A data set's size and shapes; stored with the load, so a change means a reload."""

    clicks: int
    referrers: int
    referrals: int
    conversions: int
    days: int = 180
    zipf_s: float = 1.0
    bot_share: float = 0.05
    duplicate_share: float = 0.10
    seed: int = 20_251_122
    version: int = GENERATOR_VERSION


FULL = Params(clicks=10_000_000, referrers=100_000, referrals=500_000, conversions=200_000)
QUICK = Params(clicks=300_000, referrers=3_000, referrals=15_000, conversions=6_000)

COLUMNS = {
    "referrers": "id, created_at, program_id, external_id, email, name, metadata",
    "codes": "id, created_at, program_id, referrer_id, code, normalized, is_default, is_vanity,"
    " disabled, expires_at, max_redemptions, redemption_count",
    "clicks": "id, created_at, program_id, code_id, referrer_id, occurred_at, source, landing_url,"
    " referring_url, utm_source, utm_medium, utm_campaign, visitor_id, ip_hash, user_agent,"
    " is_bot, is_duplicate, attributable, customer_id",
    "referrals": "id, created_at, program_id, referrer_id, code_id, click_id, customer_id, email,"
    " source, occurred_at",
    "conversions": "id, created_at, program_id, event_id, request_hash, customer_id, email, amount,"
    " currency, occurred_at, status, attribution_reason, attribution, referrer_id, code_id,"
    " click_id, referral_id, refunded_amount, metadata",
    "rewards": "id, created_at, program_id, conversion_id, rule_id, rule_version, referrer_id,"
    " recipient, recipient_id, entry_type, adjusts_reward_id, kind, unit, amount,"
    " original_amount, status, hold_until, approved_at, paid_at, payout_reference, reversed_at,"
    " reversal_reason",
}

# (utm_source, utm_medium) and weights; None is a click without utm tags ("direct").
CHANNELS = [
    (("facebook", "social"), 24),
    (("instagram", "social"), 18),
    (("whatsapp", "messaging"), 12),
    (("email", "email"), 14),
    (("twitter", "social"), 6),
    (("tiktok", "social"), 8),
    ((None, None), 18),
]
CAMPAIGNS = [
    ("always-on", 50),
    ("spring-sale", 15),
    ("summer", 15),
    ("black-friday", 10),
    (None, 10),
]
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
BOTS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.23.20.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
]


def csv_quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def uid(tag: int, table: int, index: int) -> str:
    """Deterministic, time-ordered ids: the primary keys are appended to, not scattered."""
    return f"{tag:04x}{table:04x}-0000-4000-8000-{index:012x}"


TABLE_NO = {
    "program": 1,
    "referrer": 2,
    "code": 3,
    "click": 4,
    "referral": 5,
    "conversion": 6,
    "reward": 7,
    "rule": 8,
    "rule_version": 9,
}


def dataset_tag(name: str) -> int:
    return {"quick": 0xB001, "full": 0xB002}.get(name, 0xB100 | (zlib.crc32(name.encode()) & 0xFF))


class Clock:
    """Seconds since the data set's start, as Postgres timestamptz text."""

    def __init__(self, start: datetime, days: int):
        self.days = [(start + timedelta(days=d)).strftime("%Y-%m-%d ") for d in range(days + 1)]
        self.tod = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(DAY)]

    def text(self, second: int) -> str:
        return self.days[second // DAY] + self.tod[second % DAY]


def day_volumes(total: int, days: int, start: datetime) -> list[int]:
    """Rows per day: doubling over the period, weekends at 75 %; sums exactly to `total`."""
    weights = []
    for d in range(days):
        weekday = (start + timedelta(days=d)).weekday()
        weights.append((1 + d / days) * (0.75 if weekday >= 5 else 1.0))
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    counts[-1] += total - sum(counts)
    return counts


def zipf_cumulative(n: int, s: float) -> list[float]:
    cumulative, acc = [], 0.0
    for rank in range(1, n + 1):
        acc += 1.0 / rank**s
        cumulative.append(acc)
    return cumulative


class Generator:
    """One data set's rows, deterministic for its name and parameters."""

    def __init__(self, name: str, params: Params, end: datetime):
        self.name = name
        self.p = params
        self.tag = dataset_tag(name)
        self.end = end
        self.start = end - timedelta(days=params.days)
        self.rng = random.Random(params.seed)
        self.clock = Clock(self.start, params.days)
        self.program_id = uid(self.tag, TABLE_NO["program"], 1)
        self.rule_referrer = uid(self.tag, TABLE_NO["rule"], 1)
        self.rule_referee = uid(self.tag, TABLE_NO["rule"], 2)
        n = params.referrers
        self.referrer_ids = [uid(self.tag, TABLE_NO["referrer"], i) for i in range(n)]
        self.code_ids = [uid(self.tag, TABLE_NO["code"], i) for i in range(n)]
        self.external_ids = [f"r{i:06d}" for i in range(n)]
        # Popularity rank -> code: the most popular code is not simply the first one.
        self.by_rank = list(range(n))
        self.rng.shuffle(self.by_rank)
        self.cumulative = zipf_cumulative(n, params.zipf_s)
        self.ip_hashes = [hashlib.sha256(f"ip{i}".encode()).hexdigest() for i in range(20_000)]
        # Filled by referrals(), used by clicks() and conversions().
        self.attached: dict[int, list[tuple[int, str, int, str]]] = {}
        self.referral_rows: list[tuple[int, int, str, str | None]] = []

    def zipf_codes(self, k: int) -> list[int]:
        return self.rng.choices(self.by_rank, cum_weights=self.cumulative, k=k)

    # Each generator yields CSV text chunks for COPY ... FROM STDIN (FORMAT csv).

    def referrers(self) -> Iterator[str]:
        created = self.clock.text(0)
        lines = [
            f"{self.referrer_ids[i]},{created},{self.program_id},{self.external_ids[i]},,"
            f"Referrer {i},{{}}\n"
            for i in range(self.p.referrers)
        ]
        yield "".join(lines)

    def codes(self) -> Iterator[str]:
        created = self.clock.text(0)
        lines = []
        for i in range(self.p.referrers):
            code = f"BD{self.tag:X}{i:07d}"
            lines.append(
                f"{self.code_ids[i]},{created},{self.program_id},{self.referrer_ids[i]},"
                f"{code},{code},t,f,f,,,0\n"
            )
        yield "".join(lines)

    def referrals(self) -> Iterator[str]:
        """Referrals in time order; half came through a click, generated with the clicks."""
        rng, p = self.rng, self.p
        volumes = day_volumes(p.referrals, p.days, self.start)
        index = 0
        attached = 0
        for day, count in enumerate(volumes):
            seconds = sorted(rng.randrange(DAY) for _ in range(count))
            codes = self.zipf_codes(count)
            lines = []
            for second, code in zip(seconds, codes, strict=False):
                at = day * DAY + second
                rid = uid(self.tag, TABLE_NO["referral"], index)
                customer = f"c{index:07d}"
                click_id = None
                if rng.random() < 0.5:
                    click_id = uid(self.tag, TABLE_NO["click"], 0xF00000000 + attached)
                    attached += 1
                    click_at = max(day * DAY, at - rng.randrange(1, 3600))
                    self.attached.setdefault(day, []).append((click_at, click_id, code, customer))
                source = "redemption" if rng.random() < 0.7 else "conversion"
                self.referral_rows.append((at, code, customer, click_id))
                text = self.clock.text(at)
                lines.append(
                    f"{rid},{text},{self.program_id},{self.referrer_ids[code]},"
                    f"{self.code_ids[code]},{click_id or ''},{customer},,{source},{text}\n"
                )
                index += 1
            yield "".join(lines)

    def click_tails(self, rng: random.Random) -> list[str]:
        """A pool of the columns after occurred_at up to customer_id, drawn with their shares.

        Drawing a whole tail per row keeps the generator at a few microseconds a click.
        """
        p = self.p
        channels = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS], k=TAIL_POOL)
        campaigns = rng.choices([c for c, _ in CAMPAIGNS], [w for _, w in CAMPAIGNS], k=TAIL_POOL)
        browsers = [csv_quote(b) for b in BROWSERS]
        bots = [csv_quote(b) for b in BOTS]
        tails = []
        for (utm_source, utm_medium), campaign in zip(channels, campaigns, strict=False):
            roll = rng.random()
            bot = roll < p.bot_share
            duplicate = not bot and roll < p.bot_share + p.duplicate_share
            agent = rng.choice(bots) if bot else rng.choice(browsers)
            tails.append(
                f"{'api' if rng.random() < 0.2 else 'link'},,,{utm_source or ''},"
                f"{utm_medium or ''},{campaign if utm_source else ''},v{rng.randrange(10**9)},"
                f"{rng.choice(self.ip_hashes)},{agent},{'t' if bot else 'f'},"
                f"{'t' if duplicate else 'f'},t,"
            )
        return tails

    def clicks(self, stream: int = 0, streams: int = 1) -> Iterator[str]:
        """Clicks in time order, with the referrals' clicks merged in.

        With several streams each takes every `streams`-th day and its own id range, so that
        parallel COPYs still lay the table out (almost) in time order.
        """
        rng = random.Random(self.p.seed * 100 + stream)
        p = self.p
        free_total = p.clicks - sum(len(v) for v in self.attached.values())
        volumes = day_volumes(free_total, p.days, self.start)
        tails = self.click_tails(rng)
        bits = TAIL_POOL.bit_length() - 1
        getrandbits, rand = rng.getrandbits, rng.random
        heads = [
            f"{self.program_id},{self.code_ids[i]},{self.referrer_ids[i]},"
            for i in range(p.referrers)
        ]
        id_prefix = f"{self.tag:04x}{TABLE_NO['click']:04x}-0000-4000-8000-"
        tod = self.clock.tod
        by_time = operator.itemgetter(0)
        index = stream << 40
        lines: list[str] = []
        for day, count in enumerate(volumes):
            if day % streams != stream:
                continue
            day_text = self.clock.days[day]
            rows: list[tuple[int, int, str | None, str]] = [
                (int(rand() * DAY), code, None, "")
                for code in rng.choices(self.by_rank, cum_weights=self.cumulative, k=count)
            ]
            rows.extend(
                (at - day * DAY, code, click_id, customer)
                for at, click_id, code, customer in self.attached.get(day, ())
            )
            rows.sort(key=by_time)
            for second, code, click_id, customer in rows:
                if click_id is None:
                    click_id = id_prefix + format(index, "012x")
                    index += 1
                at = day_text + tod[second]
                lines.append(
                    f"{click_id},{at},{heads[code]}{at},{tails[getrandbits(bits)]}{customer}\n"
                )
            if len(lines) >= CHUNK_ROWS:
                yield "".join(lines)
                lines = []
        if lines:
            yield "".join(lines)

    def conversions_and_rewards(self) -> tuple[list[str], list[str]]:
        """80 % attributed to a referral (through its code), 20 % organic; rewards by two rules.

        Rule 1 pays the referrer 10.00 on every purchase, rule 2 the referee 10 % of their first.
        """
        rng, p = self.rng, self.p
        horizon = p.days * DAY
        rows: list[tuple[int, int, float, int | None, str, str | None, int | None]] = []
        for k in range(p.conversions):
            amount = round(min(900.0, 15 + rng.lognormvariate(3.8, 0.7)), 2)
            if rng.random() < 0.8 and self.referral_rows:
                referral = rng.randrange(len(self.referral_rows))
                at0, via_code, referee, via_click = self.referral_rows[referral]
                at = min(horizon - 1, at0 + int(rng.expovariate(1 / (4 * DAY))))
                rows.append((at, k, amount, via_code, referee, via_click, referral))
            else:
                rows.append((rng.randrange(horizon), k, amount, None, f"o{k:07d}", None, None))
        rows.sort(key=lambda row: row[0])
        conversions, rewards = [], []
        first_seen: set[int] = set()
        reward_index = 0
        recent = horizon - 14 * DAY
        for index, (at, k, amount, code, customer, click_id, referral_no) in enumerate(rows):
            cid = uid(self.tag, TABLE_NO["conversion"], index)
            text = self.clock.text(at)
            refund = 0.0
            roll = rng.random()
            if roll < 0.015:
                refund = amount
            elif roll < 0.03:
                refund = round(amount * 0.5, 2)
            if code is None:
                conversions.append(
                    f"{cid},{text},{self.program_id},e{k:08d},{'0' * 64},{customer},,{amount:.2f},"
                    f"USD,{text},unattributed,organic,{{}},,,,,{refund:.2f},{{}}\n"
                )
                continue
            assert referral_no is not None
            referral_id = uid(self.tag, TABLE_NO["referral"], referral_no)
            conversions.append(
                f"{cid},{text},{self.program_id},e{k:08d},{'0' * 64},{customer},,{amount:.2f},USD,"
                f"{text},attributed,explicit_code,{{}},{self.referrer_ids[code]},"
                f"{self.code_ids[code]},{click_id or ''},{referral_id},{refund:.2f},{{}}\n"
            )
            payouts = [(self.rule_referrer, "referrer", self.external_ids[code], "fixed", 10.0)]
            if referral_no not in first_seen:
                first_seen.add(referral_no)
                payouts.append((self.rule_referee, "referee", customer, "percent", amount * 0.1))
            for rule, recipient, recipient_id, kind, value in payouts:
                hold = at + 14 * DAY
                if refund >= amount:
                    status, value_now = "reversed", value
                elif at >= recent:
                    status, value_now = "pending", value
                else:
                    status, value_now = ("paid" if rng.random() < 0.6 else "approved"), value
                if refund and refund < amount and kind == "percent":
                    value_now = value * (amount - refund) / amount
                approved = (
                    self.clock.text(min(hold, horizon - 1))
                    if status in ("approved", "paid")
                    else ""
                )
                paid = approved if status == "paid" else ""
                reversed_at = text if status == "reversed" else ""
                hold_text = (
                    self.clock.text(hold)
                    if hold < horizon
                    else ((self.start + timedelta(seconds=hold)).strftime("%Y-%m-%d %H:%M:%S+00"))
                )
                rewards.append(
                    f"{uid(self.tag, TABLE_NO['reward'], reward_index)},{text},{self.program_id},"
                    f"{cid},{rule},1,{self.referrer_ids[code]},{recipient},{recipient_id},reward,,"
                    f"{kind},USD,{value_now:.4f},{value:.4f},{status},{hold_text},{approved},"
                    f"{paid},{'PAY-1' if paid else ''},{reversed_at},"
                    f"{'refunded' if reversed_at else ''}\n"
                )
                reward_index += 1
        return conversions, rewards
