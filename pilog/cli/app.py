"""The `pilog` command: thin typer commands over the library."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pilog import __version__
from pilog.cli.common import (
    CONFIG_HELP,
    DATA_DIR_HELP,
    reading_config,
    resolve_config,
    setup_logging,
)
from pilog.counts import counted
from pilog.errors import PilogError

if TYPE_CHECKING:
    from pilog.plugins import PluginKind


def _flags_show_no_type() -> None:
    """Help lists a boolean flag as `--follow -f`, not `--follow -f <bool>`, and an option
    given once per value as `--sensor <str>...`, not `--sensor <list[str]>`."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag:
            return None
        text = shown(self, ctx)
        if self.multiple and text:
            text = re.sub(r"<list\[(\w+)\]>", r"<\1>...", text)
        return text

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_flags_show_no_type()

app = typer.Typer(
    name="pilog",
    help="A durable sensor ingestor: drivers in, append-only log, exactly-once upload.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help=DATA_DIR_HELP)]


def _version(value: bool) -> None:
    if value:
        print(f"pilog {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version")
    ] = False,
) -> None:
    del version


@app.command()
def run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False,
    ephemeral: Annotated[
        bool,
        typer.Option(
            "--ephemeral", help="All state in RAM (tmpfs), for read-only roots; see operations"
        ),
    ] = False,
) -> None:
    """Read the configured sensors into the log until SIGTERM/SIGINT."""
    from pilog.cli import run as run_cmd

    setup_logging(verbose)
    run_cmd.run(resolve_config(config, data_dir, ephemeral=ephemeral))


