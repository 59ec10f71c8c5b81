"""The benchmark harness: `python -m bench` (`make bench`), not part of CI.

It starts the real processes (redis-server, gunicorn with the service's own gunicorn.conf.py, Celery workers) and
the Commerce Layer simulator with its rate limiter scaled in time (50 requests per 1 s instead of per 10 s), then
measures ingest, drain at the limit, bursts and the cost curve, and writes `docs/performance.md` and
`docs/performance.png`. Only loopback addresses are used; every process it starts is stopped at the end.
"""
