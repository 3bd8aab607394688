"""Options that several ``simaq`` commands share, declared once as Typer ``Annotated`` types.

A command declares ``endpoint_url: EndpointUrl = None``: the flag and its help live here, the
default in the command's signature (Typer's ``Annotated`` style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# --- datasets (the dataset and model commands) -----------------------------------------------------

EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: $SIMAQ_S3_ENDPOINT, else AWS)",
    ),
]
DatasetRoot = Annotated[
    str, typer.Argument(help="dataset root (local or s3://) or its manifest.json")
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="show Ray's banners and the workers' logs")
]

# --- one sample written as files (``simaq phantom``, ``simaq simulate``) ---------------------------

OutDir = Annotated[Path, typer.Option("--out", help="output directory (created)")]
Preset = Annotated[
    str | None, typer.Option("--preset", help="preset name (demo, simaq-paper, full)")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="config file (YAML/JSON)")]
Seed = Annotated[int, typer.Option("--seed", help="global seed")]
Index = Annotated[int, typer.Option("--index", help="sample index")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", help="override KEY=VALUE (YAML value), repeatable")
]
Format = Annotated[str, typer.Option("--format", help="volume file format: tiff or mrc")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="replace the files of an earlier run in OUT")
]
