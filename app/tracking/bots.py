"""Known crawlers, link previewers and scripted clients, recognised by user agent."""

import re
from functools import lru_cache

BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrape|fetch|preview|facebookexternalhit|embedly|"
    r"whatsapp|telegram|skypeuripreview|bingpreview|headless|phantomjs|puppeteer|playwright|"
    r"lighthouse|pingdom|uptime|monitor|curl/|wget/|python-requests|python-urllib|httpx|"
    r"aiohttp|go-http-client|java/|okhttp|libwww|axios/|node-fetch|postman",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)  # a few browsers' agents make most clicks; the pattern is long
def is_bot(user_agent: str | None) -> bool:
    return bool(user_agent) and BOT_PATTERN.search(user_agent or "") is not None
