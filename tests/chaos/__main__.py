"""`python -m tests.chaos [--short] [--scenario N ...] [--seed S] [--workdir DIR]`: run the chaos scenarios against
real processes, print the table, and exit 1 when any event was lost, any final state is wrong, or a scenario's
own expectations failed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.harness import kill_leftovers
from tests.chaos.scenarios import (
    FULL,
    LEGEND,
    SCENARIOS,
    SHORT,
    ScenarioResult,
    format_notes,
    format_table,
    run_scenario,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the scaled-down version `make test` runs")
    parser.add_argument("--scenario", type=int, action="append", choices=sorted(SCENARIOS), help="repeatable")
    parser.add_argument("--seed", type=int, default=None, help="seed for the events and the faults")
    parser.add_argument("--workdir", type=Path, default=None, help="where logs go (default: a new temp directory)")
    args = parser.parse_args(argv)
    scale = SHORT if args.short else FULL
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"walletsync-chaos-{scale.name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    numbers = args.scenario or sorted(SCENARIOS)
    print(f"chaos suite ({scale.name}: {scale.events} events over {scale.sources} sources), logs in {workdir}")
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        for number in numbers:
            print(f"-- scenario {number}: {SCENARIOS[number].title} ...", flush=True)
            result = run_scenario(number, scale, workdir, seed=args.seed)
            results.append(result)
            print(f"   {'ok' if result.ok else 'FAILED'} in {result.total_wall:.0f} s", flush=True)
    finally:
        kill_leftovers()
    print()
    print(format_table(results))
    print()
    print(LEGEND)
    print()
    print(format_notes(results))
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
