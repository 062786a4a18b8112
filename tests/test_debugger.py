"""The debugger in a job: its records (readable while the job runs, after a kill and across a resume), the Python
API, `kennel debug`, the job report, MLflow, and the acceptance runs on real photos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from debug_models import fit, mlp, vectors
from helpers import kennel, tiny_config

from kennel.config import ConfigError, load_config
from kennel.debugger import load_records
from kennel.debugger.store import read_table
from kennel.engine import Observer
from kennel.job import train
from kennel.jobs import load_job


def test_records_hold_each_collection_per_mode_and_read_back_through_the_api(tmp_path: Path):
    fit(tmp_path / "job" / "debug", mlp(), vectors(n=200), vectors(n=64, seed=1), epochs=2)
    records = load_records(tmp_path / "job")
    assert records.modes == ["EVAL", "TRAIN"]
    assert set(records.frame["collection"]) == {"losses", "weights", "biases", "gradients", "activations", "inputs"}
    assert records.tensor_names("weights") == ["0.weight", "2.weight", "4.weight"]
    assert "1/output" in records.tensor_names("activations", "TRAIN")
    assert records.steps("TRAIN") == [0, 5, 10]  # 7 steps per epoch, every 5th saved (full)
    steps, norms = records.values("0.weight", "norm")
    assert list(steps) == records.steps("TRAIN") and np.all(norms > 0)
    # The stored reduction is the tensor's: the last saved norm of 4.weight is its norm before that step.
    steps, updates = records.values("4.weight", "update")
    assert np.all(np.isfinite(updates)) and np.all(updates > 0)
    _, eval_loss = records.values("loss", "mean", mode="EVAL")
    assert len(eval_loss) == 1  # 2 validation batches per pass, 2 passes: batches 0 to 3, every 5th saved
    assert records.rules["ExplodingTensor"]["status"] == "no issues"
    with pytest.raises(KeyError, match="unknown reduction"):
        records.values("0.weight", "median")


def test_records_are_readable_while_the_job_runs(tmp_path: Path):
    seen = []

    class Reader(Observer):
        def on_epoch_end(self, state):
            seen.append(load_records(tmp_path / "job").steps("TRAIN"))

    fit(tmp_path / "job" / "debug", mlp(), vectors(n=1600), epochs=2, observers=(Reader(),), preset="light")
    assert seen == [[0], [0, 50]]  # 50 steps per epoch, every 50th saved (light)


def test_a_killed_jobs_records_stay_readable(tmp_path: Path):
    fit(tmp_path / "debug", mlp(), vectors(n=320), epochs=2)  # 10 steps per epoch; written at each epoch's end
    [segment] = (tmp_path / "debug").glob("records-*.arrow")
    whole = len(read_table(tmp_path / "debug"))
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 100])  # the kill landed in the middle of the last record batch
    torn = read_table(tmp_path / "debug")
    assert 0 < len(torn) < whole
    assert set(torn["step"].to_pylist()) == {0, 5}  # the first epoch's, written before the kill


def test_a_resumed_job_keeps_the_newer_rows_of_steps_run_twice(tmp_path: Path):
    folder = tmp_path / "debug"
    fit(folder, mlp(), vectors(n=320), epochs=2, preset="light")  # steps 0..19, step 0 saved
    first = read_table(folder)
    # A second segment as a resumed job writes it: it starts again at step 10 (the checkpoint of epoch 1).
    from kennel.debugger.store import RecordWriter
    from kennel.debugger.window import COLUMNS, Save

    writer = RecordWriter(folder)
    writer.write(Save("TRAIN", 10, 10, 1, 0.1, 32, ["loss"], ["losses"], [""], np.full((1, len(COLUMNS)), 7.0)))
    writer.close()
    table = read_table(folder)
    assert sorted(set(table["step"].to_pylist())) == [0, 10]
    assert table.filter(np.array(table["step"].to_pylist()) == 10)["mean"].to_pylist() == [7.0]
    assert len(table) == len(first.filter(np.array(first["step"].to_pylist()) < 10)) + 1


@pytest.mark.slow
def test_a_training_job_debugs_by_default_and_kennel_debug_reads_it(dataset: Path):
    record = train(tiny_config(dataset, epochs=2), stream=None)
    folder = record.path / "debug"
    assert (folder / "rules.json").is_file() and list(folder.glob("records-*.arrow"))
    rules = json.loads((folder / "rules.json").read_text())
    assert rules["CheckInputImages"]["status"] == "not applicable"  # cached features are not images
    report = (record.path / "report.html").read_text()
    assert re.search(r'<section id="debugger" data-status="ok"', report)

    result = kennel("debug", record.id)
    assert result.exit_code == 0, result.output
    assert "ExplodingTensor" in result.output and "first step" in result.output
    assert (folder / "report.html").is_file()
    page = (folder / "report.html").read_text()
    for section in ("rules", "loss", "gradients", "updates"):
        assert re.search(rf'<section id="{section}" data-status="ok"', page), section
    as_json = json.loads(kennel("debug", record.id, "--json", "--no-html").stdout)
    assert {row["rule"] for row in as_json} == set(rules)


def test_debug_off_writes_nothing_and_bad_settings_are_config_errors(dataset: Path):
    record = train(tiny_config(dataset, **{"debug.preset": "off"}), stream=None)
    assert not (record.path / "debug").exists()
    result = kennel("debug", record.id)
    assert result.exit_code == 1 and "--debug off" in result.output
    with pytest.raises(ConfigError, match=r"debug\.preset"):
        load_config(overrides={"debug.preset": "heavy"})
    with pytest.raises(ConfigError, match=r"debug.rules.Overfit: unknown parameter"):
        load_config(overrides={"debug.rules": {"Overfit": {"ratio": 1}}})
    config = load_config(overrides={"debug.modes": {"TRAIN": {"save_interval": 3}}})
    assert config.debug.capture("TRAIN").save_interval == 3
    assert "gradients" in config.debug.capture("TRAIN").collections  # the rest is the preset's


def test_kennel_train_debug_flag(dataset: Path):
    args = ["train", "--data", dataset, "--model", "tiny", "--set", "model.pretrained=false", "--epochs", "1"]
    printed = kennel(*args, "--debug", "full", "--print-config")
    assert printed.exit_code == 0 and "preset: full" in printed.output
    assert "--debug" in kennel("train", "--help").output


def test_a_rule_that_stops_the_job_ends_it_with_its_reason(dataset: Path):
    rules = {"TensorVariance": {"max_threshold": 1e-9, "stop": True}}
    record = train(tiny_config(dataset, epochs=5, **{"optim.lr": 0.1, "debug.rules": rules}), stream=None)
    assert record.status == "stopped"
    assert record.stop_reason.startswith("debugger rule TensorVariance:")
    assert "epochs_run" not in load_job(record.id).metrics  # stopped at the first saved step, mid-epoch


@pytest.mark.slow
def test_findings_are_recorded_in_mlflow_with_the_job(dataset: Path, kennel_home: Path):
    from kennel.mlflow_store import get_client

    rules = {"TensorVariance": {"max_threshold": 1e-9}}
    record = train(tiny_config(dataset, tracking=True, epochs=1, **{"debug.rules": rules}), stream=None)
    run = get_client().get_run(record.mlflow_run_id)
    assert run.data.tags["kennel.debug.TensorVariance"] == "issues found"
    assert run.data.tags["kennel.debug.ExplodingTensor"] == "no issues"
    files = {f.path for f in get_client().list_artifacts(record.mlflow_run_id, "debug")}
    assert "debug/findings.jsonl" in files


# --- acceptance on real photos (a third of ../shared/data/dogs10) ------------------------------------------


@pytest.fixture(scope="module")
def dogs10_third(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every third photo of each dogs10 class (links, not copies): the same ten breeds, the same photos' kind,
    a third of the cold feature extraction the whole set costs the suite."""
    data, root = shared_data("dogs10"), tmp_path_factory.mktemp("dogs10-third")
    for photo in sorted(data.glob("*/*/*"))[::3]:
        link = root / photo.relative_to(data)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
    return root


@pytest.mark.integration
@pytest.mark.slow
def test_default_recipe_on_dogs10_has_no_findings(photo_cache, dogs10_third: Path):
    record = train(load_config(overrides={"data.root": str(dogs10_third), "tracking": False}), stream=None)
    assert record.status == "completed"
    issues = [f for f in load_records(record.id).findings if f.fired]
    assert issues == [], [f.message for f in issues]


@pytest.mark.integration
@pytest.mark.slow
def test_learning_rate_10_on_dogs10_is_stopped_by_a_rule_within_the_first_epoch(photo_cache, dogs10_third: Path):
    overrides = {"data.root": str(dogs10_third), "tracking": False, "optim.lr": 10.0}
    record = train(load_config(overrides=overrides), stream=None)
    assert record.status == "stopped" and record.stop_reason.startswith("debugger rule ")
    assert "epochs_run" not in record.metrics  # stopped mid-epoch: not even the first epoch ended
    [finding] = [f for f in load_records(record.id).findings if f.fired and f.rule in record.stop_reason]
    steps_per_epoch = len(list((dogs10_third / "train").glob("*/*"))) // 32
    assert finding.step < steps_per_epoch
