"""Typer commands: thin wrappers that parse arguments, call a typed function and show progress."""
