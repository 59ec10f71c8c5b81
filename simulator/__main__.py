"""Command line: `python -m simulator [--host H] [--port P] [--client-id ...] [--client-secret ...] ...`.

Prints `Commerce Layer simulator listening on http://HOST:PORT` once it is serving, logs one line per request to
stderr, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from simulator.auth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from simulator.server import start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Serve a local Commerce Layer simulator (customer_payment_sources, OAuth tokens, faults).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 0 for any (default 8080)")
    parser.add_argument(
        "--client-id",
        default=os.environ.get("SIMULATOR_CLIENT_ID", DEFAULT_CLIENT_ID),
        help="accepted OAuth client id (env SIMULATOR_CLIENT_ID, default sim-client-id)",
    )
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("SIMULATOR_CLIENT_SECRET", DEFAULT_CLIENT_SECRET),
        help="accepted OAuth client secret (env SIMULATOR_CLIENT_SECRET, default sim-client-secret)",
    )
    parser.add_argument("--token-ttl", type=int, default=7200, help="access token lifetime in seconds (7200)")
    parser.add_argument("--live", action="store_true", help="issue live-mode tokens and resources (default test)")
    parser.add_argument("--sample", action="store_true", help="seed sample wallet entries matching sample events")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.token_ttl < 1:
        parser.error("--token-ttl must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("simulator")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    try:
        running = start(
            args.host,
            args.port,
            client_id=args.client_id,
            client_secret=args.client_secret,
            token_ttl=args.token_ttl,
            test_mode=not args.live,
            sample=args.sample,
        )
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"Commerce Layer simulator listening on {running.listen_url}", flush=True)
    if args.sample:
        print(f"Seeded {len(running.store)} sample customer payment sources", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