@app.command()
def tail(
    from_: Annotated[
        str, typer.Option("--from", help="SEQ, -N (last N), an age (10m) or a time (RFC 3339)")
    ] = "-10",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="NDJSON (the default when stdout is not a terminal)")
    ] = False,
    sensor: Annotated[list[str] | None, typer.Option("--sensor", help="Only this sensor")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type (reading, gap, ...)")
    ] = None,
    pending: Annotated[
        str | None,
        typer.Option("--pending", help="The readings this sink has not delivered yet"),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print events of the log, from a running or a stopped pilog."""
    from pilog.cli import tail as tail_cmd
    from pilog.events import TYPE_NAMES
    from pilog.history import History

    unknown = set(type_ or ()) - TYPE_NAMES
    if unknown:
        raise PilogError(
            f"unknown --type {', '.join(sorted(unknown))}; known: {', '.join(sorted(TYPE_NAMES))}"
        )
    tail_cmd.check_from(from_)
    cfg = reading_config(config, data_dir, wait=follow)  # `tail -f` may start before pilog
    history = History(cfg.data_dir)
    if pending is not None:
        start = tail_cmd.pending_from(cfg, history, pending)
        type_ = type_ or ["reading"]
    else:
        start = tail_cmd.parse_from(from_, history, time.time_ns())
    tail_cmd.tail(
        history,
        start,
        follow=follow,
        as_json=as_json or not sys.stdout.isatty(),
        sensors=set(sensor or ()),
        types=set(type_ or ()),
    )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show segments, size against the cap, seqs, cursors, repairs and gaps."""
    from rich.console import Console

    from pilog.cli import status as status_cmd

    state = status_cmd.collect(reading_config(config, data_dir))
    if as_json:
        print(json.dumps(state, indent=2))
    else:
        status_cmd.render(state, Console())


@app.command()
def retry(
    sink: Annotated[
        str | None, typer.Argument(help="The sink to wake (default: every waiting sink)")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make sinks waiting to retry (after an outage, or paused) send again now."""
    from pilog.cli import retry as retry_cmd

    print(retry_cmd.retry(resolve_config(config, data_dir), sink))


@app.command()
def verify(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Check every frame of the log; exit 1 naming segment and offset on damage."""
    from rich.console import Console

    from pilog.cli import verify as verify_cmd
    from pilog.history import History

    history = History(reading_config(config, data_dir).data_dir)
    verdict = verify_cmd.verify(history)
    console = Console(stderr=True)
    for note in verdict.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    span = (
        f"seq {verdict.first_seq}..{verdict.last_seq}" if verdict.last_seq is not None else "empty"
    )
    if verdict.errors:
        for err in verdict.errors:
            console.print(f"[red]damage:[/red] {err}", highlight=False, soft_wrap=True)
        console.print(
            "Stop pilog and run `pilog repair` to keep every intact record and record the "
            "lost ones as gaps (see docs/operations.md).",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    print(
        f"ok: {counted(verdict.segments, 'segment')}, {counted(verdict.records, 'event')}, "
        f"{span} "
        f"in {history.paths.log_dir}"
    )


@app.command()
def repair(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be repaired; change nothing")
    ] = False,
) -> None:
    """Rebuild damaged sealed segments (pilog stopped): intact records kept, each lost one a Gap."""
    from rich.console import Console

    from pilog.cli import repair as repair_cmd

    setup_logging(False)
    report = repair_cmd.repair(reading_config(config, data_dir), dry_run=dry_run)
    for note in report.notes:
        print(note)
    console = Console(stderr=True)
    for refused in report.refused:
        console.print(f"[red]not repaired:[/red] {refused}", highlight=False, soft_wrap=True)
    verb = "would repair" if dry_run else "repaired"
    for r in report.repairs:
        kept = f"; original kept in {r.quarantined}" if r.quarantined else ""
        print(f"{verb} {r.describe()}{kept}")
    if not report.repairs:
        print(f"nothing to repair: {counted(report.scanned, 'sealed segment')} intact")
    elif not dry_run:
        lost = sum(r.lost_count for r in report.repairs)
        print(
            f"{counted(len(report.repairs), 'segment')} repaired, "
            f"{counted(lost, 'record')} lost (now Gap events)"
        )
    if report.refused:
        raise typer.Exit(1)


@app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Validate the config, open every sensor's device, probe every sink; exit 1 on a failure."""
    import dataclasses

    from rich.console import Console

    from pilog.cli import check as check_cmd

    outcomes = check_cmd.check(resolve_config(config, data_dir))
    if as_json:
        print(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=2))
    else:
        check_cmd.render(outcomes, Console())
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def drivers(
    name: Annotated[
        str | None, typer.Argument(help="A driver: print its options and sample config")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the drivers a sensor can name, or one driver's options and sample config."""
    from pilog.cli import drivers as drivers_cmd

    if name is None:
        listing = drivers_cmd.listing()
        if as_json:
            print(json.dumps(listing, indent=2))
        else:
            drivers_cmd.render_listing(listing)
        return
    described = drivers_cmd.describe(name)
    if as_json:
        print(json.dumps(described, indent=2))
    else:
        drivers_cmd.render(described)


@app.command()
def sinks(
    name: Annotated[
        str | None, typer.Argument(help="A sink type: print its options and sample config")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the sink types a [[sink]] can name, or one type's options and sample config."""
    from pilog.uploader.sinks import KIND

    _plugins(KIND, name, as_json)


@app.command()
def projections(
    name: Annotated[
        str | None, typer.Argument(help="A projection type: print its options and sample")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """List the projection types a [[projection]] can name, or one type's options and sample."""
    from pilog.projections import KIND

    _plugins(KIND, name, as_json)


def _plugins(kind: PluginKind, name: str | None, as_json: bool) -> None:
    from pilog.cli import plugins as plugins_cmd

    if name is None:
        listing = plugins_cmd.listing(kind)
        if as_json:
            print(json.dumps(listing, indent=2))
        else:
            plugins_cmd.render_listing(kind, listing)
        return
    described = plugins_cmd.describe(kind, name)
    if as_json:
        print(json.dumps(described, indent=2))
    else:
        plugins_cmd.render(kind, described)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config")] = Path("pilog.toml"),
    device_id: Annotated[
        str | None, typer.Option("--device-id", help="Default: this host's name")
    ] = None,
    data_dir: Annotated[str, typer.Option("--data-dir", help="Data dir")] = "/var/lib/pilog",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
) -> None:
    """Write a commented pilog.toml to start from, and check that it loads."""
    import socket

    from pilog.config import load_config
    from pilog.config_reference import init_text

    if path.exists() and not force:
        raise PilogError(f"{path} exists; pass --force to overwrite it")
    path.write_text(init_text(device_id or socket.gethostname(), data_dir))
    load_config(path)
    print(f"wrote {path}; `pilog check -c {path}` opens its sensors")


@app.command()
def replay(
    from_: Annotated[
        str, typer.Option("--from", help="SEQ, -N (last N), an age (10m) or a time (RFC 3339)")
    ],
    to: Annotated[
        str | None, typer.Option("--to", help="Last SEQ (inclusive), or a time: sinks only")
    ] = None,
    sink: Annotated[
        list[str] | None, typer.Option("--sink", help="Re-deliver to this sink")
    ] = None,
    projection: Annotated[
        list[str] | None, typer.Option("--projection", help="Rebuild this projection")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every sink and projection")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rewind sinks (re-deliver a range) or rebuild projections, while pilog runs or not."""
    from pilog.cli import replay as replay_cmd
    from pilog.history import History

    cfg = reading_config(config, data_dir)
    sinks, projections = replay_cmd.select(cfg, sink or [], projection or [], all_)
    targets = replay_cmd.plan(
        cfg,
        History(cfg.data_dir),
        from_text=from_,
        to_text=to,
        sinks=sinks,
        projections=projections,
        now_ns=time.time_ns(),
    )
    for t in targets:
        shown = t.name.startswith("sink:") and t.rewind
        readings = f" ({counted(t.readings, 'reading')})" if shown else ""
        print(f"{t.name}: {t.note}{readings}")
    if dry_run:
        print("dry run: nothing changed")
        return
    for line in replay_cmd.apply(cfg, targets):
        print(line)


@app.command()
def export(
    from_: Annotated[
        str, typer.Option("--from", help="SEQ, -N (last N), an age (10m) or a time (RFC 3339)")
    ] = "0",
    to: Annotated[
        str | None, typer.Option("--to", help="Last SEQ (inclusive), or a time (exclusive)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson or csv")] = "ndjson",
    sensor: Annotated[list[str] | None, typer.Option("--sensor", help="Only this sensor")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write the readings of a range as NDJSON or CSV."""
    from pilog.cli import export as export_cmd
    from pilog.cli import tail as tail_cmd
    from pilog.cli.replay import parse_to
    from pilog.history import History

    if fmt not in ("ndjson", "csv"):
        raise PilogError(f"--format {fmt!r}: expected ndjson or csv")
    history = History(reading_config(config, data_dir).data_dir)
    now = time.time_ns()
    start = tail_cmd.parse_from(from_, history, now)
    end = parse_to(to, history, now) if to is not None else None
    args = (history, start, end)
    if output is None:
        n = export_cmd.export(*args, fmt=fmt, sensors=set(sensor or ()))
    else:
        with output.open("w", encoding="utf-8", newline="") as f:
            n = export_cmd.export(*args, fmt=fmt, sensors=set(sensor or ()), out=f)
    print(f"exported {counted(n, 'reading')} from {history.paths.root}", file=sys.stderr)


show_app = typer.Typer(help="Read the projections of a running or stopped pilog.")
app.add_typer(show_app, name="show")
ProjectionOpt = Annotated[
    str | None, typer.Option("--projection", help="Which projection (default: the only one)")
]


@show_app.command("latest")
def show_latest(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    projection: ProjectionOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The last value, time and seq of every sensor field."""
    from rich.console import Console

    from pilog.cli import show as show_cmd

    cfg = reading_config(config, data_dir)
    code = show_cmd.show_latest(cfg.data_dir, as_json=as_json, console=Console(), name=projection)
    raise typer.Exit(code)


@show_app.command("rollup")
def show_rollup(
    sensor: Annotated[str, typer.Option("--sensor", help="Sensor name")],
    field: Annotated[str, typer.Option("--field", help="Field name, e.g. temperature_c")],
    window: Annotated[
        str | None, typer.Option("--window", help="1m, 1h (default: the finest)")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="10m, 1d (default: the last 60 windows)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    projection: ProjectionOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Count, min, mean, max and last per window, with a sparkline of the means."""
    from rich.console import Console

    from pilog.cli import show as show_cmd
    from pilog.config import parse_duration

    cfg = reading_config(config, data_dir)
    try:
        window_s = float(parse_duration(window)) if window is not None else None
        since_s = float(parse_duration(since)) if since is not None else None
    except ValueError as e:
        raise PilogError(f"--window/--since: {e}") from None
    code = show_cmd.show_rollup(
        cfg.data_dir,
        sensor=sensor,
        field=field,
        window_s=window_s,
        since_s=since_s,
        as_json=as_json,
        console=Console(),
        name=projection,
    )
    raise typer.Exit(code)


def main() -> None:
    """Entry point: user errors become one sentence on stderr and exit status 2."""
    try:
        app()
    except PilogError as e:
        print(f"pilog: error: {e}", file=sys.stderr)
        sys.exit(2)
    except PermissionError as e:
        # An operator outside the data dir's group: say which file, not a traceback.
        print(
            f"pilog: error: permission denied: {e.filename or e}; "
            "is this user in the group that owns the data dir?",
            file=sys.stderr,
        )
        sys.exit(2)
    except BrokenPipeError:
        sys.stderr.close()  # `pilog tail | head`: the reader left; not an error
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
