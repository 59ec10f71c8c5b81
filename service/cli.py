"""Operator commands for dead letters and event histories, run through the Flask CLI (`flask --app service ...`).

    dead-letters list    [--reason TEXT] [--older-than 2h] [--provider stripe] [--json]
    events show EVENT_ID [--provider stripe] [--json]
    dead-letters replay  (EVENT_ID... | --all | --reason TEXT | --older-than 2h) [--force] [--dry-run] [--json]
    dead-letters purge   (EVENT_ID... | --all | --reason TEXT | --older-than 2h) [--yes] [--json]

Made for scripts as well as people: stdout holds only the result (a table, one line per event, or JSON with
`--json`); messages, prompts and the progress bar go to stderr. Exit codes: 0 success; 1 usage error, nothing
selected, unknown event, an event skipped, or a declined confirmation; 2 Redis or the queue unavailable (one line
on stderr, never a traceback).

A replay publishes the event's stored normalized payload again (`EventLog.stored_event`) with a fresh retry
budget, so it re-runs the same idempotent worker path: an event that was already applied ends as `duplicate`
without a write. The status record is reset to `queued` (attempts 0, a history entry `{"replayed": true,
"task_id": ...}`) and the event leaves the dead-letter set; the worker puts it back if it dies again.
A purge removes entries from the dead-letter set only: status records and histories stay (they expire with every
other record), so `events show` still explains what happened and `replay --force` can still re-run the event.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import click
import redis
from flask import Flask, current_app
from flask.cli import AppGroup

from service.domain import FINAL_OUTCOMES, Outcome, PaymentMethodEvent
from service.eventlog import DEAD_LETTERS_KEY, DeadLetter, EventLog, event_key, history_key

if TYPE_CHECKING:
    from service import WebRuntime

T = TypeVar("T")

EXIT_USAGE = 1  # usage error, nothing selected, unknown event, skipped events, declined confirmation
EXIT_UNAVAILABLE = 2  # Redis (our store and the broker) or the queue could not be reached
DEFAULT_PROVIDER = "stripe"
PROGRESS_MIN_ITEMS = 6  # fewer items than this finish before a progress bar would tell anything
REASON_COLUMN_WIDTH = 60
_WATCH_ATTEMPTS = 5
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


class CommandFailed(click.ClickException):
    """Ends a command with one line on stderr (`Error: ...`) and exit code 1."""

    exit_code = EXIT_USAGE


class Unavailable(CommandFailed):
    """Redis or the queue could not be reached: exit code 2."""

    exit_code = EXIT_UNAVAILABLE


class _UsageFailure(click.ClickException):
    """A click usage error, shown as click shows it, with exit code 1 rather than click's 2."""

    exit_code = EXIT_USAGE

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.message)
        self.original = original

    def show(self, file: IO[Any] | None = None) -> None:
        self.original.show(file)


class Duration(click.ParamType[int]):
    """`30s`, `15m`, `2h`, `7d`: a whole, positive number of seconds, minutes, hours or days."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _DURATION.fullmatch(str(value).strip())
        if match is None or int(match.group(1)) == 0:
            self.fail(f"{value!r} is not a duration: use a positive whole number and s, m, h or d (30s, 15m, 2h, 7d)")
        return int(match.group(1)) * _UNITS[match.group(2)]


def parse_duration(text: str) -> int:
    """Seconds in a DURATION (`30s`, `15m`, `2h`, `7d`); raises `click.BadParameter` otherwise."""
    return Duration().convert(text, None, None)


class _Command(click.Command):
    """Usage errors exit 1 (click's default is 2, which here means an infrastructure failure), and a Redis error
    anywhere in a command becomes one line on stderr and exit 2."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _UsageFailure(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _UsageFailure(error) from None
        except redis.RedisError as error:
            raise Unavailable(_unavailable(error)) from None


class _Group(_Command, AppGroup):
    command_class = _Command


def _unavailable(error: BaseException) -> str:
    return f"Redis is unavailable ({_describe(error)}); nothing more was done"


def _describe(error: BaseException) -> str:
    """The error's type and message on one line, without any password a URL in it may carry."""
    detail = _CREDENTIALS.sub("://***@", " ".join(str(error).split()))
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def register_cli(app: Flask) -> None:
    """Add the `dead-letters` and `events` command groups to `app.cli`."""
    app.cli.add_command(dead_letters_group)
    app.cli.add_command(events_group)


dead_letters_group = _Group(
    "dead-letters",
    help="List, replay and purge dead letters: events the worker gave up on, kept with their reason.",
)
events_group = _Group("events", help="Look at one event's status record and history.")


def _runtime() -> WebRuntime:
    return cast("WebRuntime", current_app.extensions["walletsync"])


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _say(message: str) -> None:
    click.echo(message, err=True)


# --- selection -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    provider: str
    event_id: str

    @property
    def member(self) -> str:
        """Its member in the dead-letter set."""
        return f"{self.provider}:{self.event_id}"

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider, "event_id": self.event_id}


