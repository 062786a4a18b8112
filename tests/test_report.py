"""The HTML report: every section on a complete fake job, notes instead of crashes on incomplete ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import kennel, section_statuses
from PIL import Image

from kennel.evaluation import summarize
from kennel.jobs import JobRecord
from kennel.pages import render_report, write_report
from kennel.report import SECTIONS, MissingInput, Section, add_section

SECTION_IDS = [
    "summary", "curves", "debugger", "test-metrics", "per-class", "confusion", "confused-pairs", "mistakes", "profiler",
]  # fmt: skip


def make_job(folder: Path, status: str = "completed", **fields) -> JobRecord:
    folder.mkdir(parents=True, exist_ok=True)
    record = JobRecord(
        id="20250101-120000-demo-ab12",
        name="demo",
        status=status,
        backbone="tiny",
        duration_s=3725.0,
        params={"lr": 0.003, "batch_size": 32, "epochs": 3, "freeze": "all"},
        metrics={"best_valid_accuracy": 0.8, "test_accuracy": 0.75, "test_top5": 0.95},
        job_dir=str(folder),
        **fields,
    )
    record.save()
    return record


def write_metrics(folder: Path, epochs: int = 3, extra: str = "") -> None:
    lines = []
    for epoch in range(epochs):
        for step in range(4):
            lines.append({"kind": "step", "global_step": epoch * 4 + step, "train_loss": 2.0 - 0.1 * step, "lr": 0.01})
        lines.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "train_loss": 1.5 - 0.3 * epoch,
                "train_accuracy": 0.5 + 0.1 * epoch,
                "valid_loss": 1.6 - 0.3 * epoch,
                "valid_accuracy": 0.45 + 0.1 * epoch,
                "valid_top5": 0.8 + 0.05 * epoch,
                "lr": 0.01 / (epoch + 1),
                "images_per_s": 120.5,
            }
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + extra)


def write_evaluation(folder: Path, num_classes: int = 5, photos: int = 40, class_names=None) -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(photos) % num_classes
    logits = torch.randn(photos, num_classes, generator=generator) + 2.0 * torch.nn.functional.one_hot(
        targets, num_classes
    )
    files = []
    for i in range(photos):
        path = folder / "photos" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (90, 70), (i * 6 % 256, 120, 200 - i)).save(path)
        files.append(str(path))
    names = class_names or [f"Breed {i}" for i in range(num_classes)]
    summarize(logits, targets, names, files=files).save(folder / "evaluation")


def write_profile(folder: Path) -> None:
    """The profiler's records of a short job: its phases, two steps, one system sample."""
    profiler = folder / "profiler"
    profiler.mkdir(parents=True, exist_ok=True)
    (profiler / "context.json").write_text('{"device": "cpu", "cores": 2}')
    events = [("job_start", 0.0), ("fit_start", 2.0), ("fit_end", 5.0), ("job_end", 6.0)]
    (profiler / "timeline.jsonl").write_text("".join(json.dumps({"event": e, "t": 1e9 + t}) + "\n" for e, t in events))
    phases = {"data": 0.1, "transfer": 0.0, "forward": 0.4, "backward": 0.5, "optimizer": 0.1}
    steps = [{"step": i, "epoch": 1, "t": 1e9 + 2 + i, "wall": 1.2, **phases} for i in (1, 2)]
    (profiler / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (profiler / "system.jsonl").write_text(json.dumps({"t": 1e9 + 3, "cpu": [50.0, 40.0], "mem": 20.0}) + "\n")


@pytest.fixture
def full_job(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    make_job(folder)
    write_metrics(folder)
    write_evaluation(folder)
    write_profile(folder)
    write_debug(folder)
    return folder


def write_debug(folder: Path) -> None:
    """The debugger's rule statuses and one finding, as a job writes them."""
    from kennel.findings import ISSUES_FOUND, Finding, save_findings

    debug = folder / "debug"
    debug.mkdir(parents=True, exist_ok=True)
    rules = {
        "Overfit": {"status": "issues found", "why": ""},
        "DeadRelu": {"status": "not applicable", "why": "no ReLU"},
    }
    (debug / "rules.json").write_text(json.dumps(rules))
    finding = Finding("Overfit", ISSUES_FOUND, step=40, mode="EVAL", advice="set early_stopping", message="valid up")
    save_findings(debug / "findings.jsonl", [finding])


def test_a_complete_job_renders_every_section(full_job: Path) -> None:
    mistakes = json.loads((full_job / "evaluation" / "mistakes.json").read_text())
    Path(mistakes[0]["file"]).unlink()  # a photo moved away since: the gallery shows a placeholder
    path = write_report(full_job)
    assert path == full_job / "report.html"
    html = path.read_text()
    assert section_statuses(html) == dict.fromkeys(SECTION_IDS, "ok")
    assert "20250101-120000-demo-ab12" in html and "1h 02m 05s" in html and "0.003" in html
    assert "Breed 0" in html and "top-5 accuracy" in html
    assert html.count("data:image/png;base64,") >= 3  # curves, confusion, and mistake thumbnails
    assert html.count("no photo") == 1
    assert 'href="profile.html"' in html and "No profiler rule fired." in html
    assert "valid up" in html and "set early_stopping" in html and "no ReLU" in html  # the debugger's rules


def test_the_page_is_self_contained(full_job: Path) -> None:
    html = render_report(full_job)
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attribute.startswith(("data:", "#")) or attribute == "profile.html", attribute  # a page beside it
    assert "<link" not in html and "@import" not in html


def test_a_job_that_failed_before_evaluation_gets_notes(tmp_path: Path) -> None:
    folder = tmp_path / "failed"
    make_job(folder, status="failed", error="CUDA out of memory")
    write_metrics(folder, epochs=1)
    html = write_report(folder).read_text()
    statuses = section_statuses(html)
    assert list(statuses) == SECTION_IDS
    assert statuses["summary"] == statuses["curves"] == "ok"
    assert statuses["test-metrics"] == "ok"  # falls back to the test metrics in job.json
    for missing in ("debugger", "per-class", "confusion", "confused-pairs", "mistakes", "profiler"):
        assert statuses[missing] == "missing"
    assert "did not reach its test phase" in html and "CUDA out of memory" in html


def test_an_empty_folder_still_renders(tmp_path: Path) -> None:
    statuses = section_statuses(write_report(tmp_path).read_text())
    assert list(statuses) == SECTION_IDS and set(statuses.values()) == {"missing"}


def test_half_written_inputs_degrade(full_job: Path) -> None:
    with open(full_job / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "epoch", "epo')  # a job killed mid-line
    (full_job / "evaluation" / "metrics.json").write_text("{not json")
    html = render_report(full_job)
    statuses = section_statuses(html)
    assert statuses["curves"] == "ok" and statuses["per-class"] == "missing"
    assert "evaluation could not be read" in html and "1 unreadable line(s) skipped" in html


def test_133_classes_show_the_most_confused(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    make_job(folder)
    write_evaluation(folder, num_classes=133, photos=400)
    html = render_report(folder)
    assert section_statuses(html)["confusion"] == "ok"
    assert "classes (of 133) most involved in mistakes" in html


def test_names_are_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "esc"
    make_job(folder)
    write_evaluation(folder, num_classes=2, photos=6, class_names=["<script>alert(1)</script>", "ok"])
    html = render_report(folder)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_sections_can_be_added_and_a_broken_one_is_contained(full_job: Path, monkeypatch) -> None:
    monkeypatch.setattr("kennel.report.sections.SECTIONS", list(SECTIONS))
    import kennel.report.sections as sections

    monkeypatch.setattr("kennel.report.SECTIONS", sections.SECTIONS)

    def later(data) -> str:
        raise MissingInput("no later output")

    def broken(data) -> str:
        raise ZeroDivisionError("oops")

    add_section(Section("later", "A later feature", later), before="mistakes")
    add_section(Section("broken", "Broken", broken))
    with pytest.raises(ValueError, match="already exists"):
        add_section(Section("summary", "again", later))
    statuses = section_statuses(render_report(full_job))
    assert list(statuses) == [*SECTION_IDS[:-2], "later", "mistakes", "profiler", "broken"]
    assert statuses["later"] == "missing" and statuses["broken"] == "error"


def run_cli(*args: str):
    return kennel("report", *args)


def test_cli_writes_the_report_of_a_job(kennel_home: Path) -> None:
    folder = kennel_home / "jobs" / "20250101-120000-demo-ab12"
    make_job(folder)
    write_metrics(folder)
    by_prefix = run_cli("20250101-1200")
    assert by_prefix.exit_code == 0, by_prefix.output
    assert by_prefix.stdout.strip() == str(folder / "report.html")
    assert run_cli("latest").exit_code == 0 and run_cli(str(folder)).exit_code == 0
    unknown = run_cli("no-such-job")
    assert unknown.exit_code == 2 and "no job 'no-such-job'" in unknown.output
    assert isinstance(unknown.exception, SystemExit)
