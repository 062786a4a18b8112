"""Tuning studies end to end on a generated dataset and the tiny backbone: strategies, pruners, parallel
workers on one journal, stopping criteria, warm starts, the best config and the study report."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

import optuna
import pytest
import torch
import yaml
from helpers import kennel, space_file

from kennel.config import load_config
from kennel.job import train
from kennel.jobs import list_jobs, load_job
from kennel.tune import TuneError, TuneRequest, load_study_record, tune
from kennel.tune.results import ERROR, JOB_ID, WARM_START, finished, outcome
from kennel.tune.study import open_study

SPACE = {
    "parameters": {
        "optim.lr": {"type": "float", "low": 0.001, "high": 0.5, "log": True, "grid": [0.003, 0.3]},
        "epochs": {"type": "int", "low": 2, "high": 4},
    }
}


@pytest.fixture
def space(tmp_path: Path) -> Path:
    return space_file(tmp_path / "space.yaml", SPACE)


def base(dataset: Path, **extra) -> dict:
    return {
        "data": {"root": str(dataset)},
        "model": {"backbone": "tiny", "pretrained": False},
        "tracking": False,
        **extra,
    }


def run(dataset: Path, space: Path, study: str = "s", trials: int = 3, parallel: int = 1, **settings) -> object:
    session = {"trials": trials, "parallel": parallel, **settings.pop("session", {})}
    request = TuneRequest(study=study, space=space, base=base(dataset), settings=settings, session=session)
    return tune(request, stream=None)


def trials_of(name: str) -> list[optuna.trial.FrozenTrial]:
    return open_study(load_study_record(name)).get_trials(deepcopy=False)


# Every strategy and every pruner, in four studies.
PAIRS = [("tpe", "median"), ("random", "hyperband"), ("grid", "none"), ("cmaes", "median")]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "pruner"), PAIRS)
def test_every_strategy_and_pruner_runs_its_trials_as_jobs(dataset: Path, space: Path, strategy: str, pruner: str):
    record = run(dataset, space, strategy=strategy, pruner=pruner, trials=4)
    assert record.status == "completed"
    assert record.counts.get("complete", 0) + record.counts.get("pruned", 0) == 4
    trials = trials_of("s")
    jobs = {job.id: job for job in list_jobs(study="s")}
    assert sorted(t.user_attrs[JOB_ID] for t in trials) == sorted(jobs)
    for trial in trials:
        job = jobs[trial.user_attrs[JOB_ID]]
        assert job.status == {"COMPLETE": "completed", "PRUNED": "pruned"}[trial.state.name]
        assert job.config["optim"]["lr"] == trial.params["optim.lr"]
        assert job.config["head"] == "sgd" and "lbfgs_valid_accuracy" not in job.metrics  # no second head per trial
        assert job.config["epochs"] == trial.params["epochs"]
        assert sorted(trial.intermediate_values) == list(range(1, job.metrics["epochs_run"] + 1))
        if job.status == "completed":
            assert job.metrics["epochs_run"] == trial.params["epochs"]
            assert trial.value == job.metrics["best_valid_accuracy"]
    if strategy == "grid":
        assert {t.params["optim.lr"] for t in trials} <= {0.003, 0.3}


@pytest.mark.slow
def test_a_grid_study_defaults_to_every_point_of_its_grid(dataset: Path, space: Path) -> None:
    request = TuneRequest(study="g", space=space, base=base(dataset), settings={"strategy": "grid", "pruner": "none"})
    record = tune(request, stream=None)
    assert record.session["trials"] == 2 * 3
    assert sorted((t.params["optim.lr"], t.params["epochs"]) for t in trials_of("g")) == [
        (lr, epochs) for lr in (0.003, 0.3) for epochs in (2, 3, 4)
    ]


def test_a_trial_below_the_median_is_pruned_and_its_job_says_so(dataset: Path) -> None:
    """Plant two finished trials that reached 1.0 at every epoch; a trial that cannot learn (lr ~ 0) is pruned
    at the first epoch the median pruner may judge."""
    from kennel.tune.pruning import TrialPruner

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, n_warmup_steps=2))
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for _ in range(2):
        done = optuna.trial.create_trial(
            params={"x": 0.5}, distributions=distributions, value=1.0, intermediate_values={e: 1.0 for e in range(1, 7)}
        )
        study.add_trial(done)
    trial = study.ask()
    config = load_config(base=base(Path(dataset)), overrides={"epochs": 6, "optim.lr": 1e-12})
    job = train(config, observers=[TrialPruner(trial, "best_valid_accuracy", True, "median")], stream=None)
    assert job.status == "pruned"
    assert job.stop_reason.startswith("pruned by the median pruner at epoch 2")
    assert job.metrics["epochs_run"] == 2
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2]


@pytest.mark.slow
def test_two_workers_share_one_journal_and_finish_exactly_the_trials_asked(dataset: Path, space: Path) -> None:
    record = run(dataset, space, trials=5, parallel=2, pruner="none")
    assert record.status == "completed"
    assert record.session["threads"] >= 1
    trials = trials_of("s")
    assert len(trials) == 5 and [outcome(t) for t in trials] == ["complete"] * 5
    assert len({t.user_attrs["kennel.pid"] for t in trials}) == 2  # both processes ran trials
    assert (Path(record.study_dir) / "journal.log").is_file()
    assert len(list_jobs(study="s")) == 5


def test_trials_are_recorded_in_mlflow_under_the_study(dataset: Path, space: Path, kennel_home: Path) -> None:
    from kennel.mlflow_store import get_client

    request = TuneRequest(study="tracked", space=space, base={**base(dataset), "tracking": True}, session={"trials": 2})
    tune(request, stream=None)
    client = get_client()
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["kennel.job_id"] for r in runs) == sorted(j.id for j in list_jobs(study="tracked"))
    assert {r.data.tags["kennel.study"] for r in runs} == {"tracked"}


def test_the_study_stops_at_its_target(dataset: Path, space: Path) -> None:
    record = run(dataset, space, trials=10, session={"target": 0.0})  # any accuracy reaches 0
    assert record.status == "completed" and record.counts == {"complete": 1}
    assert record.stop_reason.startswith("the target best_valid_accuracy 0")


def test_no_trial_starts_after_the_wall_clock_limit(dataset: Path, space: Path) -> None:
    record = run(dataset, space, trials=10, session={"timeout_s": 1e-6})
    assert finished(record.counts) == 0 and "wall-clock limit" in record.stop_reason


def test_an_objective_the_jobs_do_not_record_fails_the_study(dataset: Path, space: Path) -> None:
    record = run(dataset, space, trials=3, objective="valid_f1")
    assert record.status == "failed"
    assert "'valid_f1' is not a metric the trials' jobs record" in record.stop_reason
    assert record.counts == {"failed": 1}


@pytest.mark.slow
def test_a_resumed_study_keeps_its_settings_and_continues_to_the_new_budget(dataset: Path, space: Path) -> None:
    run(dataset, space, trials=2)
    with pytest.raises(TuneError, match="study s exists with other settings: strategy='random'"):
        run(dataset, space, trials=3, strategy="random")
    before = {t.number: t.value for t in trials_of("s")}
    record = tune(TuneRequest(study="s", session={"trials": 4}), stream=None)  # no data: the stored base
    after = trials_of("s")
    assert record.counts.get("complete", 0) + record.counts.get("pruned", 0) == 4
    assert {t.number: t.value for t in after if t.number in before} == before


@pytest.mark.slow
def test_a_warm_start_seeds_the_search_with_an_earlier_studys_trials(dataset: Path, space: Path) -> None:
    run(dataset, space, study="first", trials=3, pruner="none")
    request = TuneRequest("second", space, base(dataset), {"pruner": "none"}, session={"trials": 2}, warm_start="first")
    record = tune(request, stream=None)
    trials = trials_of("second")
    warm = [t for t in trials if t.user_attrs.get(WARM_START)]
    assert sorted(t.user_attrs[WARM_START] for t in warm) == ["first#0", "first#1", "first#2"]
    assert [t.value for t in warm] == [t.value for t in trials_of("first")]
    assert record.counts == {"complete": 2, "warm": 3}  # its own budget is untouched by the seeds
    assert {j.study for j in list_jobs(study="second")} == {"second"} and len(list_jobs(study="second")) == 2


def test_the_first_trial_tries_the_base_configs_values(dataset: Path, space: Path) -> None:
    request = TuneRequest(
        study="s", space=space, base={**base(dataset), "optim": {"lr": 0.02}, "epochs": 3}, session={"trials": 1}
    )
    tune(request, stream=None)
    (first,) = trials_of("s")
    assert first.params == {"optim.lr": 0.02, "epochs": 3} and first.user_attrs["kennel.baseline"]


def test_a_study_without_data_or_with_a_bad_base_config_does_not_start(space: Path, dataset: Path) -> None:
    with pytest.raises(TuneError, match="no dataset"):
        tune(TuneRequest(study="s", space=space, base={"tracking": False}), stream=None)
    with pytest.raises(TuneError, match=r"optim\.lrr: unknown key"):
        tune(TuneRequest(study="s", space=space, base={**base(dataset), "optim": {"lrr": 1}}), stream=None)


@pytest.mark.slow
def test_the_best_config_retrains_the_best_trial(dataset: Path, space: Path) -> None:
    record = run(dataset, space, trials=3, pruner="none")
    best = record.best
    path = Path(record.study_dir) / "best.yaml"
    config = load_config(path)
    assert config.optim.lr == best["params"]["optim.lr"] and config.epochs == best["params"]["epochs"]
    assert config.name == "s-best" and config.export_onnx  # a retrain exports the model as usual
    retrained = train(config.model_copy(update={"export_onnx": False}), stream=None)
    assert retrained.metrics["best_valid_accuracy"] == best["value"]


@pytest.mark.slow
def test_a_study_given_a_relative_data_folder_retrains_and_resumes_from_another_folder(
    dataset: Path, space: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = ["--set", "model.backbone=tiny", "--set", "model.pretrained=false", "--no-tracking"]
    monkeypatch.chdir(dataset.parent)
    started = kennel("tune", "--data", dataset.name, "--space", space, "--study", "moved", "--trials", "1", *tiny)
    assert started.exit_code == 0, started.output
    record = load_study_record("moved")
    (job,) = list_jobs(study="moved")
    best = Path(record.study_dir) / "best.yaml"
    written = {
        "study.json": record.base["data"]["root"],
        "job.json": job.config["data"]["root"],
        "config.yaml": yaml.safe_load(job.folder.config_file.read_text())["data"]["root"],
        "best.yaml": yaml.safe_load(best.read_text())["data"]["root"],
    }
    assert written == dict.fromkeys(written, str(dataset))
    assert f"retrain: kennel train --config {best}" in started.output

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    retrained = kennel("train", "--config", best, "--set", "export_onnx=false")
    assert retrained.exit_code == 0, retrained.output
    assert load_job("moved-best").status == "completed"
    resumed = kennel("tune", "--study", "moved", "--trials", "2")
    assert resumed.exit_code == 0, resumed.output
    assert load_study_record("moved").counts == {"complete": 2}


@pytest.mark.slow
def test_the_study_report_has_every_section(dataset: Path, space: Path) -> None:
    from kennel.tune.report import write_study_report

    run(dataset, space, trials=4, pruner="none")
    html = write_study_report("s").read_text()
    for section in ("study", "trials", "history", "intermediate", "parallel"):
        assert f'<section id="{section}" data-status="ok">' in html
    assert '<section id="importances" data-status="missing">' in html  # 4 trials: too few to mean anything
    assert html.count('<img class="figure"') == 3
    assert all(f">s-t00{n}</a>" in html for n in range(4))  # each trial links to its job's report


class CountingFeatures(torch.nn.Module):
    """A backbone's feature module that counts the photos it sees, and sees none before ``both_missed`` is set.
    The count and the event live on the class: the engine runs a copy of the module, every copy shares them, and
    an event held by the module itself could not be copied (its lock cannot)."""

    seen: ClassVar[list[int]] = []
    both_missed: ClassVar[threading.Event] = threading.Event()

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        CountingFeatures.seen.clear()
        CountingFeatures.both_missed.clear()

    @property
    def photos(self) -> int:
        return sum(CountingFeatures.seen)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not CountingFeatures.both_missed.wait(30):
            raise TimeoutError("the second caller never looked for the cache entry")
        CountingFeatures.seen.append(len(images))
        return self.inner(images)


def test_concurrent_trials_compute_a_feature_cache_entry_once(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from kennel import features as features_module
    from kennel.data.fingerprint import split_fingerprint
    from kennel.data.layout import load_layout
    from kennel.features import cached_features, feature_key
    from kennel.inference import features_graph, open_engine
    from kennel.models import create_model, get_backbone

    split = load_layout(dataset)["train"]
    preprocessing = get_backbone("tiny").preprocessing
    features = CountingFeatures(create_model("tiny", num_classes=3, pretrained=False).features)
    graph = features_graph(features, "tiny", "random", preprocessing.input_size)
    key = feature_key("train", split_fingerprint(split), "tiny", "random", preprocessing, "fp32")
    start, results = threading.Barrier(2), []
    # The features are computed only once both callers have found the entry missing, so the second one is bound
    # to meet the first at the lock, whichever starts first and however fast this machine is.
    missed, load = set(), features_module._load_cached

    def lookup(path: Path):
        found = load(path)
        if found is None:
            missed.add(threading.get_ident())
            if len(missed) == 2:
                CountingFeatures.both_missed.set()
        return found

    monkeypatch.setattr(features_module, "_load_cached", lookup)

    def engine():
        return open_engine(graph, torch.device("cpu"), "torch-eager")

    def ask() -> None:
        start.wait()
        results.append(cached_features(engine, split, key, preprocessing, tmp_path))

    callers = [threading.Thread(target=ask) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert sorted(was_cached for _, was_cached in results) == [False, True]
    assert features.photos == len(split.files)  # one pass over the photos, not two
    assert torch.equal(results[0][0].features, results[1][0].features)


@pytest.mark.slow
def test_machines_share_a_study_through_a_database(dataset: Path, space: Path, tmp_path: Path, monkeypatch) -> None:
    """Two kennel homes (two machines) on one database: the second joins with the study's stored settings."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    request = TuneRequest("shared", space, base(dataset), {"pruner": "none"}, {"trials": 2}, storage=url)
    first = tune(request, stream=None)
    assert not (Path(first.study_dir) / "journal.log").exists()
    monkeypatch.setenv("KENNEL_HOME", str(tmp_path / "second-machine"))
    joined = tune(TuneRequest("shared", base=base(dataset), session={"trials": 4}, storage=url), stream=None)
    assert joined.settings == first.settings  # the space and pruner came from the database, not the defaults
    assert joined.counts == {"complete": 4}
    assert len(list_jobs(study="shared")) == 2  # this machine ran the other two


