"""``kennel models``: the backbone registry, with what is available offline right now."""

from __future__ import annotations

from typing import Any

import typer

from kennel.cli.app import app
from kennel.cli.output import ListingFormat, format_option, listing_format, print_listing


def _offline(row: dict[str, Any]) -> str:
    if row["family"] == "test":
        return "n/a (random init)"
    return f"yes ({row['offline_weights']})" if row["offline_weights"] else "no"


def _offline_style(text: str) -> str | None:
    return "green" if text.startswith("yes") else "red" if text == "no" else None


def backbones_listing(rows: list[dict[str, Any]]):
    """The backbones table: one row per :func:`backbone_rows` entry."""
    from kennel.cli.tables import Column, Listing

    columns = [
        Column("name", rank=0, breaks=""),
        Column("family", rank=3, breaks=""),
        Column("params_m", "params (M)", rank=2, show=lambda m: f"{m:.1f}", justify="right"),
        Column("imagenet_top1", "ImageNet top-1", rank=1, show=lambda t: f"{t:.1f}%" if t else "-", justify="right"),
        Column("input_size", "input", rank=4, justify="right"),
        Column("interpolation", rank=5),
        Column("offline", "weights offline", rank=1, style=_offline_style),
        Column("weights_path", "weights path", rank=6, in_table=False),
    ]
    rows = [{**row, "offline": _offline(row)} for row in rows]
    caption = "fuse several with +: kennel train --model tf_efficientnet_lite0+tf_efficientnet_lite2"
    return Listing("kennel backbones", columns, rows, caption=caption)


@app.command("models")
def models_command(
    pattern: str = typer.Argument("*", help="shell pattern over names, e.g. 'resnet*'"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table (the same as --format json)"),
    fmt: ListingFormat | None = format_option(),
) -> None:
    """List the backbones: parameters, ImageNet accuracy, preprocessing and whether weights are here offline.
    Any of them joined by + (tf_efficientnet_lite0+tf_efficientnet_lite2) train as one fused backbone."""
    fmt = listing_format(fmt, as_json)
    rows = backbone_rows(pattern)
    print_listing(backbones_listing(rows), fmt, rows)


def backbone_rows(pattern: str = "*") -> list[dict[str, Any]]:
    """Each registered backbone matching ``pattern``, with where its weights are offline, if they are."""
    from kennel.models import BACKBONES, available_offline

    rows = []
    for name in BACKBONES.names(pattern):
        spec = BACKBONES.get(name)
        source = available_offline(spec)
        pre = spec.preprocessing
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "params_m": spec.params_m,
                "imagenet_top1": spec.imagenet_top1,
                "input_size": pre.input_size,
                "interpolation": pre.interpolation,
                "offline_weights": source.kind if source else None,
                "weights_path": source.where if source else None,
            }
        )
    return rows
