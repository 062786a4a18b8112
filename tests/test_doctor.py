"""``kennel doctor`` on the tiny backbone (every registered backend, timed or with a reason; auto's choice; stored
figures reused), and the engine lines ``kennel jobs show`` and profile.html print from a job's ``record.engine``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import kennel

from kennel.inference import BACKENDS


def doctor_json(*args: str) -> dict:
    result = kennel("doctor", "--model", "tiny", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_doctor_lists_every_backend_and_marks_the_fastest_as_auto() -> None:
    report = doctor_json()
    rows = {row["backend"]: row for row in report["backends"]}
    assert sorted(rows) == sorted(BACKENDS.names())
    for row in rows.values():  # a speed, or why not: never both, never neither
        assert (row["photos_per_s"] is None) != (row["reason"] is None), row
    timed = {name: row["photos_per_s"] for name, row in rows.items() if row["photos_per_s"]}
    assert "torch-eager" in timed and "onnxruntime-fp32" in timed  # CPU fp32 runs everywhere the tests do
    chosen = [name for name, row in rows.items() if row["auto"]]
    assert chosen == [report["auto"]] == [max(timed, key=timed.get)]
    assert report["measured_now"] is True
    assert isinstance(report["load"], float) and report["load"] >= 0  # kept with the figures it may have swayed
    assert report["cpu"] and "torch" in report["libraries"] and report["devices"]
    assert "random images" in report["calibration"]  # no --data: int8 calibrated on generated photos


def test_doctor_reuses_stored_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    first = doctor_json()
    timed: list[str] = []

    def no_timing(backend, *args, **kwargs):
        timed.append(backend.name)
        raise AssertionError("kennel doctor measured although figures are stored")

    monkeypatch.setattr("kennel.inference.choice.time_backend", no_timing)
    second = doctor_json()
    assert timed == [] and second["measured_now"] is False
    assert second["backends"] == first["backends"] and second["measured"] == first["measured"]
    assert "stored" in kennel("doctor", "--model", "tiny").output
    remeasured = kennel("doctor", "--model", "tiny", "--measure", "--json")
    assert timed  # --measure times the backends again (here into the failing stand-in, recorded as failures)
    assert json.loads(remeasured.stdout)["measured_now"] is True


def test_doctor_calibrates_int8_on_a_dataset(dataset: Path) -> None:
    report = doctor_json("--data", str(dataset))
    assert str(dataset) in report["calibration"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuch"], "unknown backbone 'nosuch'"),
        (["--model", "tiny", "--data", "/no/such/folder"], "does not exist"),
        (["--model", "tiny", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_doctor_refuses_bad_options_with_one_line(args: list[str], message: str) -> None:
    result = kennel("doctor", *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_jobs_show_prints_the_engine_lines_of_a_trained_job(dataset: Path) -> None:
    from kennel.config import load_config
    from kennel.job import train

    overrides = {"data.root": str(dataset), "model.backbone": "tiny", "model.pretrained": False, "epochs": 1}
    record = train(load_config(overrides={**overrides, "tracking": False}), stream=None)
    assert record.status == "completed", record.error
    extraction = record.engine["extraction"]
    result = kennel("jobs", "show", record.id)
    assert result.exit_code == 0, result.output
    assert "inference engine" in result.output
    line = next(line for line in result.output.splitlines() if "extraction" in line)
    label = extraction["backend"] if extraction["runtime"] == "torch" else extraction["runtime"]
    assert f"{label} {extraction['precision']}" in line and "photos/s" in line
    if "int8_check" in extraction:
        assert "int8 check" in result.output
    profile = (record.path / "profile.html").read_text()
    assert "inference engine" in profile and f"extraction: {label} {extraction['precision']}" in profile


def test_jobs_show_prints_the_int8_check_and_cached_features() -> None:
    from kennel.jobs import create_job

    check = {"valid_top1_fp32": 0.808, "valid_top1_int8": 0.7985, "loss_points": 0.95, "ok": False}
    entry = {"backend": "onnxruntime-fp32", "runtime": "onnxruntime", "precision": "fp32", "cached": True}
    engine = {"extraction": {**entry, "reason": "not int8: it lost 0.95 points", "int8_check": check}}
    record = create_job("cached-int8", backbone="tiny", status="completed", engine=engine)
    output = kennel("jobs", "show", record.id).output
    assert "cached fp32 features, none computed; engine onnxruntime fp32 (not int8" in output
    assert "int8 check" in output and "fp32 80.8%, int8 79.8% (-0.95 points): not used" in output
