"""The row tables of ``kennel debug``, ``kennel profile`` and ``kennel doctor`` on the listing engine: at 80
columns every name and word stays whole, and piped they are TSV, floats to 6 digits (the profile's four tables a
TSV section each), with ``--format`` as the other listing commands take it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import TINY, kennel, use_home

from kennel.cli.tables import Listing, plan_table, print_table, tsv_value
from kennel.jobs import JobRecord

DEBUG_COLUMNS = ["rule", "status", "first step", "mode", "finding", "advice"]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> JobRecord:
    """A tiny job in its own home (the commands find it by its folder) where a debugger rule and a profiler rule
    find issues, so that their findings and advice fill the tables' widest column."""
    from kennel.config import load_config
    from kennel.data.sample import write_sample_dataset
    from kennel.job import train

    home = tmp_path_factory.mktemp("listed-home")
    data = write_sample_dataset(tmp_path_factory.mktemp("data") / "sample", num_classes=3, per_split=(12, 6, 6))
    overrides = {
        **TINY,
        "data.root": str(data),
        "data.workers": 0,
        "epochs": 2,
        "optim.lr": 0.3,
        "optim.warmup_epochs": 0,
        "debug.imports": ["stopping_rule"],  # tests/stopping_rule.py
        "debug.rules.StopsHighLearningRates": {"lr_above": 0.1, "stop": False},
        "profiler.rules.MaxInitializationTime.threshold_minutes": 1e-4,
    }
    with pytest.MonkeyPatch.context() as env:
        use_home(env, home)
        record = train(load_config(overrides=overrides), stream=None)
    assert record.status == "completed", record.error
    return record


def drawn(listing: Listing, width: int) -> list[str]:
    from rich.console import Console

    out = io.StringIO()
    print_table(listing, Console(file=out, width=width, color_system=None))
    return out.getvalue().splitlines()


def assert_fits_whole(listing: Listing, width: int, names: list[str]) -> None:
    """Drawn at ``width``: a table, no line wider, nothing cut with an ellipsis, each name whole in its cell."""
    assert not plan_table(listing, width).stacked
    lines = drawn(listing, width)
    assert max(len(line) for line in lines) <= width and "…" not in "".join(lines)
    for name in names:
        assert any(f"│ {name} " in line for line in lines), name


