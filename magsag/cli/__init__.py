"""The ``magsag`` command line: ``magsag data <command>``.

Each module under ``magsag/cli/`` registers one group of commands on :data:`data_app`;
they all share :mod:`magsag.cli.common` for options, output and error handling.
"""

from __future__ import annotations

import sys

import typer

from magsag import __version__
from magsag.cli import clickhouse, doctor, governance, hot, lake, live, migrate, otel, query, render, semantic

render.show_flags_as_flags()

app = typer.Typer(
    name="magsag",
    help="MAGSAG: agent execution data from hot store to Parquet lakehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every subcommand inherits -h
)
data_app = typer.Typer(
    name="data",
    help="Store, query, search, tier and archive agent runs and events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")

for module in (hot, migrate, lake, query, clickhouse, live, otel, governance, semantic, doctor):
    module.register(data_app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"magsag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """MAGSAG storage layer."""


def main() -> None:
    sys.exit(app(prog_name="magsag") or 0)
