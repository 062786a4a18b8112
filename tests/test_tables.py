"""Listings in a person's terminal and in a pipe: tables fitted to 80 and 120 columns keep every value whole,
leave out their least important columns and say so; piped, the same listings are TSV (floats to 6 significant
digits)."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path

import pytest
from helpers import kennel

from kennel.cli.job_view import jobs_listing
from kennel.cli.output import LISTING_FORMATS, ListingFormat, listing_format
from kennel.cli.tables import Column, Listing, fold, plan_table, print_table, tsv_value
from kennel.jobs import JobRecord, create_job

FUSED = "tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2"
LRS = [0.00031622776601683794, 0.00031947, 0.0123]  # the first two differ only in their third digit


def trial(number: int, lr: float, backbone: str = "tf_efficientnet_lite0") -> JobRecord:
    """A job record as a tuning study's trial leaves it, with the long id such a trial gets."""
    name = f"demo-20261201-140121-t{number:03d}"
    return JobRecord(
        id=f"20261201-1402{number:02d}-{name}-05e4",
        name=name,
        status="completed",
        started="2026-12-01T14:02:35+00:00",
        duration_s=35.0,
        backbone=backbone,
        params={"lr": lr, "batch_size": 256, "epochs": 35, "freeze": "all", "label_smoothing": 0.1 * number},
        metrics={"best_valid_accuracy": 0.8557844758033752, "test_accuracy": 0.84},
        study="demo-20261201-140121",
    )


@pytest.fixture
def trials() -> list[JobRecord]:
    return [trial(0, LRS[0], FUSED), trial(1, LRS[1]), trial(2, LRS[2])]