@dataclass(frozen=True)
class Selection:
    targets: list[Target]
    named: bool  # chosen by event id (rather than by --all or a filter)


def _matching(
    events: EventLog, *, reason: str | None, older_than: int | None, provider: str | None
) -> list[DeadLetter]:
    """Dead letters, oldest first, that match every filter given (reason: case-insensitive substring)."""
    letters = events.dead_letters(older_than=older_than)
    if reason is not None:
        letters = [letter for letter in letters if reason.casefold() in letter.reason.casefold()]
    if provider is not None:
        letters = [letter for letter in letters if letter.provider == provider]
    return letters


def _select(
    ctx: click.Context,
    events: EventLog,
    *,
    event_ids: Sequence[str],
    select_all: bool,
    reason: str | None,
    older_than: int | None,
    provider: str | None,
) -> Selection:
    filtered = select_all or reason is not None or older_than is not None
    if event_ids and filtered:
        raise click.UsageError("give event ids, or --all / --reason / --older-than, not both", ctx=ctx)
    if event_ids:
        unique = dict.fromkeys(event_ids)  # keeps the order given, drops repeats
        return Selection([Target(provider or DEFAULT_PROVIDER, event_id) for event_id in unique], named=True)
    if not filtered:
        raise click.UsageError("nothing selected: give event ids, --reason, --older-than, or --all", ctx=ctx)
    letters = _matching(events, reason=reason, older_than=older_than, provider=provider)
    return Selection([Target(letter.provider, letter.event_id) for letter in letters], named=False)


