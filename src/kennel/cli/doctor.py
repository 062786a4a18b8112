"""``kennel doctor``: what this machine gives the inference engine (CPU, libraries, devices) and how fast every
registered backend runs a backbone's frozen forward pass here: the figures ``auto`` chooses by."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from kennel.cli.app import app
from kennel.cli.output import ListingFormat, format_option, listing_format, print_json
from kennel.errors import UsageError

if TYPE_CHECKING:
    from kennel.inference.choice import Measurement

CALIBRATION = (16, 4)  # generated batches x photos: int8's speed does not depend on which photos set its ranges


def _model(name: str):
    """The backbone as a classifier, its weights' identity (the ONNX export's key) and a note on the weights."""
    import torch

    from kennel.models import WeightsUnavailable, available_offline, create_model, get_backbone

    try:
        source = available_offline(get_backbone(name))  # never a download: speed does not depend on the weights
    except KeyError as exc:
        raise UsageError(f"{exc.args[0]} (kennel models lists them)") from None
    note = "random weights: none offline (speed does not depend on them)"
    if source is not None:
        try:
            return create_model(name, 2), f"{source.kind}:{source.where}", f"{source.kind} weights"
        except WeightsUnavailable as exc:
            note = f"random weights: {exc}"
    torch.manual_seed(0)  # the same weights every run, so their cached ONNX export stays valid
    return create_model(name, 2, pretrained=False), "random:doctor", note


def _graph(name: str, data: str | None):
    """The backbone's features graph with int8 calibration photos; notes on its weights and the photos."""
    import torch

    from kennel.inference import features_graph
    from kennel.models import get_backbone

    model, weights_id, weights = _model(name)
    pre = get_backbone(name).preprocessing
    if data is None:
        mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)

        def calibration():
            generator = torch.Generator().manual_seed(0)
            for _ in range(CALIBRATION[0]):
                pixels = torch.rand(CALIBRATION[1], 3, pre.input_size, pre.input_size, generator=generator)
                yield ((pixels - mean) / std).numpy()

        calibration_id, photos = "doctor:random", f"{CALIBRATION[0] * CALIBRATION[1]} random images (--data DIR: yours)"
    else:
        from kennel.data.fingerprint import split_fingerprint
        from kennel.data.layout import load_layout
        from kennel.extraction import calibration_batches

        train = load_layout(data, splits=("train",))["train"]
        calibration, calibration_id = lambda: calibration_batches(train, pre), f"doctor:{split_fingerprint(train)}"
        photos = f"the train split of {data}"
    graph = features_graph(model.features, name, weights_id, pre.input_size, calibration, calibration_id)
    return graph, weights, photos


def _rows(graph, device, remeasure: bool) -> tuple[list[dict[str, Any]], Measurement, bool]:
    """One row per registered backend, fastest first: photos/s here or why not; the figures they come from; and
    whether any was timed now."""
    from rich.console import Console

    from kennel.inference import BACKENDS, choice

    usable, skipped = choice.candidates(graph, device)
    figures = choice.stored(graph, device) or choice.Measurement()
    # Those never timed here, and those timed on a busy machine when this one is quiet now (or all, --measure).
    missing = choice.unmeasured(graph, device, usable, remeasure, known=figures)
    if missing:  # choice.figures, with a status line saying which backend is being timed
        with Console(stderr=True).status(f"measuring {graph.architecture}") as status:

            def progress(backend) -> None:
                step = f"{missing.index(backend) + 1} of {len(missing)}, batch {choice.MEASURE_BATCH}"
                status.update(f"measuring {backend.name} on {graph.architecture} ({step})")

            figures = choice.measure(graph, device, missing, progress)
    fastest = figures.fastest([backend.name for backend in usable])
    rows = []
    for name in BACKENDS:
        backend, speed = BACKENDS.get(name), None if name in skipped else figures.speeds.get(name)
        why = skipped.get(name) or (None if speed else figures.failures.get(name, "not measured"))
        row = {"backend": name, "runtime": backend.runtime, "precision": backend.precision, "summary": backend.summary}
        provisional = speed is not None and name in figures.provisional
        rows.append({**row, "photos_per_s": speed, "provisional": provisional, "reason": why, "auto": name == fastest})
    return sorted(rows, key=lambda row: -(row["photos_per_s"] or 0)), figures, bool(missing)


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """What the figures were taken on: the CPU, libraries, devices, backbone, int8 calibration, and when."""
    libraries = ", ".join(f"{name} {version}" for name, version in report["libraries"].items())
    when = f"{report['measured'][:16].replace('T', ' ')} UTC"
    if report.get("load") is not None:
        when += f", load average {report['load']:.1f} on {report['facts']['cores']} cores"
    facts = [
        ("CPU", report["cpu"]),
        ("libraries", libraries + ("" if "openvino" in libraries else " (no openvino)")),
        ("devices", ", ".join(report["devices"]) + f"; timed on {report['device']}"),
        ("backbone", f"{report['model']} @{report['input_size']}, {report['weights']}"),
        ("int8", f"calibrated on {report['calibration']}"),
        ("figures", f"measured now ({when})" if report["measured_now"] else f"stored {when} (--measure: again)"),
    ]
    if report["provisional"]:
        others = f"other processes kept {report['others']:.1f} of {report['facts']['cores']} cores busy"
        facts.append(
            (
                "provisional",
                f"{', '.join(report['provisional'])}: timed while {others}; the next job or kennel doctor on a quiet "
                "machine times them again",
            )
        )
    return facts


