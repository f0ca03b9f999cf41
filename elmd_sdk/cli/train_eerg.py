"""Placeholder until its owner lands it."""


def command() -> None:
    """Not yet available."""
    raise NotImplementedError
