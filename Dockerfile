# syntax=docker/dockerfile:1
#
# One image for every walletsync process; only the command differs:
#   web        gunicorn service.wsgi:app                               (the default CMD)
#   worker     celery -A tasks worker --loglevel=INFO
#   simulator  python -m simulator --host 0.0.0.0 --port 8080 --sample (sandbox only)
# All configuration comes from the environment (see .env.example); nothing secret is baked in.

# Both stages must use the same interpreter: the venv built in the first one is copied into the second.
# Bump the patch version here (or with --build-arg PYTHON_VERSION=...) and nowhere else.
ARG PYTHON_VERSION=3.11.14

# ---------------------------------------------------------------------------------------------------------
# builder: resolve the pinned runtime dependencies into a self-contained venv at /opt/venv.
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN python -m venv /opt/venv

COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------------------
# runtime: the venv and the code, nothing else (no compilers, no pip cache, no tests).
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="walletsync" \
      org.opencontainers.image.description="Keeps Commerce Layer customer wallets in step with the payment provider."

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    PROMETHEUS_MULTIPROC_DIR=/tmp/walletsync-metrics

# A fixed, unprivileged uid/gid so that volume permissions and runAsUser policies are predictable.
RUN groupadd --system --gid 10001 walletsync \
    && useradd --system --uid 10001 --gid walletsync --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin walletsync \
    && mkdir -p /tmp/walletsync-metrics \
    && chown walletsync:walletsync /tmp/walletsync-metrics

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Owned by root and read-only for the service user: the processes never write their own code.
COPY gunicorn.conf.py ./
COPY service/ ./service/
COPY tasks/ ./tasks/
COPY simulator/ ./simulator/

USER 10001:10001

# gunicorn.conf.py binds GUNICORN_BIND, 0.0.0.0:8000 by default.
EXPOSE 8000

# Liveness of the web process (slim images have no curl; urlopen raises, so exits 1, on any non-2xx).
# The worker and the simulator override this check in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["gunicorn", "service.wsgi:app"]