def tsv_rows(lines: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """A TSV block's header and its rows by column; every row must have a value for each column."""
    header, *rows = [line.split("\t") for line in lines]
    assert all(len(row) == len(header) for row in rows), lines
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def test_debug_piped_is_tsv_with_every_finding_whole(job: JobRecord) -> None:
    result = kennel("debug", job.path)
    assert result.exit_code == 0, result.output
    header, rows = tsv_rows(result.stdout.splitlines())
    assert header == DEBUG_COLUMNS
    summary = json.loads(kennel("debug", job.path, "--format", "json", "--no-html").stdout)
    assert [row["rule"] for row in rows] == [row["rule"] for row in summary]
    fired = next(row for row in rows if row["rule"] == "StopsHighLearningRates")
    assert fired == {
        "rule": "StopsHighLearningRates",
        "status": "issues found",
        "first step": "0",
        "mode": "TRAIN",
        "finding": "The learning rate 0.3 is above 0.1.",
        "advice": "lower optim.lr",
    }
    why = {row["rule"]: row["why"] for row in summary}
    assert all(row["finding"] == why[row["rule"]] for row in rows if row["status"] in ("no data", "not applicable"))
    # The report's path goes to stderr, as with --json, so that stdout stays TSV.
    assert result.stderr.strip() == str(job.path / "debug" / "report.html")


def test_debug_fits_80_columns_with_every_rule_whole(job: JobRecord) -> None:
    from kennel.cli.debug import rules_listing
    from kennel.debugger.report import rules_summary

    rows, whys = rules_summary(job.path / "debug")
    listing = rules_listing(job.id, rows, whys)
    assert_fits_whole(listing, 80, [row.rule for row in rows])
    assert set(plan_table(listing, 80).widths) == {"rule", "status", "first step", "mode", "finding"}
    table = kennel("debug", job.path, "--format", "table", "--no-html")
    assert table.stdout.splitlines()[-1] == "StopsHighLearningRates: lower optim.lr"  # the advice, under the table


def _sections(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """Piped ``kennel profile``: the setup lines and each titled TSV section by title."""
    before, *blocks = stdout.rstrip("\n").split("\n\n")
    sections = {block[0]: block[1:] for block in [block.splitlines() for block in blocks]}
    return before.splitlines(), sections


def test_profile_piped_is_a_tsv_section_per_table_with_readable_values(job: JobRecord) -> None:
    from kennel.profiler.report import ProfileData

    result = kennel("profile", job.path)
    assert result.exit_code == 0, result.output
    setup, sections = _sections(result.stdout)
    assert setup[0].startswith(f"{job.id} completed on cpu") and setup[1].startswith("started ")
    assert list(sections) == ["Job summary", "System usage", "Framework breakdown", "Rules"]
    assert result.stderr.strip().splitlines()[-1] == str(job.path / "profile.html")  # beside, not in, the TSV

    summary = ProfileData.load(job.path).summary
    header, phases = tsv_rows(sections["Job summary"])
    assert header == ["phase", "seconds", "share"]
    assert [(row["phase"], row["seconds"]) for row in phases] == [(n, tsv_value(s)) for n, s, _ in summary.phases]
    header, usage = tsv_rows(sections["System usage"])
    assert header == ["metric", "unit", "max", "p99", "p95", "p50", "min"]
    assert [row["metric"] for row in usage] == [label for label, _, _ in summary.usage]  # whole, not wrapped
    header, _ = tsv_rows(sections["Framework breakdown"])
    assert header == ["phase", "seconds", "share", "p50_ms", "p95_ms"]

    header, rules = tsv_rows(sections["Rules"])
    assert header == ["rule", "status", "step", "evidence"]
    as_json = kennel("profile", job.path, "--format", "json").stdout.splitlines()  # JSON lines only
    findings = {finding["rule"]: finding for finding in map(json.loads, as_json)}
    assert [row["rule"] for row in rules] == [row.name for row in summary.rules]
    slow = next(row for row in rules if row["rule"] == "MaxInitializationTime")
    finding = findings["MaxInitializationTime"]
    assert slow["status"] == "issues found"
    assert slow["evidence"] == f"{finding['message']} {finding['advice']}"  # whole, on one line


def test_profile_fits_80_columns_with_every_name_whole(job: JobRecord) -> None:
    from kennel.cli.profile import summary_listings
    from kennel.profiler.report import ProfileData

    summary = ProfileData.load(job.path).summary
    phases, usage, loop, rules = summary_listings(summary)
    assert_fits_whole(phases, 80, [name for name, _, _ in summary.phases])
    assert_fits_whole(loop, 80, [name for name, *_ in summary.breakdown])
    assert_fits_whole(rules, 80, [row.name for row in summary.rules])
    assert_fits_whole(usage, 80, [])  # a metric's label may wrap at its spaces; its words stay whole
    table = kennel("profile", job.path, "--format", "table").stdout
    assert all(title in table for title in ("Job summary", "System usage", "Framework breakdown", "Rules"))


def test_doctor_piped_is_tsv_with_the_facts_on_stderr() -> None:
    from kennel.cli.doctor import backends_listing

    report = json.loads(kennel("doctor", "--model", "tiny", "--json").stdout)
    result = kennel("doctor", "--model", "tiny")
    assert result.exit_code == 0, result.output
    header, rows = tsv_rows(result.stdout.splitlines())
    assert header == ["backend", "auto", "runtime", "precision", "photos_per_s", "provisional", "reason", "summary"]
    assert [row["backend"] for row in rows] == [row["backend"] for row in report["backends"]]
    for row, expected in zip(rows, report["backends"], strict=True):
        assert row["reason"] == (expected["reason"] or "")  # whole, however long
        assert row["photos_per_s"] == tsv_value(expected["photos_per_s"])  # 6 significant digits
        assert row["auto"] == ("true" if expected["auto"] else "false")
    assert [line.split()[0] for line in result.stderr.splitlines()] == [
        "CPU", "libraries", "devices", "backbone", "int8", "figures"
    ]  # fmt: skip
    assert json.loads(kennel("doctor", "--model", "tiny", "--format", "json").stdout)["backends"] == report["backends"]

    listing = backends_listing(report)
    assert_fits_whole(listing, 80, [row["backend"] for row in report["backends"]])
    assert {"backend", "auto", "precision", "photos_per_s", "reason"} <= set(plan_table(listing, 80).widths)


@pytest.mark.parametrize("command", [["debug", "--no-html"], ["profile"], ["doctor", "--model", "tiny"]])
def test_json_and_another_format_are_refused(job: JobRecord, command: list[str]) -> None:
    target = [] if command[0] == "doctor" else [str(job.path)]
    result = kennel(command[0], *target, *command[1:], "--json", "--format", "tsv")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --json and --format tsv ask for two formats; give one of them"


def test_the_tables_drawn_at_80_columns_keep_within_them(job: JobRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--format table`` as a terminal 80 columns wide shows it: no line wider, nothing cut with an ellipsis."""
    import sys

    from rich.console import Console

    from kennel.cli import output, profile

    def terminal(stderr: bool = False) -> Console:
        return Console(file=sys.stderr if stderr else sys.stdout, width=80, color_system=None, soft_wrap=False)

    monkeypatch.setattr(output, "console", terminal)
    monkeypatch.setattr(profile, "console", terminal)
    for args in (["debug", job.path, "--no-html"], ["profile", job.path], ["doctor", "--model", "tiny"]):
        shown = kennel(*args, "--format", "table")
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()
        if args[0] == "profile":
            lines = lines[:-1]  # the page's path, whole however long
        assert "┏" in shown.stdout and "…" not in shown.stdout, args
        assert max(len(line) for line in lines) <= 80, args


def test_debug_of_a_job_without_a_debugger_folder_still_says_why(tmp_path: Path) -> None:
    JobRecord(id="20250101-000000-old-0000", name="old", job_dir=str(tmp_path)).save()
    result = kennel("debug", tmp_path, "--format", "tsv")
    assert result.exit_code == 1 and "--debug off" in result.stderr
