"""The ``elmd-sdk`` command: registers the sub-commands and turns elmd-sdk errors into one-line messages."""

from __future__ import annotations

import os
import sys

import typer

from elmd_sdk.errors import ElmdError

LIGHT_COMMANDS = ("chat", "serve")
"""Sub-commands that start without importing the others: the training commands read their defaults from config
dataclasses whose modules import torch, which would delay ``elmd-sdk chat``'s prompt by more than a second."""


def build_app(only: str | None = None) -> typer.Typer:
    """The ``elmd-sdk`` app with every sub-command, or with ``only`` that one (a light one: chat, serve)."""
    app = typer.Typer(
        name="elmd-sdk",
        help="Emotion-guided multimodal dialogue generation (ELMD).",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(lambda: None)  # a group even with one command, so `elmd-sdk chat ...` parses the same
    if only in (None, "chat"):
        from elmd_sdk.cli import chat

        app.command("chat")(chat.command)
    if only in (None, "serve"):
        from elmd_sdk.cli import serve

        app.command("serve")(serve.command)
    if only is None:
        from elmd_sdk.cli import bundle, calibrate, data, evaluate, index, train_eerg, train_erm, train_rep

        app.add_typer(data.app, name="data")
        app.add_typer(index.app, name="index")
        app.add_typer(bundle.app, name="bundle")
        train_app = typer.Typer(help="Train the ERM retriever (Eq. 4), the REP projector (Eq. 10) or EERG (Eq. 11).")
        train_app.command("erm")(train_erm.command)
        train_app.command("rep")(train_rep.command)
        train_app.command("eerg")(train_eerg.command)
        app.add_typer(train_app, name="train")
        app.command("eval")(evaluate.command)
        app.command("calibrate")(calibrate.command)
    return app


def __getattr__(name: str) -> typer.Typer:
    """``app``: the full app (built on first use, so importing this module for :func:`main` stays light)."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: run the app, print elmd-sdk errors and file-system faults as one line
    (``error: ...``, ``error: PATH: reason``) and exit 2. Third-party loading bars stay off (the commands show their
    own progress)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also read by transformers' "Loading weights" bars
    command = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        build_app(command if command in LIGHT_COMMANDS else None)()
    except ElmdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)


def os_error_line(error: OSError) -> str:
    """``PATH: reason`` for a file-system fault (both paths of a failed rename), else the error's own text."""
    reason = error.strerror or str(error)
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


if __name__ == "__main__":
    main()
