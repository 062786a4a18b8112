"""``kennel models``: the backbone registry, with what is available offline right now."""

from __future__ import annotations

import json

import typer

from kennel.cli.app import app


@app.command("models")
def models_command(
    pattern: str = typer.Argument("*", help="shell pattern over names, e.g. 'resnet*'"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the backbones: parameters, ImageNet accuracy, preprocessing and whether weights are here offline.
    Any of them joined by + (tf_efficientnet_lite0+tf_efficientnet_lite2) train as one fused backbone."""
    from rich.console import Console
    from rich.table import Table

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
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="kennel backbones")
    for column in ("name", "family", "params (M)", "ImageNet top-1", "input", "weights offline"):
        table.add_column(column)
    for row in rows:
        offline = f"[green]yes[/green] ({row['offline_weights']})" if row["offline_weights"] else "[red]no[/red]"
        if row["family"] == "test":
            offline = "n/a (random init)"
        top1 = f"{row['imagenet_top1']:.1f}%" if row["imagenet_top1"] else "-"
        table.add_row(
            row["name"],
            row["family"],
            f"{row['params_m']:.1f}",
            top1,
            f"{row['input_size']} {row['interpolation']}",
            offline,
        )
    table.caption = "fuse several with +: kennel train --model tf_efficientnet_lite0+tf_efficientnet_lite2"
    Console().print(table)
