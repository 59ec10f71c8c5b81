"""`python -m bench [--quick] [--out DIR] [--only PARTS] [--keep-logs]`: run the benchmark, write the report.

The full run takes about 6-8 minutes on 2 cores and writes `docs/performance.md` and `docs/performance.png`;
`--quick` is a smoke run of a minute or two with small sizes, written to a temporary directory unless `--out`
is given (so it never overwrites the real figures by accident).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import scenarios
from bench.procs import ROOT, BenchError, Processes, machine_cpu
from bench.report import Results, machine_info, markdown, plot
from bench.scenarios import Config, Drain, Sim, load_average

PARTS = ("ingest", "drain", "burst", "cost")


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with small sizes (a minute or two)")
    parser.add_argument("--out", type=Path, help="where performance.md/.png go (default: docs/, or a temp dir)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and Redis files")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    config = Config.quick_config() if args.quick else Config()
    out = args.out or (Path(tempfile.gettempdir()) / "walletsync-bench-quick" if args.quick else ROOT / "docs")
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="walletsync-bench-"))
    command = " ".join([".venv/bin/python -m bench", *(argv if argv is not None else sys.argv[1:])])

    began = time.monotonic()
    load_before = load_average()
    busy0, total0 = machine_cpu()
    time.sleep(2)
    busy1, total1 = machine_cpu()
    background = (busy1 - busy0) / max(total1 - total0, 1e-9)
    results = Results(
        config=config,
        command=command,
        machine=machine_info(run_dir),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    log(f"walletsync benchmark ({'quick' if config.quick else 'full'}); logs in {run_dir}")
    log(f"  load average before: {load_before}; CPU busy before starting anything: {background:.0%}")
    procs = Processes(run_dir)
    ok = False
    try:
        if "ingest" in parts:
            log("1. ingest")
            results.ingest = scenarios.ingest(procs, config, log)
        if parts & {"drain", "burst", "cost"}:
            _, sim_url = procs.simulator()
            sim = Sim(sim_url)
            reuse: dict[tuple[int, int], Drain] = {}
            if "drain" in parts:
                for workers in config.drain_procs:
                    log(f"2. drain: {config.drain_events} events, {config.drain_sources} cards, {workers} processes")
                    d = scenarios.drain(
                        procs, sim, config, events=config.drain_events, sources=config.drain_sources,
                        workers=workers, log=log,
                    )  # fmt: skip
                    _log_drain(d, config)
                    results.drains.append(d)
                    reuse[(d.events, workers)] = d
            if "burst" in parts:
                log(f"3. bursts of {config.burst_events} events")
                results.bursts = scenarios.burst(procs, sim, config, log)
            if "cost" in parts:
                for size in config.cost_sizes:
                    cached = reuse.get((size, config.cost_procs)) if size // 2 == config.drain_sources else None
                    if cached is None:
                        log(f"4. cost curve: {size} events, {size // 2} cards, {config.cost_procs} processes")
                        cached = scenarios.drain(
                            procs, sim, config, events=size, sources=size // 2, workers=config.cost_procs, log=log
                        )
                        _log_drain(cached, config)
                    results.cost.append(cached)
        ok = True
    except BenchError as error:
        log(f"benchmark failed: {error}")
    finally:
        procs.stop_all()

    load_after = load_average()
    results.wall_seconds = time.monotonic() - began
    results.machine.append(("load average (1/5/15 min) before / after", f"{_load(load_before)} / {_load(load_after)}"))
    results.machine.append(("CPU busy before the run (2 s sample, other processes)", f"{background:.0%}"))
    results.notes = observations(results)
    if not ok:
        log(f"logs kept in {run_dir}")
        return 1
    plot(results, out / "performance.png")
    (out / "performance.md").write_text(markdown(results, "performance.png"))
    log(f"wrote {out / 'performance.md'} and {out / 'performance.png'} in {results.wall_seconds / 60:.1f} min")
    if args.keep_logs:
        log(f"logs kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def _load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _log_drain(d: Drain, config: Config) -> None:
    log(
        f"  {d.settled}/{d.events} final in {d.seconds:.1f} s: {d.total_calls} calls ({d.calls_per_event:.3f}/event), "
        f"{d.rate:.1f} events/s = {d.fraction_of_limit(config):.2f} of the limit-bound "
        f"{d.limit_bound_rate(config):.1f}/s, {d.served_429} x 429, machine CPU "
        f"{d.cpu.get('machine_busy_fraction', 0):.0%}, retries {d.worker_metrics.get('task_retries', {})}"
    )


def _slow_seconds(d: Drain, config: Config) -> tuple[int, int, int]:
    """One-second intervals of a drain with fewer than half the limit's calls, how many of those began at most
    2 s after a 429, and the number of full one-second intervals."""
    seconds = int(d.seconds)
    if seconds < 1:
        return 0, 0, 0
    counts = [0] * seconds
    for t in d.call_times:
        if int(t) < seconds:
            counts[int(t)] += 1
    slow = [s for s, n in enumerate(counts) if n < config.calls_per_second / 2]
    after_429 = [s for s in slow if any(s - 2 <= t < s + 1 for t in d.times_429)]
    return len(slow), len(after_429), seconds


def observations(results: Results) -> list[str]:
    """Conclusions the numbers support by themselves (CPU-bound or limit-bound, 429s, calls per event)."""
    c = results.config
    notes: list[str] = []
    for d in [*results.drains, *[d for d in results.cost if d not in results.drains]]:
        what = f"Drain of {d.events} events with {d.procs} processes"
        fraction = d.fraction_of_limit(c)
        busy = d.cpu.get("machine_busy_fraction", 0.0)
        cores = ", ".join(
            f"{k.removesuffix('_cores')} {v:.2f}" for k, v in d.cpu.items() if k.endswith("_cores") and v >= 0.05
        )
        cores += f"; {d.cpu.get('machine_busy', 0.0):.2f} of {d.cpu.get('cores', 0.0):.0f} busy in all"
        if not d.completed:
            notes.append(f"{what} did not finish within its time limit ({d.settled}/{d.events} final).")
        if fraction < 0.9:
            slow, after_429, seconds = _slow_seconds(d, c)
            saturated = "saturated" if busy >= 0.9 else "not saturated"
            notes.append(
                f"{what}: {fraction:.2f} of the limit-bound rate; {slow} of its {seconds} full seconds carried fewer "
                f"than half the limit's calls, {after_429} of them within 2 s after a 429; machine CPU {busy:.0%} "
                f"busy ({saturated}; cores: {cores})."
            )
        if d.served_429:
            retried = d.worker_metrics.get("task_retries", {})
            notes.append(
                f"{what}: the simulator served {d.served_429} 429s although the workers' limiter uses the same "
                f"window ({c.rate_limits}); each makes every worker pause for the announced interval "
                f"({c.limit_seconds} s); worker retries by reason: {retried}."
            )
        if d.calls_per_event > 1.05 * (d.sources / d.events) * 2:
            notes.append(
                f"{what}: {d.calls_per_event:.3f} calls per event (2 per card would be {2 * d.sources / d.events:.3f})."
            )
    for n, t in enumerate(results.bursts, 1):
        if t.reads > 2 or t.patches > 2 or not t.newest_won:
            notes.append(
                f"Burst trial {n}: {t.reads} reads and {t.patches} PATCHes; final state {t.final_event} "
                f"(newest {t.newest_event}); outcomes {dict(t.outcomes)}."
            )
    windows = [cpu for target in results.ingest for cpu in target.cpu]
    windows += [d.cpu for d in [*results.drains, *results.cost] if d.cpu]
    others = [cpu.get("others_cores", 0.0) for cpu in windows]
    if others and max(others) >= 0.2:
        notes.append(
            f"The machine was shared: processes other than the benchmark's used {min(others):.2f} to "
            f"{max(others):.2f} cores (median {sorted(others)[len(others) // 2]:.2f}) of the {os.cpu_count()} during "
            "the measured intervals, so absolute rates are lower than on an idle machine; ratios within the run are "
            "affected less, but not entirely."
        )
    return notes


if __name__ == "__main__":
    sys.exit(main())
