"""What the commands print with: a console, JSON, the error line, listings (a table on a terminal, TSV when piped,
or JSON: :func:`print_listing`, which every listing command uses), and a photo's ranked classes (``kennel predict``
and ``kennel demo`` show the same table). Rich loads on first use, not with ``kennel --help``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

from kennel.errors import STOPPED_BY_RULE, UsageError

if TYPE_CHECKING:
    from kennel.cli.tables import Listing

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


def _print_table(listing: Listing, as_json: Any) -> None:
    from kennel.cli.tables import print_table

    print_table(listing, console())


def _print_tsv(listing: Listing, as_json: Any) -> None:
    from kennel.cli.tables import write_tsv

    write_tsv(listing, sys.stdout)
    if listing.notice:
        typer.echo(listing.notice, err=True)


def _print_json(listing: Listing, as_json: Any) -> None:
    from kennel.cli.tables import json_rows

    print_json(json_rows(listing) if as_json is None else as_json)


# The ways a listing is written, by the name --format takes; a listing command's option is typed
# ``ListingFormat | None`` so that Typer checks the name and lists the choices in --help.
LISTING_FORMATS = {"table": _print_table, "tsv": _print_tsv, "json": _print_json}
ListingFormat = Literal["table", "tsv", "json"]


def format_option() -> typer.models.OptionInfo:
    """``--format``, on every command that prints a listing."""
    return typer.Option(
        None,
        "--format",
        help="table (the default on a terminal), tsv (the default when piped: a header row, every column, "
        "numbers to 6 significant digits) or json (every digit)",
        show_default=False,
    )


def listing_format(chosen: str | None, as_json: bool = False) -> str:
    """The format a listing is written in: ``--format`` as given (``--json`` is ``--format json``), else a
    table on a terminal and TSV for a program, a file or a CI log."""
    if as_json and chosen not in (None, "json"):
        raise UsageError(f"--json and --format {chosen} ask for two formats; give one of them")
    if as_json:
        return "json"
    return chosen or ("table" if sys.stdout.isatty() else "tsv")


def print_listing(listing: Listing, fmt: str, as_json: Any = None) -> None:
    """``listing`` written in ``fmt`` (:func:`listing_format`); ``as_json``, when given, is what JSON shows
    instead of the listing's own rows (whole job records, say)."""
    LISTING_FORMATS[fmt](listing, as_json)


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


def print_warning(message: str) -> None:
    """``warning: MESSAGE`` on stderr, folded at its words to the terminal's width (80 columns when it is none)."""
    from kennel.lines import fitted

    typer.secho(fitted(f"warning: {message}", sys.stderr), err=True, fg="yellow")


def print_stopped_by(rule: str, command: str, job_id: str) -> None:
    """The last line of a job a rule stopped: the rule, the exit status and the command that shows why, folded
    between them to the terminal's width (a job's id alone is 40 to 70 characters)."""
    from kennel.lines import fold, width

    pieces = [f"stopped by {rule}", f"(exit {STOPPED_BY_RULE});", f"`kennel {command} {job_id}`", "shows why"]
    typer.echo(fold(pieces, width(sys.stderr)), err=True)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, red on a terminal, on one line so that a log holds one line per failure."""
    typer.secho(f"error: {joined(message)}", err=True, fg="red")


BAR_WIDTH = 30  # the probability bar's cells, when the terminal has room for them
SHORTEST_BAR = 10  # below this many cells a bar says too little: the table goes without


def _bar(probability: float, width: int = BAR_WIDTH) -> str:
    filled = round(probability * width)
    return "█" * filled + "·" * (width - filled)


def print_prediction(out, photo: Path, prediction) -> None:
    """A ranked table of one photo's top classes on the console ``out``; ``prediction`` is a
    :class:`~kennel.predictor.Prediction` or an endpoint's ``predictions`` list. The class names stay whole:
    the bar takes what room is left, and goes when there is too little."""
    from rich.table import Table

    top = prediction.top if hasattr(prediction, "top") else [(p["label"], p["probability"]) for p in prediction]
    out.print(str(photo), style="italic", highlight=False, markup=False, soft_wrap=True)  # whole, not folded
    names = max((len(name) for name, _ in top), default=0)
    room = out.width - (len(str(len(top))) + names + len("probability") + 4 * 3 + 1)  # 4 columns' padding, lines
    bar = min(BAR_WIDTH, room) if room >= SHORTEST_BAR else 0
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("class", no_wrap=True)
    table.add_column("probability", justify="right")
    if bar:
        table.add_column("", no_wrap=True)
    for rank, (name, probability) in enumerate(top, 1):
        style = "bold green" if rank == 1 else None
        bars = [_bar(probability, bar)] if bar else []
        table.add_row(str(rank), name, f"{100 * probability:.1f}%", *bars, style=style)
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
