"""What the commands print with: a console, JSON, the error line, and a photo's ranked classes (``kennel
predict`` and ``kennel demo`` show the same table). Rich loads on first use, not with ``kennel --help``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

PIPED_WIDTH = 160  # wide enough that a piped table keeps its columns instead of wrapping at rich's 80
# The colour of a rule's status (kennel.findings) in the debugger's and the profiler's tables.
RULE_STATUS_STYLE = {
    "issues found": "red",
    "error": "magenta",
    "no issues": "green",
    "not applicable": "dim",
    "no data": "dim",
}


def console(stderr: bool = False):
    """A rich console on stdout (or stderr) as wide as the terminal, or :data:`PIPED_WIDTH` when piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(soft_wrap=False, stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH)


def styled(text: str, style: str | None) -> str:
    """``text`` in rich markup of ``style``; as it is without one (an empty ``[]...[/]`` is a markup error)."""
    return f"[{style}]{text}[/{style}]" if style else text


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def joined(message: str) -> str:
    """A message of several lines on one: a heading's indented items become ``heading: a; b``, and any other
    line follows the one before it after a space."""
    text, items = "", False
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        indented = raw[:1].isspace()
        if items and indented:
            text += "; " + line
            continue
        items = indented and text.endswith(":")
        text = f"{text} {line}" if text else line
    return text


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, red on a terminal, on one line so that a log holds one line per failure."""
    typer.secho(f"error: {joined(message)}", err=True, fg="red")


def _bar(probability: float, width: int = 30) -> str:
    filled = round(probability * width)
    return "█" * filled + "·" * (width - filled)


def print_prediction(out, photo: Path, prediction) -> None:
    """A ranked table of one photo's top classes on the console ``out``; ``prediction`` is a
    :class:`~kennel.predictor.Prediction` or an endpoint's ``predictions`` list."""
    from rich.table import Table

    top = prediction.top if hasattr(prediction, "top") else [(p["label"], p["probability"]) for p in prediction]
    table = Table(title=str(photo), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column("")
    for rank, (name, probability) in enumerate(top, 1):
        style = "bold green" if rank == 1 else None
        table.add_row(str(rank), name, f"{100 * probability:.1f}%", _bar(probability), style=style)
    out.print(table)


def print_verdicts(out, answer: dict[str, Any]) -> None:
    """The endpoint's plain verdicts under the table: is it a dog, is there a human face."""
    dog, face = answer.get("dog"), answer.get("human_face")
    if dog:
        out.print(f"dog: {'yes' if dog['is_dog'] else 'no'} (score {dog['score']:.2f})")
    if face:
        if face.get("found"):
            out.print(f"human face found: {face.get('count', 1)} - the breeds above are the ones the face resembles")
        elif face.get("searched") is False:
            out.print("human face: not looked for (the endpoint looks only where it sees no dog)")
        else:
            out.print("human face found: no")
