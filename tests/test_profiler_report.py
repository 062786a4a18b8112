"""The profiler report of a real tiny training job: profile.html with every section and its plots (also as a
person sees it, in headless Chromium), the job report's link to it, MLflow, and the ``kennel profile`` command."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import kennel, section_statuses, use_home

from kennel.browser import CHROMIUM_ARGS, find_chromium
from kennel.config import load_config
from kennel.data.sample import write_sample_dataset
from kennel.findings import ISSUES_FOUND, Finding
from kennel.job import train
from kennel.jobs import JobRecord
from kennel.profiler import Profile
from kennel.profiler.report import SECTIONS
from kennel.profiler.rules import BUILTIN_RULES
from kennel.profiler.summary import configured_rule

PROFILE_SECTIONS = ["profile-summary", "system", "framework", "rules", "steps", "rule-plots"]
CHROMIUM = find_chromium()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> JobRecord:
    """A tiny backbone fine-tuned on generated photos, tracked in MLflow, with a torch.profiler window and an
    initialization limit so low that MaxInitializationTime fires."""
    home = tmp_path_factory.mktemp("profiled-home")
    data = write_sample_dataset(tmp_path_factory.mktemp("data") / "sample", num_classes=3, per_split=(16, 6, 6))
    overrides = {
        "data.root": str(data),
        "model.backbone": "tiny",
        "model.pretrained": False,
        "model.freeze": 0,
        "data.batch_size": 4,
        "data.workers": 0,
        "epochs": 2,
        "export_onnx": False,
        "profiler.interval_s": 0.1,
        "profiler.trace": {"enabled": True, "wait": 1, "warmup": 1, "active": 2},
        "profiler.rules.MaxInitializationTime.threshold_minutes": 1e-4,
        # Decoding photos in the main process may or may not dominate the tiny model's steps, depending on what
        # else the machine runs; the one rule that fires here is the planted one.
        "profiler.rules.Dataloader.data_share": 1.1,
        "profiler.rules.DataBottleneck.threshold": 1.1,
        # A step of a few milliseconds that another process delays shows as an outlier on a busy machine.
        "profiler.rules.StepOutlier.min_slowdown": 1000.0,
    }
    with pytest.MonkeyPatch.context() as env:
        use_home(env, home)
        record = train(load_config(overrides=overrides), stream=None)
    assert record.status == "completed", record.error
    return record


def test_the_profile_report_renders_every_section_with_its_plots(job: JobRecord) -> None:
    assert [s.id for s in SECTIONS] == PROFILE_SECTIONS
    html = (job.path / "profile.html").read_text()  # written when the job ended
    assert section_statuses(html) == dict.fromkeys(PROFILE_SECTIONS, "ok")
    sections = dict(re.findall(r'<section id="([\w-]+)".*?>(.*?)</section>', html, flags=re.S))
    for name in ("system", "framework", "steps", "rule-plots"):
        assert sections[name].count("data:image/png;base64,") >= 1, name
    for phase in ("initialization", "training", "finalization"):
        assert f"<td>{phase}</td>" in sections["profile-summary"]
    for metric in ("CPU, mean of the cores", "memory, job processes (resident)", "disk read, machine"):
        assert metric in sections["system"]
    assert all(stat in sections["system"] for stat in ("<th>p99</th>", "<th>p50</th>", "<th>min</th>"))
    for phase in ("data", "forward", "backward", "optimizer", "other"):
        assert f"<td>{phase}</td>" in sections["framework"]
    assert 'id="operators"' in sections["framework"] and "aten::" in sections["framework"]
    assert all(name in sections["rules"] for name in BUILTIN_RULES)
    assert sections["rules"].count("not applicable") >= 5  # the GPU rules, on this CPU job
    assert 'id="rule-plot-MaxInitializationTime"' in sections["rule-plots"]
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attribute.startswith(("data:", "#")), attribute


def test_the_chrome_trace_is_valid_json_with_events(job: JobRecord) -> None:
    trace = json.loads((job.path / "profiler" / "trace.json").read_text())
    events = trace["traceEvents"]
    assert len(events) > 50 and all("ph" in event for event in events)
    assert sum(str(e.get("name", "")).startswith("ProfilerStep#") for e in events) == 2


def test_the_findings_are_saved_in_the_shared_shape(job: JobRecord) -> None:
    lines = (job.path / "profiler" / "findings.jsonl").read_text().splitlines()
    findings = [Finding.from_dict(json.loads(line)) for line in lines]
    assert {f.rule for f in findings} == set(BUILTIN_RULES)
    fired = [f for f in findings if f.status == ISSUES_FOUND]
    assert [f.rule for f in fired] == ["MaxInitializationTime"]
    assert fired[0].mode == "TRAIN" and fired[0].tensors == () and fired[0].numbers["initialization_s"] > 0
    assert "feature" in fired[0].advice
    # The report draws each rule with the thresholds the job set, not the defaults.
    assert configured_rule(Profile.load(job.path), "MaxInitializationTime").threshold_minutes == 1e-4


def test_the_job_report_shows_the_profiler_and_links_its_page(job: JobRecord) -> None:
    html = (job.path / "report.html").read_text()
    assert section_statuses(html)["profiler"] == "ok"
    profiler = html[html.index('<section id="profiler"') :]
    assert 'href="profile.html"' in profiler and "MaxInitializationTime" in profiler


def test_mlflow_records_the_profile_with_the_job(job: JobRecord) -> None:
    from kennel.mlflow_store import get_client

    client = get_client(f"sqlite:///{job.path.parents[1] / 'mlflow.db'}")  # the job's $KENNEL_HOME/mlflow.db
    artifacts = {a.path for a in client.list_artifacts(job.mlflow_run_id)}
    assert {"profile.html", "profiler", "report.html"} <= artifacts
    files = {a.path for a in client.list_artifacts(job.mlflow_run_id, "profiler")}
    assert {"profiler/steps.jsonl", "profiler/system.jsonl", "profiler/findings.jsonl", "profiler/trace.json"} <= files


def test_kennel_profile_prints_the_summary_and_writes_the_page(job: JobRecord) -> None:
    (job.path / "profile.html").unlink()
    result = kennel("profile", str(job.path))
    assert result.exit_code == 0, result.output
    for title in ("Job summary", "System usage", "Framework breakdown", "Rules"):
        assert title in result.stdout
    assert "initialization" in result.stdout and "MaxInitializationTime" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == str(job.path / "profile.html")  # piped: beside the TSV
    assert (job.path / "profile.html").is_file()
    # Times as a person reads them: local, to the minute, never the raw ISO stamp.
    [times] = [line for line in result.stdout.splitlines() if line.startswith("started ")]
    assert re.fullmatch(r"started \d{4}-\d\d-\d\d \d\d:\d\d, ended \d{4}-\d\d-\d\d \d\d:\d\d, total .+", times), times

    as_json = kennel("profile", str(job.path), "--json")
    findings = [Finding.from_dict(json.loads(line)) for line in as_json.stdout.strip().splitlines()]
    assert {f.rule for f in findings} == set(BUILTIN_RULES)


def test_kennel_report_writes_both_pages(job: JobRecord) -> None:
    result = kennel("report", str(job.path))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(job.path / "report.html"), str(job.path / "profile.html")]


def test_kennel_profile_of_a_job_without_records_says_why(tmp_path: Path) -> None:
    JobRecord(id="20250101-000000-old-0000", name="old", job_dir=str(tmp_path)).save()
    result = kennel("profile", str(tmp_path))
    assert result.exit_code == 1 and "has no profiler records" in result.output
    assert kennel("profile", "no-such-job").exit_code == 2
    assert kennel("profile", "--help").exit_code == 0


def test_kennel_train_profile_asks_for_a_torch_profiler_window() -> None:
    result = kennel("train", "--profile", "--print-config")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["profiler"]["trace"]["enabled"] is True


@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is absent")
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's where it can)")
def test_a_person_sees_every_section_and_plot_in_chromium(job: JobRecord) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        page.goto((job.path / "report.html").resolve().as_uri())
        page.click('#profiler a[href="profile.html"]')  # the job report links the profiler report
        page.wait_for_load_state()
        assert page.title().startswith("kennel profiler report: ")
        assert page.locator("nav a").all_inner_texts() == [s.title for s in SECTIONS]
        for section in SECTIONS:
            heading = page.locator(f"section#{section.id} > h2")
            heading.scroll_into_view_if_needed()
            assert heading.is_visible() and heading.inner_text() == section.title
            assert page.locator(f"section#{section.id} .note").count() == 0, section.id
        images = page.locator("img.figure")
        assert images.count() >= 4
        for index in range(images.count()):
            image = images.nth(index)
            image.scroll_into_view_if_needed()
            width, height = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            box = image.bounding_box()
            assert image.is_visible() and width > 300 and height > 100 and box["width"] > 300, image.get_attribute(
                "alt"
            )
        assert page.locator("#rule-plot-MaxInitializationTime img").is_visible()
        assert page.locator("#rules-table .rule-issues-found").count() == 1
        browser.close()
