"""A local Commerce Layer simulator: the `customer_payment_sources` API, OAuth tokens, faults and rate limits.

`start()` runs one in a background thread (tests, benchmarks); `python -m simulator` runs one from the command
line (`make run`). See README.md in this package for the endpoints and the choices made.
"""

from simulator.server import RunningSimulator, start

__all__ = ["RunningSimulator", "start"]
