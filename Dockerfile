# syntax=docker/dockerfile:1

# Build stage: the versions of requirements/runtime.txt (hash-checked, runtime only, no dev
# tools) in a virtualenv at /opt/venv, in a layer of their own, rebuilt only when the lock file
# changes; then the project itself, not editable.
FROM python:3.11-slim AS builder

# The uv that the Makefile pins (UV_VERSION), from PyPI like everything else.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check "uv==0.13.9"

# Bytecode compiled at build time (the runtime writes none); a copy, not links, out of the cache
# mount; the image's Python, never a downloaded one, so the venv works in the runtime stage.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0

WORKDIR /src
RUN uv venv --python /usr/local/bin/python3 /opt/venv
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=requirements/runtime.txt,target=requirements/runtime.txt \
    uv pip install --python /opt/venv/bin/python --require-hashes -r requirements/runtime.txt

# The project itself, not editable: the venv keeps its `referral-service` command, not /src.
# README.md: pyproject.toml names it as the description.
COPY pyproject.toml README.md ./
COPY app/ ./app/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/venv/bin/python --no-deps .


# Runtime stage: the virtualenv, the code and the migrations; no uv, nothing from the build.
# The same base image as the builder: the venv's python is that image's /usr/local/bin/python3.
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
