"""What kennel's pages say is true and useful: the report a job writes as it ends has its end and duration, a
job a debugger rule stopped early has its whole loss curve drawn and says which tensors it saved, timestamps
read as local minutes, and a study's page caveats what its trials cannot yet support."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from helpers import kennel, section_statuses, space_file, tiny_config, use_home

from kennel.job import train
from kennel.report.section import duration, when

# LossNotDecreasing made to fire at its first look (20 TRAIN losses: step 19), as lr 10 makes it on real photos.
STOP_AT_STEP_19 = {"LossNotDecreasing": {"diff_percent": 100, "confidence": 0, "stop": True}}


def page_text(html: str) -> str:
    """What a reader sees: the page without its tags (attributes, tooltips included, are gone)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def sections_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([\w-]+)".*?>(.*?)</section>', html, flags=re.S))


@pytest.fixture
def eastern(monkeypatch: pytest.MonkeyPatch):
    """Local time five hours behind UTC, so that a page shows a time converted, not the stored UTC one."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_timestamp_reads_as_local_minutes_with_the_full_value_as_its_tooltip(eastern) -> None:
    stamp = "2026-12-01T20:19:07.123+00:00"
    assert str(when(stamp)) == f'<time datetime="{stamp}" title="{stamp}">2026-12-01 15:19</time>'
    assert when(None) is None and when("not a time") == "not a time"


def test_the_report_written_as_a_job_ends_has_its_end_and_duration(dataset: Path, eastern) -> None:
    record = train(tiny_config(dataset, epochs=1), stream=None)
    html = (record.path / "report.html").read_text()  # as the job wrote it, no `kennel report` since
    summary = sections_of(html)["summary"]
    assert f"<th>ended</th><td>{when(record.ended)}</td>" in summary
    assert f"<th>duration</th><td>{duration(record.duration_s)}</td>" in summary and "–" not in duration(1.0)
    for stamp in (record.created, record.started, record.ended):
        assert stamp not in page_text(html)  # raw ISO only in the tooltips
    assert re.search(r"<th>started</th><td><time [^>]*>\d{4}-\d\d-\d\d \d\d:\d\d</time>", summary)


def test_a_job_a_rule_stopped_early_has_its_whole_loss_curve_and_says_which_tensors_it_saved(dataset: Path) -> None:
    from kennel.debugger import load_records

    config = tiny_config(dataset, epochs=5, **{"data.batch_size": 4, "debug.rules": STOP_AT_STEP_19})
    record = train(config, stream=None)
    assert record.status == "stopped" and record.stop_reason.startswith("debugger rule LossNotDecreasing")
    records = load_records(record.path)
    steps, losses = records.loss_curve("TRAIN")
    assert steps.tolist() == list(range(20)) and len(set(losses.tolist())) > 1  # every step, not only step 0
    assert records.steps("TRAIN") == [0]  # the light preset saved its tensors at step 0 alone
    job_page = sections_of((record.path / "report.html").read_text())["debugger"]
    assert f"<code>kennel debug {record.id}</code> writes the debugger report" in job_page  # not written yet
    assert kennel("debug", record.id).exit_code == 0
    html = (record.path / "debug" / "report.html").read_text()
    sections = sections_of(html)
    assert "TRAIN: the loss of every step, 0 to 19 (20 steps)." in sections["loss"]
    assert "EVAL: the mean loss of each validation pass (2)." in sections["loss"]  # two epochs of 9 steps ran
    assert "Dashed lines: the steps where a rule found an issue." in sections["loss"]
    saved = "Tensors were saved at 1 of the 20 training steps (step 0): the job saved them every 50 steps"
    assert saved in sections["gradients"] and "debug.modes.TRAIN.save_interval=5" in sections["gradients"]
    assert section_statuses(html)["activations"] == "missing"
    assert "activations are not captured: the light preset leaves them out" in sections["activations"]

    # A job from before the losses were kept: its saved steps only, and the page says so.
    for segment in (record.path / "debug").glob("losses-*.arrow"):
        segment.unlink()
    assert kennel("debug", record.id).exit_code == 0
    html = (record.path / "debug" / "report.html").read_text()
    assert "This job kept the loss of its saved steps only (1 TRAIN, 1 EVAL)" in sections_of(html)["loss"]


def test_the_profile_page_shows_local_minutes_and_a_step_only_where_a_rule_found_an_issue(
    tmp_path: Path, eastern
) -> None:
    from kennel.profiler.profile import FINDINGS, FOLDER, Profile
    from kennel.profiler.report import write_profile_report
    from kennel.profiler.rules import BUILTIN_RULES, PROFILER_RULES
    from kennel.rules import RuleRunner

    profiler = tmp_path / FOLDER
    profiler.mkdir()
    (profiler / "context.json").write_text(json.dumps({"device": "cpu", "cores": 2, "batch_size": 8}))
    start = 1_764_620_340.0  # 2025-12-01 20:19:00 UTC
    events = [("job_start", 0.0), ("fit_start", 1.0), ("fit_end", 41.0), ("job_end", 42.0)]
    (profiler / "timeline.jsonl").write_text(
        "".join(json.dumps({"event": e, "t": start + t}) + "\n" for e, t in events)
    )
    steps = []
    for i in range(40):  # even 10 ms steps, and step 30 stalled for 5 s: 12% of the job
        forward = 5.0 if i == 30 else 0.008 + 0.0001 * (i % 3)
        phases = {"data": 0.001, "transfer": 0.0, "forward": forward, "backward": 0.001, "optimizer": 0.0}
        steps.append({"step": i + 1, "epoch": 1, "t": start + 1.0 + i, "wall": sum(phases.values()), **phases})
    (profiler / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (profiler / "system.jsonl").write_text(json.dumps({"t": start + 5, "cpu": [50.0, 40.0], "mem": 20.0}) + "\n")
    runner = RuleRunner([PROFILER_RULES.build(name) for name in BUILTIN_RULES], profiler / FINDINGS)
    runner.run(Profile.load(tmp_path), final=True)
    assert runner.latest["StepOutlier"].fired

    html = write_profile_report(tmp_path).read_text()
    sections = sections_of(html)
    assert re.search(r"<th>started</th><td><time [^>]*>2025-12-01 15:19</time>", sections["profile-summary"])
    assert re.search(r"<th>ended</th><td><time [^>]*>2025-12-01 15:19</time>", sections["profile-summary"])
    rows = re.findall(r'<tr class="rule-([\w-]+)">.*?<td class="n">([^<]*)</td>', sections["rules"], flags=re.S)
    steps_shown = {status: {step for s, step in rows if s == status} for status, _ in rows}
    assert steps_shown["issues-found"] == {"31"}  # the stalled step
    assert steps_shown["no-issues"] == {"–"} and steps_shown["not-applicable"] == {"–"}
    assert "12% of the job" in sections["rules"]


@pytest.fixture(scope="module")
def study(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Three tiny trials, as a first short study has: its name and its kennel home."""
    from kennel.tune import TuneRequest, tune

    space = space_file(
        tmp_path_factory.mktemp("space") / "space.yaml",
        {
            "parameters": {
                "optim.lr": {"type": "float", "low": 0.001, "high": 0.5, "log": True},
                "optim.weight_decay": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
            }
        },
    )
    base = {"data": {"root": str(dataset)}, "model": {"backbone": "tiny", "pretrained": False}, "tracking": False}
    home = tmp_path_factory.mktemp("study-home")
    with pytest.MonkeyPatch.context() as env:
        use_home(env, home)
        settings, session = {"pruner": "none"}, {"trials": 3}
        request = TuneRequest(
            study="first", space=space, base={**base, "epochs": 2}, settings=settings, session=session
        )
        tune(request, stream=None)
    return "first", home


def test_a_study_page_holds_importances_back_until_they_can_mean_something(study, eastern, monkeypatch) -> None:
    import kennel.tune.report as report
    from kennel.tune import load_study_record

    study, home = study
    use_home(monkeypatch, home)
    ticks = {}
    real_png = report.figure_png

    def recording_png(figure):  # the x ticks of each of Optuna's plots, as drawn
        ticks[figure.axes[0].get_xlabel()] = [float(t) for t in figure.axes[0].get_xticks()]
        return real_png(figure)

    monkeypatch.setattr(report, "figure_png", recording_png)
    record = load_study_record(study)
    html = report.write_study_report(study).read_text()
    sections = sections_of(html)
    assert section_statuses(html)["importances"] == "missing"
    assert "need at least 10 completed trials to mean anything; this study has 3" in page_text(sections["importances"])
    assert ticks["Trial"] and all(t == int(t) for t in ticks["Trial"])  # trials are counted in whole numbers
    assert ticks["Step"] and all(t == int(t) for t in ticks["Step"])  # so are epochs
    assert f"<th>started</th><td>{when(record.started)}</td>" in sections["study"]
    assert '<div class="scroll">' in sections["trials"] and 'class="scroll-cue" hidden' in sections["trials"]
