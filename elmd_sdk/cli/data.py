"""Placeholder until its owner lands it."""

import typer

app = typer.Typer()
