"""``kennel models``: the backbone registry, with what is available offline right now (``kennel models [PATTERN]``),
and the trained models' versions in MLflow's model registry (``register``, ``versions``, ``alias``, ``history``)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
import typer
from typer.core import TyperGroup

from kennel import model_registry
from kennel.cli.app import app, tracking_uri_option
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import ListingFormat, format_option, listing_format, print_json, print_listing
from kennel.jobs import local_minutes

BACKBONES = "ls"  # the subcommand a first word that names none goes to


class ModelsGroup(TyperGroup):
    """``kennel models`` and ``kennel models 'lite*'`` list the backbones (``kennel models ls``): a first word that
    names no subcommand, or an option, is the listing's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [BACKBONES, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[PATTERN] [OPTIONS] | COMMAND [ARGS]..."]


models_app = typer.Typer(
    cls=ModelsGroup,
    help="The backbones kennel trains (kennel models [PATTERN] lists them), and the versions of trained models in "
    "MLflow's model registry, which kennel serve models:/NAME@ALIAS serves.",
    no_args_is_help=False,
)
app.add_typer(models_app, name="models")
AS_JSON = typer.Option(False, "--json", help="print JSON instead of a table (the same as --format json)")
NAME = typer.Argument(..., help="the registered model's name")


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


@models_app.command(BACKBONES)
def models_command(
    pattern: str = typer.Argument("*", help="shell pattern over names, e.g. 'resnet*'"),
    as_json: bool = AS_JSON,
    fmt: ListingFormat | None = format_option(),
) -> None:
    """List the backbones, with whether their weights are here offline (what kennel models [PATTERN] does).

    Parameters, ImageNet accuracy, preprocessing and offline weights. Any of them joined by +
    (tf_efficientnet_lite0+tf_efficientnet_lite2) train as one fused backbone."""
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


# --- the model registry --------------------------------------------------------------------------------------


@models_app.command("register")
def register_command(
    job: str = typer.Argument(..., help=JOB_HELP),
    name: str = typer.Option(..., "--name", help="the registered model to add a version to (created if missing)"),
    alias: str | None = typer.Option(None, "--alias", help="point this alias (prod, staging) at the new version"),
    tracking_uri: str | None = tracking_uri_option(),
    as_json: bool = typer.Option(False, "--json", help="print the new version as JSON"),
) -> None:
    """Register a job's model as a new version, tagged with its metrics, backbone and data fingerprint."""
    version = model_registry.register(find_job(job), name, alias, tracking_uri)
    if as_json:
        print_json(asdict(version))
        return
    aliased, via = (f", alias {alias}", f"@{alias}") if alias else ("", f"/{version.version}")
    typer.echo(f"registered job {version.job_id} as {name} version {version.version}{aliased}")
    typer.echo(f"serve it: kennel serve models:/{name}{via}")


@models_app.command("versions")
def versions_command(
    name: str = NAME,
    tracking_uri: str | None = tracking_uri_option(),
    as_json: bool = AS_JSON,
    fmt: ListingFormat | None = format_option(),
) -> None:
    """List a registered model's versions, newest first: aliases, job, backbone, accuracy, data fingerprint."""
    found = model_registry.versions(name, tracking_uri)
    rows = [{**asdict(v), **v.metrics} for v in found]
    print_listing(versions_listing(name, rows), listing_format(fmt, as_json), [asdict(v) for v in found])


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def versions_listing(name: str, rows: list[dict[str, Any]]):
    """One row per version: :class:`~kennel.model_registry.RegisteredVersion` fields, its metrics flattened."""
    from kennel.cli.tables import Column, Listing

    columns = [
        Column("version", rank=0, justify="right"),
        Column("aliases", rank=0, show=lambda a: ", ".join(a) or "-", style=lambda a: "green" if a else None),
        Column("created", rank=3, show=lambda t: local_minutes(t) or "-"),
        Column("job_id", "job", rank=1, breaks=""),
        Column("backbone", rank=2, breaks="+"),
        Column("best_valid_accuracy", "best valid", rank=1, show=_percent, justify="right"),
        Column("test_accuracy", "test acc", rank=1, show=_percent, justify="right"),
        Column("data_fingerprint", "data", rank=4, show=lambda f: f[:12] if f else "-", breaks=""),
        Column("run_id", "mlflow run", rank=5, in_table=False),
        Column("source", rank=6, in_table=False),
    ]
    caption = f"{len(rows)} versions of {name} · kennel serve models:/{name}@ALIAS serves one"
    return Listing(f"{name} versions", columns, rows, caption=caption)


@models_app.command("alias")
def alias_command(
    name: str = NAME,
    alias: str = typer.Argument(..., help="the alias to move (prod, staging, ...)"),
    version: str = typer.Argument(..., help="the version it points at from now on"),
    tracking_uri: str | None = tracking_uri_option(),
) -> None:
    """Point an alias at a version; an endpoint that follows the alias switches to it.

    The move is written in the deployment history (kennel models history NAME)."""
    previous = model_registry.set_alias(name, alias, version, tracking_uri)
    was = f"version {previous}" if previous else "new"
    typer.echo(f"{name}@{alias}: {was} -> version {int(version)}")


@models_app.command("history")
def history_command(name: str = NAME, as_json: bool = AS_JSON, fmt: ListingFormat | None = format_option()) -> None:
    """What was deployed when, oldest first: alias moves, endpoints that started serving a version or switched."""
    lines = model_registry.history(name)
    fmt = listing_format(fmt, as_json)
    notice = "" if lines else f"no deployments of {name} recorded in {model_registry.history_file(name)} yet"
    if notice and fmt == "table":
        typer.echo(notice)
        return
    print_listing(history_listing(name, lines, notice), fmt, lines)


def _local_seconds(stamp: Any) -> str:
    try:
        return f"{datetime.fromisoformat(stamp).astimezone():%Y-%m-%d %H:%M:%S}"
    except (TypeError, ValueError):
        return "-"


def history_listing(name: str, lines: list[dict[str, Any]], notice: str = ""):
    """One row per line of :func:`kennel.model_registry.history`."""
    from kennel.cli.tables import Column, Listing

    columns = [
        Column("time", rank=0, show=_local_seconds, breaks=""),
        Column("event", rank=0),
        Column("version", rank=0, justify="right"),
        Column("alias", rank=1),
        Column("detail", rank=2),
        Column("host", rank=3, breaks=""),
    ]
    caption = f"{len(lines)} events · {model_registry.history_file(name)}"
    return Listing(f"{name} deployments", columns, lines, caption=caption, notice=notice)
