# syntax=docker/dockerfile:1

# Build stage: the project and its dependencies in a virtualenv at /opt/venv.
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# README.md* copies the README when there is one (pyproject.toml names it as the description).
COPY pyproject.toml README.md* ./
COPY app/ ./app/
RUN pip install .


# Runtime stage: the virtualenv, the code and the migrations; nothing from the build.
FROM python:3.11-slim

# PYTHONPATH=/app: the CLI finds alembic.ini and migrations/ next to the imported app package.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH="/opt/venv/bin:$PATH"

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY app/ ./app/
COPY migrations/ ./migrations/
COPY alembic.ini ./

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# --no-proxy-headers: the app reads X-Forwarded-For itself, from REFERRAL_FORWARDED_ALLOW_IPS.
CMD ["sh", "-c", "referral-service migrate && exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port 8000 --no-access-log --no-proxy-headers"]