@pytest.mark.slow
def test_a_trial_a_rule_stops_before_any_epoch_is_an_outcome_not_the_end(dataset: Path, space: Path):
    """A debugger rule that stops a trial at its first step leaves no objective; the study records that trial as
    failed with the rule's reason and runs the others (grid: lr 0.003, then 0.3, which the rule stops)."""
    debug = {"imports": ["stopping_rule"], "rules": {"StopsHighLearningRates": {"lr_above": 0.1}}}
    request = TuneRequest(
        study="rule",
        space=space,
        base=base(dataset, debug=debug, optim={"warmup_epochs": 0}),  # the first step runs at the trial's rate
        settings={"strategy": "grid", "pruner": "none"},
        session={"trials": 4, "parallel": 1},
    )
    study = tune(request, stream=None)
    assert study.status == "completed"
    trials = trials_of("rule")
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.params["optim.lr"] == 0.3 for t in failed)
    assert all("StopsHighLearningRates" in t.user_attrs[ERROR] for t in failed)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    stopped = [job for job in list_jobs(study="rule") if job.status == "stopped"]
    assert stopped and all("StopsHighLearningRates" in job.stop_reason for job in stopped)


def test_a_trial_job_left_running_by_a_killed_process_is_closed_with_its_mlflow_run() -> None:
    """After kill -9 the trial's record says running and its MLflow run RUNNING; the study's recovery ends both."""
    from kennel.jobs import create_job
    from kennel.mlflow_store import get_client
    from kennel.observers.tracking import MLflowTracker
    from kennel.tune.worker import _close_job

    record = create_job("t003", backbone="tiny", config={"epochs": 1})
    record.status = "running"
    tracker = MLflowTracker(record, {"epochs": 1}, experiment="killed")
    run_id = tracker._start_run()
    record.mlflow_run_id = run_id
    record.save()
    assert get_client().get_run(run_id).info.status == "RUNNING"

    _close_job(record.id, 3)
    closed = load_job(record.id)
    assert closed.status == "stopped" and closed.ended is not None and "trial 3" in closed.stop_reason
    run = get_client().get_run(run_id)
    assert run.info.status == "KILLED" and "trial 3" in run.data.tags["kennel.stop_reason"]


