"""The `kagglecifar` command line: a thin Typer layer that parses options, calls a stage and prints its one-line
summary. One module per group of commands; importing them registers the commands, in `--help` order."""

# isort: off
from kagglecifar.cli import fetch, train, predict, submit, run, tune, doctor  # noqa: F401  (registers the commands)
from kagglecifar.cli.app import app, main

# isort: on

__all__ = ["app", "main"]