def drawn(listing: Listing, width: int) -> str:
    out = io.StringIO()
    from rich.console import Console

    print_table(listing, Console(file=out, width=width, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_a_fitted_table_keeps_its_columns_wide_enough_and_every_name_whole(trials: list[JobRecord], width: int):
    listing = jobs_listing(trials)
    plan = plan_table(listing, width)
    assert not plan.stacked and {"id", "status", "best_valid_accuracy"} <= set(plan.widths)
    assert all(w >= len(c.heading.split()[0]) for c in listing.columns if (w := plan.widths.get(c.key)))
    text = drawn(listing, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    for record in trials:
        assert any(record.id in line for line in lines), record.id  # an id is never broken, nor cut
    if "backbone" in plan.widths:  # a fused backbone folds after its +, each part whole
        for part in ("tf_efficientnet_lite0+", "tf_efficientnet_lite1+", "tf_efficientnet_lite2"):
            assert any(part in line for line in lines), part
    left_out = [c.heading for c in plan.left_out]
    assert left_out and f"left out at {width} columns: {', '.join(left_out)}" in " ".join(text.split())


def test_a_wider_terminal_shows_more_columns_and_tells_lrs_apart(trials: list[JobRecord]) -> None:
    listing = jobs_listing(trials)
    narrow, wide = plan_table(listing, 80), plan_table(listing, 120)
    assert set(narrow.widths) < set(wide.widths)
    assert {"backbone", "lr"} <= set(wide.widths)
    text = drawn(listing, 120)
    assert "0.0003162" in text and "0.0003195" in text  # not "0.00…"


def test_the_most_important_columns_stay_and_the_highest_rank_goes_first() -> None:
    columns = [Column("id", rank=0, breaks=""), Column("note", rank=5), Column("score", rank=1)]
    listing = Listing("t", columns, [{"id": "x" * 30, "note": "n" * 20, "score": 0.5}])
    plan = plan_table(listing, 50)
    assert list(plan.widths) == ["id", "score"] and [c.key for c in plan.left_out] == ["note"]
    assert plan.widths["id"] == 30


def test_too_narrow_for_the_names_each_row_is_stacked(trials: list[JobRecord]) -> None:
    listing = jobs_listing(trials)
    assert plan_table(listing, 40).stacked
    lines = drawn(listing, 40).splitlines()
    for record in trials:
        assert record.id in lines  # its own line, whole (the terminal wraps it, rich does not cut it)
    assert sum("best valid" in line for line in lines) == len(trials)
    assert any(FUSED in line for line in lines)


def test_fold_breaks_only_after_its_characters() -> None:
    assert fold(FUSED, 22, "+").splitlines() == [
        "tf_efficientnet_lite0+",
        "tf_efficientnet_lite1+",
        "tf_efficientnet_lite2",
    ]
    assert fold(FUSED, 80, "+") == FUSED
    assert fold("20261201-140235-demo-t005-05e4", 10, "") == "20261201-140235-demo-t005-05e4"
    assert fold("n/a (random init)", 10, " ").splitlines() == ["n/a", "(random", "init)"]


def test_tsv_floats_have_6_significant_digits_and_other_values_are_whole() -> None:
    assert tsv_value(LRS[0]) == "0.000316228"
    assert tsv_value(0.057722901532101384) == "0.0577229" and tsv_value(324.5488278865814) == "324.549"
    assert tsv_value(3725.0) == "3725.0" and tsv_value(1e-7) == "1e-07" and tsv_value(1234567.8) == "1234570.0"
    assert tsv_value(123456789) == "123456789"  # an int is whole
    assert tsv_value(None) == "" and tsv_value(True) == "true"
    assert tsv_value("a\tb\nc") == "a b c"
    assert json.loads(tsv_value({"a": [1, 2]})) == {"a": [1, 2]}


def saved(record: JobRecord) -> JobRecord:
    fields = {k: v for k, v in record.to_dict().items() if k not in ("id", "name", "job_dir")}
    return create_job(record.name, **fields)


def test_piped_jobs_are_tsv_with_every_column(trials: list[JobRecord]) -> None:
    records = [saved(r) for r in trials]
    result = kennel("jobs")  # the test runner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    header, *rows = [line.split("\t") for line in result.output.splitlines()]
    assert header[:4] == ["id", "name", "study", "status"] and "lr" in header and "label_smoothing" not in header
    assert len(rows) == len(records) and all(len(row) == len(header) for row in rows)
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    for record in records:
        row = by_id[record.id]
        assert row["backbone"] == record.backbone and row["name"] == record.name
        assert row["lr"] == f"{record.params['lr']:.6g}"
        assert float(row["best_valid_accuracy"]) == pytest.approx(record.metrics["best_valid_accuracy"], rel=1e-5)
    study = kennel("jobs", "--study", "demo-20261201-140121").output.splitlines()
    assert "label_smoothing" in study[0].split("\t")  # what the trials tried, so that they can be told apart


def test_format_json_and_table_on_request(trials: list[JobRecord]) -> None:
    records = [saved(r) for r in trials]
    as_json = json.loads(kennel("jobs", "--format", "json").output)
    assert as_json == json.loads(kennel("jobs", "--json").output)
    assert {r["id"] for r in as_json} == {r.id for r in records}
    table = kennel("jobs", "--format", "table").output
    assert "┃" in table and "85.6%" in table and "\t" not in table
    clash = kennel("jobs", "--json", "--format", "tsv")
    assert clash.exit_code == 2 and "two formats" in clash.output
    assert kennel("jobs", "--format", "yaml").exit_code == 2


def test_models_piped_can_be_grepped_for_a_whole_name() -> None:
    lines = kennel("models").output.splitlines()
    header = lines[0].split("\t")
    found = [dict(zip(header, line.split("\t"), strict=True)) for line in lines if "lite1" in line]
    assert [row["name"] for row in found] == ["tf_efficientnet_lite1"]
    assert found[0]["family"] == "timm" and found[0]["input_size"] == "240"
    rows = json.loads(kennel("models", "--format", "json").output)
    assert "tf_efficientnet_lite1" in [row["name"] for row in rows]
    assert rows == json.loads(kennel("models", "--json").output)


@pytest.mark.parametrize("width", [80, 120])
def test_models_fit_the_terminal_with_names_whole(width: int) -> None:
    from kennel.cli.models import backbone_rows, backbones_listing

    rows = backbone_rows()
    listing = backbones_listing(rows)
    assert {"name", "imagenet_top1", "offline"} <= set(plan_table(listing, width).widths)
    lines = drawn(listing, width).splitlines()
    assert max(len(line) for line in lines) <= width and "…" not in "".join(lines)
    for row in rows:
        assert any(f"│ {row['name']} " in line for line in lines), row["name"]


def test_data_check_piped_is_tsv_then_the_findings(dataset: Path) -> None:
    result = kennel("data", "check", dataset)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["number", "class", "folder", "train", "valid", "test"]
    assert lines[1].split("\t") == ["1", "Synthetic a", "001.Synthetic_a", "12", "6", "6"]
    assert not any(line.startswith("total") for line in lines)  # the total row is the table's only
    assert any(line.startswith("OK:") for line in lines)
    table = kennel("data", "check", dataset, "--format", "table").output
    assert "total" in table and "┃" in table
    assert json.loads(kennel("data", "check", dataset, "--format", "json").output)["ok"]


def test_best_of_a_study_that_does_not_exist_says_so() -> None:
    result = kennel("jobs", "best", "nope")
    assert result.exit_code == 2
    assert "no study 'nope'" in result.output and "metric" not in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_a_table_on_a_terminal_and_tsv_in_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import get_args

    assert set(get_args(ListingFormat)) == set(LISTING_FORMATS)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert listing_format(None) == "table" and listing_format("tsv") == "tsv" and listing_format(None, True) == "json"
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert listing_format(None) == "tsv"


def test_the_demos_step_headings_fit_80_columns_when_piped(capsys, monkeypatch) -> None:
    from kennel.cli.demo import heading
    from kennel.cli.output import console

    monkeypatch.delenv("COLUMNS", raising=False)
    heading(console(), "7/7 serve")
    (line,) = capsys.readouterr().out.splitlines()
    assert "7/7 serve" in line and len(line) == 80


def test_the_demo_echoes_commands_folded_between_arguments_only() -> None:
    from kennel.cli.demo import shell_line

    path = "/work/shared/data/a folder with spaces/" + "x" * 70
    args = ["kennel", "serve", path, "--port", 5123, "--data", "/tmp/d"]
    text = shell_line(args, 60)
    lines = text.splitlines()
    assert len(lines) > 1 and all(line.endswith(" \\") for line in lines[:-1])
    assert any(shlex.quote(path) in line for line in lines)  # the long argument whole, on one line
    assert lines[-1].strip() == "--port 5123 --data /tmp/d"  # an option stays with its value
    assert shlex.split(text.removeprefix("$ ").replace(" \\\n", " ")) == [str(a) for a in args]
    assert shell_line(["kennel", "jobs"], 60) == "$ kennel jobs"


@pytest.mark.parametrize("width", [60, 80])
def test_a_prediction_keeps_breed_names_whole_and_its_bar_fits(width: int) -> None:
    from rich.console import Console

    from kennel.cli.output import print_prediction

    photo = "/data/test/033.Bouvier_des_flandres/" + "a_long_photo_name_" * 4 + ".jpg"
    names = ["American staffordshire terrier", "Bouvier des flandres", "Pug"]
    answer = [{"label": name, "probability": p} for name, p in zip(names, [0.7, 0.2, 0.1], strict=True)]
    out = io.StringIO()
    print_prediction(Console(file=out, width=width, color_system=None), Path(photo), answer)
    lines = out.getvalue().splitlines()
    assert lines[0] == photo  # the photo's path on its own line, whole, however long
    assert all(len(line) <= width for line in lines[1:]) and "…" not in out.getvalue()
    for name in names:
        assert any(f"│ {name} " in line for line in lines), name
    # 80 columns leave room for a bar beside a 30-letter breed; 60 leave 5 cells, too few to say anything
    assert any("█" in line for line in lines) == (width == 80)
