"""The ``--overwrite`` option of the commands that replace an ``--out`` folder as a whole, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing --out folder even when it is not one this command writes (its files are deleted).",
    ),
]
