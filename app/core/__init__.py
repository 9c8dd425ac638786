"""Infrastructure every domain uses: settings, the database, money, errors, pagination, shared
schemas and access. Nothing here imports a domain or the HTTP layer."""
