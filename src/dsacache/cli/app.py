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
import_app = typer.Typer(
    help="Read another tool's capture into a trace store.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(import_app, name="import")


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
    # Each module adds its commands to `app` / `export_app` / `import_app` when imported.
    from dsacache.cli import (  # noqa: F401
        analyze_cmd,
        calibrate_cmd,
        demo_cmd,
        distill_cmd,
        export_cmd,
        import_cmd,
        info_cmd,
        llc_cmd,
        mrc_cmd,
        perf_cmd,
        record_cmd,
        report_cmd,
        simulate_cmd,
        sweep_cmd,
        synth_cmd,
    )


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 2 for bad input, always with one line on stderr."""
    _register_commands()
    try:
        result = app(args=argv, prog_name="dsacache", standalone_mode=False)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except DsacacheError as e:
        return _error(str(e))
    except typer.Abort:
        print("dsacache: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # usage errors: bad option value, unknown option, ...
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `dsacache` / group: show the help
            print(e.format_message())
            return 0
        return _error(e.format_message())
    return result if isinstance(result, int) else 0


def _error(message: str) -> int:
    text = " ".join(message.split())  # one line, whatever the source wrote
    print(f"dsacache: error: {text}", file=sys.stderr)
    return 2


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