@contextmanager
def _progress(items: Sequence[T], *, label: str, show: bool) -> Iterator[Iterable[T]]:
    """Iterate `items`, with a progress bar on stderr when `show` and there are more than a few."""
    if not show or len(items) < PROGRESS_MIN_ITEMS:
        yield items
        return
    with click.progressbar(items, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


def _selection_options(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.argument("event_ids", nargs=-1, metavar="[EVENT_ID]..."),
            click.option(
                "--all", "select_all", is_flag=True, help=f"{action} every dead letter (narrowed by filters)."
            ),
            click.option("--reason", metavar="TEXT", help="Only dead letters whose reason contains TEXT (any case)."),
            click.option(
                "--older-than", type=Duration(), metavar="DURATION", help="Only those dead at least this long."
            ),
            click.option(
                "--provider",
                metavar="NAME",
                help=f"Filters: only this provider's dead letters (default: all). EVENT_IDs: their provider "
                f"(default: {DEFAULT_PROVIDER}).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# --- dead-letters list -----------------------------------------------------------------------------------------


@dead_letters_group.command("list")
@click.option("--reason", metavar="TEXT", help="Only dead letters whose reason contains TEXT (any case).")
@click.option("--older-than", type=Duration(), metavar="DURATION", help="Only those dead at least this long (2h, 7d).")
@click.option("--provider", metavar="NAME", help="Only this provider's dead letters (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with every field of each dead letter.")
def list_dead_letters(reason: str | None, older_than: int | None, provider: str | None, as_json: bool) -> None:
    """List dead letters, oldest first. Exits 0 also when there are none."""
    letters = _matching(EventLog(_runtime().redis), reason=reason, older_than=older_than, provider=provider)
    if as_json:
        _emit_json([asdict(letter) for letter in letters])
        return
    if not letters:
        _say("no dead letters match")
        return
    rows = [
        [
            letter.event_id,
            letter.provider,
            letter.event_type,
            _shorten(letter.reason),
            str(letter.attempts),
            letter.died_at,
        ]
        for letter in letters
    ]
    for line in _table(["EVENT ID", "PROVIDER", "TYPE", "REASON", "ATTEMPTS", "DIED AT"], rows):
        click.echo(line)
    _say(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")


def _shorten(text: str, width: int = REASON_COLUMN_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


# --- events show -----------------------------------------------------------------------------------------------

_RECORD_ORDER = (
    "provider",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "first_error",
    "last_error",
    "dead_reason",
    "received_at",
    "died_at",
    "updated_at",
    "task_id",
)


@events_group.command("show")
@click.argument("event_id")
@click.option("--provider", default=DEFAULT_PROVIDER, show_default=True, metavar="NAME", help="The event's provider.")
@click.option("--json", "as_json", is_flag=True, help='Print {"record": {...}, "history": [...]} as JSON.')
def show_event(event_id: str, provider: str, as_json: bool) -> None:
    """Show one event's status record and its full history, oldest entry first. Exits 1 for an unknown event."""
    events = EventLog(_runtime().redis)
    record = events.status(provider, event_id)
    history = events.history(provider, event_id)
    if not record and not history:
        raise CommandFailed(f"unknown event {provider}:{event_id} (no status record; records expire after 35 days)")
    if as_json:
        _emit_json({"record": record, "history": history})
        return
    click.echo(f"{provider}:{event_id}")
    ordered = [name for name in _RECORD_ORDER if name in record]
    ordered += sorted(name for name in record if name not in _RECORD_ORDER and name != "event")
    ordered += ["event"] if "event" in record else []  # the stored payload, long: last
    width = max((len(name) for name in ordered), default=0)
    for name in ordered:
        click.echo(f"  {name.ljust(width)}  {record[name]}")
    click.echo(f"history ({len(history)} entries, oldest first):")
    for entry in history:
        details = " ".join(f"{k}={_plain(v)}" for k, v in entry.items() if k not in ("at", "status"))
        click.echo(f"  {entry.get('at', '?')}  {str(entry.get('status', '?')).ljust(9)}  {details}".rstrip())


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


# --- dead-letters replay ---------------------------------------------------------------------------------------


class Skipped(Exception):
    """The event is not replayed (or purged); the message says why."""


class Resolved(Skipped):
    """The event left the dead letters by itself since it was selected (a newer event of its card was written
    in its stead by another replay): nothing left to do."""


class ReplayFailed(Exception):
    """Publishing, or recording a publish, failed: the run stops here."""

    def __init__(self, message: str, entry: dict[str, Any]) -> None:
        super().__init__(message)
        self.entry = entry


@dataclass
class Report:
    done: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_attempted: list[dict[str, Any]] = field(default_factory=list)


def replay_one(runtime: WebRuntime, target: Target, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Publish the stored event of `target` again and mark it `queued`; raises `Skipped` or `ReplayFailed`
    (a `redis.RedisError` when Redis fails before anything was published)."""
    client = runtime.redis
    events = EventLog(client)
    key = event_key(target.provider, target.event_id)
    with client.pipeline(transaction=True) as pipe:
        # From here on, any write to the record (a fast worker already running the replayed task, or a task still
        # in flight) makes our update below step aside instead of overwriting a newer status with `queued`.
        pipe.watch(key, history_key(target.provider, target.event_id))  # type: ignore[no-untyped-call]
        record = events.status(target.provider, target.event_id)
        if not record:
            raise Skipped("unknown event (no status record)")
        previous = record.get("status", "")
        listed = client.zscore(DEAD_LETTERS_KEY, target.member) is not None
        if not (previous == Outcome.DEAD.value and listed) and not force:
            error = Resolved if not listed and previous in FINAL_OUTCOMES else Skipped
            raise error(f"not a dead letter (status {previous or 'unknown'}); --force replays it anyway")
        event = _stored_event(events, target)
        entry = {**target.describe(), "previous_status": previous, "task_id": None}
        if dry_run:
            return entry
        try:
            task_id = runtime.publish(event.to_message(), time.time())  # a fresh retry budget
        except Exception as error:  # kombu raises several types; any failure means "not queued"
            raise ReplayFailed(f"could not publish: {_describe(error)}", entry) from None
        entry["task_id"] = task_id
        try:
            pipe.multi()
            events.record(
                target.provider,
                target.event_id,
                Outcome.QUEUED,
                fields={"attempts": 0, "task_id": task_id},
                note={"replayed": True, "task_id": task_id},
                pipeline=pipe,
            )
            pipe.zrem(DEAD_LETTERS_KEY, target.member)
            pipe.execute()
        except redis.WatchError:
            entry["status_kept"] = _note_replay(events, client, target, task_id)
        except redis.RedisError as error:
            message = f"published as task {task_id}, but its status could not be recorded: {type(error).__name__}"
            raise ReplayFailed(message, entry) from None
    return entry


def _stored_event(events: EventLog, target: Target) -> PaymentMethodEvent:
    try:
        event = events.stored_event(target.provider, target.event_id)
    except (KeyError, TypeError, ValueError):
        raise Skipped("its stored event cannot be read") from None
    if event is None:
        raise Skipped("no stored event to replay")
    return event


def _note_replay(events: EventLog, client: redis.Redis, target: Target, task_id: str) -> str:
    """The record changed while we published (the replayed task may already be done): keep the status it has now,
    add the replay to the history, and leave the dead-letter set unless the event is dead again."""
    key = event_key(target.provider, target.event_id)
    current = ""
    for _ in range(_WATCH_ATTEMPTS):
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(key, history_key(target.provider, target.event_id))  # type: ignore[no-untyped-call]
            current = events.status(target.provider, target.event_id).get("status", "")
            try:
                outcome = Outcome(current)
            except ValueError:
                return current
            pipe.multi()
            events.record(
                target.provider,
                target.event_id,
                outcome,
                note={"replayed": True, "task_id": task_id},
                pipeline=pipe,
            )
            if outcome is not Outcome.DEAD:
                pipe.zrem(DEAD_LETTERS_KEY, target.member)
            try:
                pipe.execute()
            except redis.WatchError:
                continue
            return current
    return current


@dead_letters_group.command("replay")
@_selection_options("Replay")
@click.option("--force", is_flag=True, help="Also replay named events that are not dead letters (see above).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; publish nothing.")
def replay_dead_letters(
    event_ids: tuple[str, ...],
    select_all: bool,
    reason: str | None,
    older_than: int | None,
    provider: str | None,
    as_json: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Publish dead letters to the queue again, with a fresh retry budget.

    Select by EVENT_ID, by --reason / --older-than / --provider, or every dead letter with --all (nothing is
    selected by default). Each event's stored payload is published again; its status becomes `queued` with 0
    attempts and a history entry {"replayed": true, "task_id": ...}, and it leaves the dead-letter list (the
    worker lists it again if it dies again). The worker path is idempotent: an event that was already applied
    ends as `duplicate` without a write.

    An EVENT_ID that is not a dead letter (applied, purged, still queued...) is skipped unless --force is given:
    a replay then resets its attempts and runs it once more, next to any task of it still in flight (harmless,
    but rarely what is meant, hence the flag).

    Output: one line per event (or --json: {"dry_run", "replayed", "skipped", "resolved", "failed", "not_attempted"};
    "resolved": selected by a filter, then written meanwhile by another replay of its card, so nothing is left to do).
    Exit 0 when every selected event was replayed (or nothing matched a filter), 1 when nothing was selected or
    an event was skipped, 2 when publishing or Redis failed: the run stops there and reports what was done.
    """
    runtime = _runtime()
    ctx = click.get_current_context()
    selection = _select(
        ctx,
        EventLog(runtime.redis),
        event_ids=event_ids,
        select_all=select_all,
        reason=reason,
        older_than=older_than,
        provider=provider,
    )
    report = Report()
    if not selection.targets:
        _say("no dead letters match; nothing replayed")
    attempted = 0
    try:
        with _progress(selection.targets, label="Replaying", show=not as_json and not dry_run) as targets:
            for target in targets:
                attempted += 1
                try:
                    report.done.append(replay_one(runtime, target, force=force, dry_run=dry_run))
                except Resolved as resolved:
                    # Selected from the dead letters by a filter, and written since: done, not an error. Named
                    # explicitly, it is reported as skipped like any event that is not a dead letter.
                    if selection.named:
                        report.skipped.append({**target.describe(), "reason": str(resolved)})
                    else:
                        report.resolved.append({**target.describe(), "reason": "written meanwhile by another replay"})
                except Skipped as skipped:
                    report.skipped.append({**target.describe(), "reason": str(skipped)})
                except ReplayFailed as failed:
                    report.failed.append({**failed.entry, "error": str(failed)})
                    break
                except redis.RedisError as error:
                    report.failed.append({**target.describe(), "error": _unavailable(error)})
                    break
    finally:
        report.not_attempted = [target.describe() for target in selection.targets[attempted:]]
    _print_replay(report, as_json=as_json, dry_run=dry_run)
    _finish(report, verb="would replay" if dry_run else "replayed")


def _print_replay(report: Report, *, as_json: bool, dry_run: bool) -> None:
    if as_json:
        _emit_json(
            {
                "dry_run": dry_run,
                "replayed": report.done,
                "skipped": report.skipped,
                "resolved": report.resolved,
                "failed": report.failed,
                "not_attempted": report.not_attempted,
            }
        )
        return
    for entry in report.resolved:
        click.echo(f"resolved  {_member(entry)}  {entry['reason']}")
    for entry in report.done:
        if dry_run:
            detail = f"(status {entry['previous_status']})"
        else:
            detail = f"task {entry['task_id']}"
            if "status_kept" in entry:
                detail += f" (already picked up; status {entry['status_kept']})"
        click.echo(f"{'would replay' if dry_run else 'replayed'}  {_member(entry)}  {detail}")
    for entry in report.skipped:
        click.echo(f"skipped  {_member(entry)}  {entry['reason']}")
    for entry in report.failed:
        click.echo(f"failed  {_member(entry)}  {entry['error']}")
    for entry in report.not_attempted:
        click.echo(f"not attempted  {_member(entry)}")


def _member(entry: dict[str, Any]) -> str:
    return f"{entry['provider']}:{entry['event_id']}"


def _finish(report: Report, *, verb: str) -> None:
    """The summary line on stderr and the exit code."""
    summary = f"{verb} {len(report.done)}, skipped {len(report.skipped)}"
    if report.resolved:
        summary += f", resolved meanwhile {len(report.resolved)}"
    if report.failed:
        summary += f", failed {len(report.failed)}, not attempted {len(report.not_attempted)}"
        raise Unavailable(f"{summary}; stopped: {report.failed[0]['error']}")
    if report.skipped:
        raise CommandFailed(f"{summary}; skipped: {report.skipped[0]['reason']}")
    _say(summary)


# --- dead-letters purge ----------------------------------------------------------------------------------------


def purge_one(client: redis.Redis, target: Target) -> dict[str, Any]:
    """Remove `target` from the dead-letter set, noting it in its history; the status record is kept."""
    events = EventLog(client)
    key = event_key(target.provider, target.event_id)
    for _ in range(_WATCH_ATTEMPTS):
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            if client.zscore(DEAD_LETTERS_KEY, target.member) is None:
                raise Skipped("not a dead letter")
            status = events.status(target.provider, target.event_id).get("status", "")
            pipe.multi()
            pipe.zrem(DEAD_LETTERS_KEY, target.member)
            if status == Outcome.DEAD.value:
                events.record(target.provider, target.event_id, Outcome.DEAD, note={"purged": True}, pipeline=pipe)
            try:
                pipe.execute()
            except redis.WatchError:
                continue  # the worker or another operator changed it meanwhile: look again
            return {**target.describe(), "status": status}
    raise Skipped("its record kept changing; try again")


@dead_letters_group.command("purge")
@_selection_options("Purge")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge_dead_letters(
    event_ids: tuple[str, ...],
    select_all: bool,
    reason: str | None,
    older_than: int | None,
    provider: str | None,
    as_json: bool,
    yes: bool,
) -> None:
    """Remove dead letters from the dead-letter list, after a confirmation (unless --yes).

    Select by EVENT_ID, by --reason / --older-than / --provider, or every dead letter with --all. Only the entry
    in the dead-letter list goes: the event's status record (status `dead`, with a history entry
    {"purged": true}) stays until it expires like every record, so `events show` still explains the event and
    `replay --force` can still re-run it.

    Output: one line per event (or --json: {"purged", "skipped", "failed", "not_attempted"}).
    Exit 0 when every selected event was purged (or nothing matched a filter), 1 when nothing was selected, an
    event was skipped or the confirmation was declined, 2 when Redis failed.
    """
    client = _runtime().redis
    ctx = click.get_current_context()
    selection = _select(
        ctx,
        EventLog(client),
        event_ids=event_ids,
        select_all=select_all,
        reason=reason,
        older_than=older_than,
        provider=provider,
    )
    report = Report()
    targets = selection.targets
    if selection.named:
        targets = [target for target in targets if client.zscore(DEAD_LETTERS_KEY, target.member) is not None]
        report.skipped = [
            {**target.describe(), "reason": "not a dead letter"}
            for target in selection.targets
            if target not in targets
        ]
    if not targets:
        _say("no dead letters match; nothing purged")
    elif not yes:
        shown = ", ".join(target.member for target in targets[:10]) + (", ..." if len(targets) > 10 else "")
        _say(f"about to purge {len(targets)} dead letter{'s' if len(targets) != 1 else ''}: {shown}")
        if not click.confirm("Purge them?", default=False, err=True):
            raise CommandFailed("aborted; nothing purged")
    attempted = 0
    try:
        with _progress(targets, label="Purging", show=not as_json) as chosen:
            for target in chosen:
                attempted += 1
                try:
                    report.done.append(purge_one(client, target))
                except Skipped as skipped:
                    report.skipped.append({**target.describe(), "reason": str(skipped)})
                except redis.RedisError as error:
                    report.failed.append({**target.describe(), "error": _unavailable(error)})
                    break
    finally:
        report.not_attempted = [target.describe() for target in targets[attempted:]]
    if as_json:
        _emit_json(
            {
                "purged": report.done,
                "skipped": report.skipped,
                "failed": report.failed,
                "not_attempted": report.not_attempted,
            }
        )
    else:
        for entry in report.done:
            click.echo(f"purged  {_member(entry)}")
        for entry in report.skipped:
            click.echo(f"skipped  {_member(entry)}  {entry['reason']}")
        for entry in report.failed:
            click.echo(f"failed  {_member(entry)}  {entry['error']}")
        for entry in report.not_attempted:
            click.echo(f"not attempted  {_member(entry)}")
    _finish(report, verb="purged")
