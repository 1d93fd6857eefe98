"""The `pilog` command: thin typer commands over the library."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pilog import __version__
from pilog.cli.common import CONFIG_HELP, DATA_DIR_HELP, resolve_config, setup_logging
from pilog.errors import PilogError

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
) -> None:
    """Read the configured sensors into the log until SIGTERM/SIGINT."""
    from pilog.cli import run as run_cmd

    setup_logging(verbose)
    run_cmd.run(resolve_config(config, data_dir))


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
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print events of the log, from a running or a stopped pilog."""
    from pilog.cli import tail as tail_cmd
    from pilog.events import TYPE_NAMES
    from pilog.history import History

    cfg = resolve_config(config, data_dir)
    unknown = set(type_ or ()) - TYPE_NAMES
    if unknown:
        raise PilogError(
            f"unknown --type {', '.join(sorted(unknown))}; known: {', '.join(sorted(TYPE_NAMES))}"
        )
    history = History(cfg.data_dir)
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

    state = status_cmd.collect(resolve_config(config, data_dir))
    if as_json:
        print(json.dumps(state, indent=2))
    else:
        status_cmd.render(state, Console())


@app.command()
def verify(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Check every frame of the log; exit 1 naming segment and offset on damage."""
    from rich.console import Console

    from pilog.cli import verify as verify_cmd
    from pilog.history import History

    verdict = verify_cmd.verify(History(resolve_config(config, data_dir).data_dir))
    console = Console(stderr=True)
    for note in verdict.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    span = (
        f"seq {verdict.first_seq}..{verdict.last_seq}" if verdict.last_seq is not None else "empty"
    )
    if verdict.errors:
        for err in verdict.errors:
            console.print(f"[red]damage:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print(f"ok: {verdict.segments} segment(s), {verdict.records} event(s), {span}")


@app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Validate the config and open every sensor's device; exit 1 if anything failed."""
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
def drivers() -> None:
    """List the drivers a sensor can name, with what each reads."""
    from importlib.metadata import entry_points

    from rich.console import Console
    from rich.table import Table

    from pilog.drivers import BUILTIN, StreamingDriver, find_driver

    table = Table("driver", "kind", "reads")
    names = sorted(BUILTIN) + sorted(ep.name for ep in entry_points(group="pilog.drivers"))
    for name in names:
        try:
            cls = find_driver(name)
        except PilogError as e:
            table.add_row(name, "-", f"[red]cannot load:[/] {e}")
            continue
        kind = "streaming" if issubclass(cls, StreamingDriver) else "polling"
        table.add_row(name, kind, cls.description)
    Console().print(table)


def main() -> None:
    """Entry point: user errors become one sentence on stderr and exit status 2."""
    try:
        app()
    except PilogError as e:
        print(f"pilog: error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        sys.stderr.close()  # `pilog tail | head`: the reader left; not an error
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
