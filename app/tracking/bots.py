"""Known crawlers, link previewers and scripted clients, recognised by user agent."""

import re

BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrape|fetch|preview|facebookexternalhit|embedly|"
    r"whatsapp|telegram|skypeuripreview|bingpreview|headless|phantomjs|puppeteer|playwright|"
    r"lighthouse|pingdom|uptime|monitor|curl/|wget/|python-requests|python-urllib|httpx|"
    r"aiohttp|go-http-client|java/|okhttp|libwww|axios/|node-fetch|postman",
    re.IGNORECASE,
)


def is_bot(user_agent: str | None) -> bool:
    return bool(user_agent) and BOT_PATTERN.search(user_agent or "") is not None
