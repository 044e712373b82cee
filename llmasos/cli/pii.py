"""`llmasos pii scan FILE`: the personal data in a file, found by the detector the server's
policies use (run here, in this process: no server needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmasos.errors import InvalidRequestError

app = typer.Typer(help="Personal data: find it in files.", no_args_is_help=True)


@app.command()
def scan(
    file: Annotated[str, typer.Argument(help="A UTF-8 text file, or - for standard input.")],
    show_values: Annotated[bool, typer.Option(help="Print each value too (off: types and places).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """List each detection (type, line:column, length, score) and a count per type."""
    from llmasos.privacy.detector import shared_detector

    text = _read(file)
    found = shared_detector().detect(text)
    counts: dict[str, int] = {}
    rows = []
    for d in found:
        counts[d.entity_type] = counts.get(d.entity_type, 0) + 1
        line = text.count("\n", 0, d.start) + 1
        column = d.start - (text.rfind("\n", 0, d.start) + 1) + 1
        row = {"type": d.entity_type, "start": d.start, "end": d.end, "line": line, "column": column}
        row["score"] = round(d.score, 3)
        if show_values:
            row["value"] = text[d.start : d.end]
        rows.append(row)
    if json_:
        typer.echo(json.dumps({"entities": rows, "counts": counts}, indent=2))
        return
    for row in rows:
        value = f"  {row['value']!r}" if show_values else ""
        where, length = f"{row['line']}:{row['column']}", row["end"] - row["start"]
        typer.echo(f"{where}\t{row['type']}\t{length} chars\t{row['score']}{value}")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no personal data found"
    typer.echo(summary, err=True)


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"no file {file!r}; give the path of a text file, or - for stdin") from None
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{file!r} is not UTF-8 text; convert it (e.g. with iconv) first") from None
    except IsADirectoryError:
        raise InvalidRequestError(f"{file!r} is a folder; give one text file") from None
