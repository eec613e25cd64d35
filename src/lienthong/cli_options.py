"""Command-line options shared by the ``lienthong`` commands."""

from __future__ import annotations

from typing import Annotated

import typer

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        help="sqlite:///PATH or postgresql://... "
        "(default: LIENTHONG_DATABASE_URL or sqlite:///./lienthong-data/lienthong.db)",
    ),
]
