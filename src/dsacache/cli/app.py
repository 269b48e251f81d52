"""The `dsacache` entry point: builds the Typer app and turns user errors into one line, exit 2."""

from __future__ import annotations

import sys

import typer

from dsacache import __version__
from dsacache.errors import DsacacheError

app = typer.Typer(
    name="dsacache",
    help="Access patterns and LLC reservation for dynamic sparse attention (DSA) decode.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
export_app = typer.Typer(
    help="Write a trace in another tool's format.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(export_app, name="export")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dsacache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Access patterns and LLC reservation for dynamic sparse attention (DSA) decode."""


def _register_commands() -> None:
    # Each module adds its commands to `app` / `export_app` when imported.
    from dsacache.cli import (  # noqa: F401
        analyze_cmd,
        demo_cmd,
        export_cmd,
        info_cmd,
        llc_cmd,
        mrc_cmd,
        simulate_cmd,
        synth_cmd,
    )


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (2 for bad input, with a one-line message)."""
    _register_commands()
    try:
        app(args=argv, prog_name="dsacache")  # standalone: usage errors exit 2 by themselves
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except DsacacheError as e:
        print(f"dsacache: error: {e}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
