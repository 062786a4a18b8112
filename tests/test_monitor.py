"""``kennel monitor``: captured traffic against the job's valid photos. Traffic from another set of photos is
flagged, with findings and advice; the other half of the job's own set is not; the reference is computed once;
too small a capture is said to be too small; the page escapes what it shows."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from helpers import encode, kennel, section_statuses, tiny_artifact
from PIL import Image

from kennel.cli import monitor as _registers_the_command  # noqa: F401
from kennel.data.sample import write_sample_dataset
from kennel.findings import ISSUES_FOUND, NO_DATA, NO_ISSUES
from kennel.jobs import JobRecord, create_job
from kennel.monitor import REFERENCE_FILE, Comparison, Sample, judge
from kennel.monitor.drift import numeric_psi
from kennel.monitor.rules import BUILTIN_RULES, MONITOR_RULES
from kennel.monitor.run import default_rules
from kennel.serve import Endpoint
from kennel.serve.capture import Capture

CLASSES = ["Synthetic a", "Synthetic b", "Synthetic c"]


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated set of 300 photos split in two: 150 valid (the job's) and 150 test (sent as traffic)."""
    return write_sample_dataset(tmp_path_factory.mktemp("data") / "halves", num_classes=3, per_split=(2, 50, 50))


@pytest.fixture(scope="module")
def other_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other photos: six classes of other hues, twice the size (96 px), another seed."""
    root = write_sample_dataset(tmp_path_factory.mktemp("data") / "other", 6, per_split=(0, 25, 0), size=96, seed=5)
    return root / "valid"


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, halves: Path) -> JobRecord:
    """A job on ``halves`` with a tiny model (no training: the monitor only needs the artifact and the data)."""
    record = create_job("monitored", root=tmp_path_factory.mktemp("jobs"), config={"data": {"root": str(halves)}})
    tiny_artifact(record.folder.model, CLASSES, head_scale=20, export_onnx=False)
    record.artifact = str(record.folder.model)
    record.save()
    return record


@pytest.fixture(scope="module")
def endpoint(job: JobRecord) -> Endpoint:
    return Endpoint.load(job.folder.model)


def served_model(endpoint: Endpoint, **changes: str) -> dict[str, str]:
    info = endpoint.predictor.artifact.info
    return {"name": "monitored", "backbone": info.backbone, "created": info.created, **changes}


def capture_traffic(
    folder: Path,
    endpoint: Endpoint,
    photos: list[Path],
    change: Callable[[Image.Image], Image.Image] | None = None,
    model: dict[str, str] | None = None,
) -> Path:
    """Send each photo through the endpoint's own steps (decode, model, answer), as ``kennel serve`` does, and
    capture it as the app does."""
    with Capture(folder, seed=0) as capture:
        for path in photos:
            body = path.read_bytes()
            if change is not None:
                body = encode(change(Image.open(io.BytesIO(body)).convert("RGB")))
            started = time.perf_counter()
            prepared = endpoint.prepare(body, "image/jpeg")
            answer = endpoint.respond(endpoint.predict_one(prepared), prepared, started)
            capture.record(answer, prepared.image, body, model or served_model(endpoint))
    return folder


def photos_of(split: Path) -> list[Path]:
    return sorted(split.rglob("*.jpg"))


def darker(image: Image.Image) -> Image.Image:
    return image.point(lambda v: v * 0.45)


def run_json(job: JobRecord, capture: Path, *args: object) -> tuple[dict[str, dict], object]:
    result = kennel("monitor", job.path, "--capture", capture, "--json", *args)
    assert result.exit_code == 0, result.output
    return {f["rule"]: f for f in json.loads(result.stdout)}, result


# --- the two cases the issue names ------------------------------------------------------------------------------


def test_traffic_from_another_set_of_photos_is_flagged_with_advice(
    tmp_path: Path, job: JobRecord, endpoint: Endpoint, other_set: Path
) -> None:
    capture = capture_traffic(tmp_path / "capture", endpoint, photos_of(other_set), darker)
    result = kennel("monitor", job.path, "--capture", capture, "--format", "table")
    assert result.exit_code == 0, result.output
    assert "Drift found by" in result.stdout
    findings, _ = run_json(job, capture)
    assert set(findings) == set(BUILTIN_RULES)
    fired = {name for name, f in findings.items() if f["status"] == ISSUES_FOUND}
    assert {"BrightnessDrift", "ImageSizeDrift"} <= fired
    brightness = findings["BrightnessDrift"]
    assert brightness["message"].startswith("Photos are darker than the valid photos: the median brightness is")
    assert "data.augment: strong" in brightness["advice"]
    assert brightness["numbers"]["psi"] > 0.25 and brightness["numbers"]["p_value"] < 0.01
    assert brightness["numbers"]["traffic_median"] < brightness["numbers"]["valid_median"]
    size = findings["ImageSizeDrift"]
    assert (size["numbers"]["valid_median"], size["numbers"]["traffic_median"]) == (48, 96)
    assert "96 px in traffic vs 48 px on valid" in size["message"]
    assert all(f["mode"] == "SERVE" and f["step"] is None for f in findings.values())

    page = job.path / "monitor.html"
    html = page.read_text()
    assert section_statuses(html) == {
        "monitor-summary": "ok",
        "monitor-findings": "ok",
        "monitor-distributions": "ok",
    }
    assert "Photos are darker than the valid photos" in html
    assert html.count('class="monitor-plot"') == sum(
        f["status"] in (NO_ISSUES, ISSUES_FOUND) for f in findings.values()
    )
    assert str(page) in result.stdout  # the table run printed the page's path last


def test_two_halves_of_one_set_do_not_drift(tmp_path: Path, job: JobRecord, endpoint: Endpoint, halves: Path) -> None:
    capture = capture_traffic(tmp_path / "capture", endpoint, photos_of(halves / "test"))
    findings, _ = run_json(job, capture)
    assert {name: f["status"] for name, f in findings.items()} == dict.fromkeys(BUILTIN_RULES, NO_ISSUES)
    # Small samples alone push a PSI past 0.1 often; the permutation test is what keeps it from being called drift.
    assert all(f["numbers"]["p_value"] >= 0.01 for f in findings.values())
    table = kennel("monitor", job.path, "--capture", capture, "--format", "table")
    assert "No drift: 5 of 5 rules judged and found none." in table.stdout


# --- the reference, the capture, the command's errors ------------------------------------------------------------


@pytest.mark.slow
def test_the_reference_is_computed_once_per_model_and_data(
    tmp_path: Path, job: JobRecord, endpoint: Endpoint, halves: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kennel.monitor import reference

    capture = capture_traffic(tmp_path / "capture", endpoint, photos_of(halves / "test")[:40])
    (job.path / REFERENCE_FILE).unlink(missing_ok=True)
    passes = []
    real = reference.measure_split
    monkeypatch.setattr(reference, "measure_split", lambda *a, **k: passes.append(1) or real(*a, **k))
    first = kennel("monitor", job.path, "--capture", capture, "--format", "table")
    assert first.exit_code == 0, first.output
    assert "reference: 150 valid photos of job" in first.stdout and "computed in" in first.stdout
    second = kennel("monitor", job.path, "--capture", capture, "--format", "table")
    assert "read back from monitor-reference.json" in second.stdout
    assert len(passes) == 1
    stored = json.loads((job.path / REFERENCE_FILE).read_text())
    assert stored["key"]["created"] == endpoint.predictor.artifact.info.created
    stored["key"]["valid"] = "a split that has changed since"
    (job.path / REFERENCE_FILE).write_text(json.dumps(stored))
    kennel("monitor", job.path, "--capture", capture)
    assert len(passes) == 2


def test_a_valid_photo_that_cannot_be_read_is_left_out_of_the_reference(tmp_path: Path, job: JobRecord) -> None:
    from kennel.data.layout import load_layout
    from kennel.monitor import load_reference

    root = write_sample_dataset(tmp_path / "data", num_classes=3, per_split=(1, 3, 1))
    broken = root / "valid" / "001.Synthetic_a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a photo")
    reference = load_reference(job.folder.model, load_layout(root)["valid"], cache=None)
    assert (len(reference.sample), reference.photos, reference.unreadable) == (9, 10, [str(broken)])
    assert set(reference.sample.label) <= set(CLASSES)
    assert np.isfinite(reference.sample.dog_score).all() and (reference.sample.width == 48).all()


def test_too_few_lines_are_said_to_be_too_few(tmp_path: Path, job: JobRecord, endpoint: Endpoint, halves: Path) -> None:
    capture = capture_traffic(tmp_path / "capture", endpoint, photos_of(halves / "test")[:12])
    result = kennel("monitor", job.path, "--capture", capture, "--format", "table", "--out", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    assert "Too few lines to judge: the capture has 12 line(s) of this model; the rules judge from 30" in result.stdout
    findings, _ = run_json(job, capture, "--out", tmp_path / "page.html")
    assert {f["status"] for f in findings.values()} == {NO_DATA}
    assert "The capture has 12 lines" in findings["ConfidenceDrift"]["message"]
    html = (tmp_path / "page.html").read_text()
    assert "Too few lines to judge" in html and "No distribution to draw" in html


def test_lines_of_another_model_are_left_out_or_compared_with_a_warning(
    tmp_path: Path, job: JobRecord, endpoint: Endpoint, halves: Path
) -> None:
    photos = photos_of(halves / "test")
    other = served_model(endpoint, created="2020-01-01T00:00:00+00:00", version="7")
    mixed = capture_traffic(tmp_path / "mixed", endpoint, photos[:40])
    capture_traffic(tmp_path / "mixed", endpoint, photos[40:50], model=other)
    result = kennel("monitor", job.path, "--capture", mixed, "--format", "table")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # folded at its words to 80 columns
    assert "warning: 10 capture line(s) of another model left out (name monitored, version 7" in said
    assert "traffic: 40 lines" in result.stdout

    foreign = capture_traffic(tmp_path / "foreign", endpoint, photos[:40], model=other)
    result = kennel("monitor", job.path, "--capture", foreign, "--format", "table")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "is of this model (they name name monitored, version 7" in said and "compared all the same" in said
    assert "No capture line is of this model" in (job.path / "monitor.html").read_text()


def test_the_command_says_in_one_line_what_it_cannot_use(tmp_path: Path, job: JobRecord, halves: Path) -> None:
    missing = kennel("monitor", job.path, "--capture", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "error:" in missing.stderr and "no such capture folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = kennel("monitor", job.path, "--capture", tmp_path / "empty")
    assert empty.exit_code == 1
    assert empty.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} holds no capture files (capture-*.jsonl): serve with kennel serve MODEL "
        f"--capture {tmp_path / 'empty'}"
    ]
    loose = tiny_artifact(tmp_path / "loose-model", CLASSES, export_onnx=False)
    outside = kennel("monitor", loose, "--capture", tmp_path / "empty")
    assert outside.exit_code == 2 and "is a model outside a job: pass --data DIR" in outside.stderr
    moved = kennel("monitor", job.path, "--capture", tmp_path / "empty", "--data", tmp_path / "gone")
    assert moved.exit_code == 2 and "pass --data DIR if the dataset has moved" in moved.stderr
    helped = kennel("monitor", "--help")
    assert helped.exit_code == 0 and "--capture" in helped.stdout and "--data" in helped.stdout


def test_a_model_outside_a_job_is_compared_with_the_data_named(
    tmp_path: Path, endpoint: Endpoint, halves: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = tiny_artifact(tmp_path / "loose-model", CLASSES, head_scale=20, export_onnx=False)
    capture = capture_traffic(tmp_path / "capture", Endpoint.load(loose), photos_of(halves / "test")[:40])
    monkeypatch.chdir(tmp_path)
    result = kennel("monitor", loose, "--capture", capture, "--data", halves, "--format", "tsv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split("\t")[:4] == ["rule", "status", "psi", "p_value"]
    assert (tmp_path / "monitor.html").is_file() and (tmp_path / REFERENCE_FILE).is_file()
    assert result.stderr.strip().endswith(str(tmp_path / "monitor.html"))


# --- the statistics, on samples made to order --------------------------------------------------------------------


def made_sample(labels: list[str], rng: np.random.Generator, confidence=None, brightness=None, side: int = 100):
    n = len(labels)
    return Sample.from_columns(
        {
            "label": labels,
            "confidence": rng.uniform(0.5, 1.0, n) if confidence is None else confidence,
            "dog_score": rng.uniform(0.6, 1.0, n),
            "width": [side] * n,
            "height": [side * 3 // 4] * n,
            "brightness": rng.uniform(0.3, 0.6, n) if brightness is None else brightness,
        }
    )


def test_two_samples_of_one_population_are_rarely_called_drift_though_their_psi_often_passes_0_1() -> None:
    rule = MONITOR_RULES.build("ConfidenceDrift", {"permutations": 199})
    naive, called = 0, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        values = rng.beta(5, 2, 150)
        comparison = Comparison(made_sample(["a"] * 75, rng, values[:75]), made_sample(["a"] * 75, rng, values[75:]))
        finding = rule.check(comparison)
        naive += finding.numbers["psi"] >= 0.1
        called += finding.fired
    assert naive >= 20  # the usual PSI reading alone would call drift in most of these
    assert called <= 2  # alpha 0.01: about 0.4 of 40 expected


def test_a_real_shift_is_found_even_in_small_samples() -> None:
    rng = np.random.default_rng(0)
    reference = made_sample(["a"] * 60, rng, brightness=rng.normal(0.5, 0.08, 60))
    traffic = made_sample(["a"] * 60, rng, brightness=rng.normal(0.62, 0.08, 60))
    finding = MONITOR_RULES.build("BrightnessDrift").check(Comparison(reference, traffic))
    assert finding.fired and finding.message.startswith("Photos are brighter than the valid photos")


def test_a_value_the_reference_holds_many_times_gets_a_bin_of_its_own() -> None:
    statistic = numeric_psi(10)
    same = np.full(100, 48.0)
    assert statistic(same, same) == 0
    assert statistic(same, np.full(100, 32.0)) > 1 and statistic(same, np.full(100, 64.0)) > 1


def test_the_page_escapes_class_names_and_model_names(tmp_path: Path) -> None:
    from kennel.artifact import ArtifactInfo
    from kennel.monitor import MonitorRun, Reference, Traffic, write_monitor_page

    evil = "<script>alert('kennel')</script>"
    rng = np.random.default_rng(1)
    reference = made_sample([evil] * 20 + ["Pug"] * 60, rng)
    traffic = made_sample([evil] * 60 + ["Pug"] * 20, rng)
    comparison = Comparison(reference, traffic)
    rules = default_rules()
    findings = judge(comparison, rules)
    assert {f.rule for f in findings if f.fired} == {"ClassMixDrift"}
    info = ArtifactInfo("tiny", 2, [evil, "Pug"], {}, 32, True)
    noisy = Traffic(tmp_path, 1, [], other=3, other_models=["name <b>bold</b>"])
    run = MonitorRun(tmp_path / "model", info, Reference(reference, tmp_path, 80), noisy, comparison, rules, findings)
    html = write_monitor_page(run, tmp_path / "monitor.html").read_text()
    assert evil not in html and "<b>bold</b>" not in html
    assert (
        "&lt;script&gt;alert(&#39;kennel&#39;)&lt;/script&gt; is 75% of the answers in traffic vs 25% on valid" in html
    )
    assert "name &lt;b&gt;bold&lt;/b&gt;" in html


# --- real photos --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_photos_without_dogs_are_flagged_and_the_test_split_is_not(tmp_path: Path) -> None:
    """A pretrained backbone (its ImageNet head gives the dog score) on breeds4: its test split as traffic is no
    drift from its valid split; cats, people and other things (not-dogs) are."""
    from kennel.artifact import save_artifact
    from kennel.models import create_model, get_backbone

    breeds, not_dogs = shared_data("breeds4"), shared_data("not-dogs")
    job = create_job("breeds4", root=tmp_path / "jobs", config={"data": {"root": str(breeds)}})
    name = "tf_efficientnet_lite0"
    model = create_model(name, 4, pretrained=True)
    save_artifact(
        model,
        ["Beagle", "Siberian husky", "Toy poodle", "American bulldog"],
        get_backbone(name).preprocessing,
        job.folder.model,
        export_onnx=False,
    )
    endpoint = Endpoint.load(job.folder.model)
    same = capture_traffic(tmp_path / "test-split", endpoint, photos_of(breeds / "test"))
    findings, _ = run_json(job, same)
    assert not [f for f in findings.values() if f["status"] == ISSUES_FOUND], findings
    assert findings["NoDogDrift"]["status"] == NO_ISSUES

    photos = [p for p in sorted(not_dogs.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    no_dogs = photos[::2]  # 60 of cats, people and other things: enough to judge, half the time
    other = capture_traffic(tmp_path / "not-dogs", endpoint, no_dogs)
    findings, _ = run_json(job, other)
    assert findings["NoDogDrift"]["status"] == ISSUES_FOUND
    assert findings["NoDogDrift"]["message"].startswith("More photos show no dog")