def test_a_trial_job_killed_before_its_first_step_is_closed_too() -> None:
    """The kill fell between the job's record being created and its start: the record would say created forever."""
    from kennel.jobs import create_job
    from kennel.tune.worker import _close_job

    record = create_job("t005", backbone="tiny", config={"epochs": 1})
    assert record.status == "created"
    _close_job(record.id, 5)
    closed = load_job(record.id)
    assert closed.status == "stopped" and closed.ended is not None and "trial 5" in closed.stop_reason


def test_a_trial_killed_after_its_record_completed_still_gets_its_mlflow_run_ended() -> None:
    """The kill fell between the job's last write and its tracker closing the run: the record is whole, the run
    is ended FINISHED on recovery."""
    from kennel.jobs import create_job
    from kennel.mlflow_store import get_client
    from kennel.observers.tracking import MLflowTracker
    from kennel.tune.worker import _close_job

    record = create_job("t004", backbone="tiny", config={"epochs": 1})
    record.mlflow_run_id = MLflowTracker(record, {"epochs": 1}, experiment="killed")._start_run()
    record.status = "completed"
    record.save()
    _close_job(record.id, 4)
    assert load_job(record.id).status == "completed"
    assert get_client().get_run(record.mlflow_run_id).info.status == "FINISHED"
