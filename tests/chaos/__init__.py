"""The chaos suite: the real processes (gunicorn, a Celery worker, a private redis-server with AOF, the Commerce
Layer simulator over HTTP) driven by a Stripe-like provider while things break, and every final Commerce Layer
state checked against a model of what it must be.

- `harness`: the processes, started in their own process groups and always cleaned up;
- `provider`: plans events, signs them, sends them (shuffled, some more than once) and re-sends non-2xx answers;
- `model`: what every wallet entry must look like afterwards, and what counts as lost or wrong;
- `scenarios`: the six scenarios at two scales (full: `python -m tests.chaos`, short: also run by `make test`).
"""
