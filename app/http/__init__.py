"""The HTTP layer: authentication, middleware (unit of work, CORS, load shedding, request
logs), rate limits, CSV streaming and the OpenAPI file. Routers use it; services never do."""