def _star(auto: bool) -> str:
    return "★" if auto else ""


def _chosen_style(auto: bool) -> str | None:
    return "bold green" if auto else None


def backends_listing(report: dict[str, Any]):
    """One row per backend, fastest first: auto's choice, its runtime and precision, and its photos/s here or
    why it cannot run here."""
    from kennel.cli.tables import Column, Listing

    columns = [
        # The backend first: a narrow terminal stacks each row under its first column's value.
        Column("backend", rank=0, breaks=""),
        Column("auto", "★", rank=0, show=_star, style=_chosen_style),  # the caption says what ★ means
        Column("runtime", rank=2, breaks=""),  # the backend's name says it, and mostly its precision too
        Column("precision", rank=1, breaks=""),
        Column("photos_per_s", "photos/s", rank=0, show=lambda s: f"{s:,.0f}" if s else "-", justify="right"),
        # Where a figure was timed on a busy machine (the table's caption says so); TSV and JSON always.
        Column(
            "provisional",
            "",
            rank=0,
            show=lambda p: "provisional" if p else "",
            style=lambda p: "yellow",
            in_table=bool(report["provisional"]),
        ),
        Column("reason", "or why it cannot run here", rank=0, show=lambda r: r or "", style=lambda r: "dim"),
        Column("summary", in_table=False),
    ]
    caption = "★ auto: the fastest here. A training job keeps int8 only if valid top-1 loses ≤ 0.5 points."
    if report["provisional"]:
        caption += " Provisional: timed on a busy machine."
    title = f"photos/s of the forward pass, batch {report['batch_size']}"
    return Listing(title, columns, report["backends"], caption=caption, see_all="--format tsv shows them")


def _print(report: dict[str, Any], fmt: str) -> None:
    """The facts, then the backends: a table fitted to the terminal, or TSV on stdout with the facts on
    stderr, where a person piping the table still reads them."""
    from kennel.cli.output import console, print_listing

    if fmt == "table":
        from rich.markup import escape

        out = console()
        for key, value in _facts(report):
            out.print(f"[bold]{key:<10}[/bold] {escape(value)}", highlight=False)
    else:
        for key, value in _facts(report):
            typer.echo(f"{key:<10} {value}", err=True)
    print_listing(backends_listing(report), fmt)


@app.command("doctor")
def doctor_command(
    model: str = typer.Option("tf_efficientnet_lite0", "--model", "-m", metavar="NAME", help="backbone to time"),
    measure: bool = typer.Option(False, "--measure", help="time every backend again, even where figures are stored"),
    data: str = typer.Option(None, "--data", metavar="DIR", help="calibrate int8 on this dataset's train split"),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA when present), cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables (the same as --format json)"),
    fmt: ListingFormat | None = format_option(),
) -> None:
    """How fast each inference backend runs a backbone here, and the one `auto` would choose.

    Prints the CPU (model, cores, instruction sets), libraries and devices, then each backend's photos/s or why not.

    Piped, the backends are TSV on stdout and the lines about the machine go to stderr.

    Figures stored for this machine are reused (training jobs choose by them); --measure times every backend again.

    int8 is calibrated on random images unless --data DIR is given; a backbone's weights do not change its speed."""
    import torch

    from kennel.inference import choice, machine
    from kennel.job import resolve_device

    fmt = listing_format(fmt, as_json)
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; choose auto, cpu or cuda")
    target = resolve_device(device)
    graph, weights, calibration = _graph(model, data)
    rows, figures, measured_now = _rows(graph, target, measure)
    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    report = {
        "cpu": machine.describe_cpu(),
        "facts": machine.facts(target),
        "libraries": machine.library_versions(),
        "devices": ["cpu", *gpus] if gpus else ["cpu (no CUDA GPU)"],
        "device": str(target),
        "model": model,
        "input_size": graph.input_size,
        "weights": weights,
        "calibration": calibration,
        "batch_size": choice.MEASURE_BATCH,
        "measured": figures.measured,
        "load": figures.load,  # the 1-minute load average when timed: figures taken on a busy machine mislead
        "provisional": [row["backend"] for row in rows if row["provisional"]],  # timed again at a quiet start
        "others": figures.others,  # the cores other processes kept busy while they were timed
        "measured_now": measured_now,
        "backends": rows,
        "auto": next((row["backend"] for row in rows if row["auto"]), None),
    }
    if fmt == "json":
        print_json(report)
    else:
        _print(report, fmt)
