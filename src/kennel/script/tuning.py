"""Trials of the ``script`` kind (``kennel tune --script``): each trial runs the user's script as a ``kennel run``
job with the trial's hyperparameters, as SageMaker's HyperparameterTuner runs a training job per trial.

The objective is a metric read from the script's log lines: its last value is the trial's value, and every value
before it is an intermediate value the pruner judges (a pruned trial's script is stopped). The best trial's
hyperparameters are handed back in the form the script takes (``--name value``) and as a ``kennel run`` command.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from kennel.atomic import atomic_write_text
from kennel.config import deep_merge
from kennel.findings import labelled, relay
from kennel.script.config import ScriptConfig
from kennel.script.environment import command_arguments
from kennel.script.metrics import MetricPoint
from kennel.script.observers import ScriptObserver, ScriptRun
from kennel.tune.errors import TuneError
from kennel.tune.objective import TrialResult
from kennel.tune.space import SearchSpace
from kennel.tune.training import StudyTeller, init_tracking
from kennel.tune.trials import BestValues, TrialKind
from kennel.validation import one_line

if TYPE_CHECKING:
    import optuna

    from kennel.tune.settings import StudySettings
    from kennel.tune.study import StudyRecord

BEST_FILE = "best.json"
DEFAULT_REPORTS = 10  # a Hyperband pruner's resource when neither the space nor the base says how many epochs


class ScriptPruner(ScriptObserver):
    """Reports each value of the objective as the trial's intermediate value, and stops the script when the
    study's pruner says the trial is not worth finishing."""

    def __init__(self, trial: optuna.Trial, objective: str, pruner: str) -> None:
        self.trial = trial
        self.objective = objective
        self.pruner = pruner
        self.last: float | None = None

    def on_metric(self, run: ScriptRun, point: MetricPoint) -> None:
        if point.name != self.objective or run.should_stop:
            return
        self.last = point.value
        self.trial.report(point.value, point.step)
        if self.trial.should_prune():
            reason = f"pruned by the {self.pruner} pruner at report {point.step}: {self.objective}={point.value:.4g}"
            run.request_stop(reason, status="pruned")


class FindingLines(ScriptObserver):
    """A trial's output stays in its job's logs, but for what the rules found: those lines are said among the
    trial lines, labelled with the trial, as the findings of kennel's own training trials are."""

    PREFIXES = ("debugger rule ", "profiler rule ")

    def on_line(self, run: ScriptRun, line: str, stream: str) -> None:
        if stream == "stderr" and line.startswith(self.PREFIXES):
            relay(line.rstrip())


class ScriptTrials(TrialKind):
    description = "each trial the user's own script (kennel run) with the trial's hyperparameters"

    def check_base(self, base: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        """The run settings under every trial must be valid (the script and its channels there), and name the
        metric the study optimizes; every space value is a hyperparameter the script gets as ``--name value``."""
        config = _config(base)
        if not config.metrics:
            raise TuneError("no metrics: pass --metric NAME=REGEX for the objective, as metric_definitions do")
        return config.model_dump(mode="json")

    def baseline(self, resolved: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        return space.contains(resolved.get("hyperparameters") or {})

    def max_epochs(self, base: dict[str, Any], space: SearchSpace) -> int:
        given = (base.get("hyperparameters") or {}).get("epochs")
        fallback = given if isinstance(given, (int, float)) and not isinstance(given, bool) else DEFAULT_REPORTS
        return max(int(space.upper("epochs", fallback)), 1)

    def prepare(self, record: StudyRecord, stream: TextIO | None) -> None:
        if record.base.get("tracking", True):
            init_tracking(record, stream)

    def run(
        self, study: optuna.Study, trial: optuna.Trial, record: StudyRecord, settings: StudySettings
    ) -> TrialResult:
        from kennel.script.job import run_script

        told = StudyTeller.begin(study, trial, record, settings)
        try:
            config = trial_config(record.base, told.params, told.name)
        except TuneError as exc:
            return told.failed(str(exc))
        pruner = ScriptPruner(trial, settings.objective, settings.pruner)
        with labelled(f"trial {trial.number}"):  # the hook's findings say which trial, among the trial lines
            job = run_script(config, observers=[pruner, FindingLines()], study=record.name, echo=False)
        return told.outcome(job, settings.objective, pruner.last)

    def write_best(self, record: StudyRecord, trial: optuna.trial.FrozenTrial) -> BestValues:
        """``best.json``: the best hyperparameters (all of them, the fixed ones too) and the arguments the
        script gets; the retrain is ``kennel run`` with them."""
        config = trial_config(record.base, dict(trial.params), f"{record.name}-best")
        path = record.path / BEST_FILE
        best = {
            "study": record.name,
            "trial": trial.number,
            "objective": record.study_settings.objective,
            "value": trial.value,
            "hyperparameters": config.hyperparameters,
            "arguments": command_arguments(config.hyperparameters),
        }
        atomic_write_text(path, json.dumps(best, indent=2) + "\n")
        return BestValues(path, retrain_command(config), shlex.join(best["arguments"]))

    def base_value(self, record: StudyRecord, parameter: str) -> Any:
        return (record.base.get("hyperparameters") or {}).get(parameter)


def _config(settings: dict[str, Any]) -> ScriptConfig:
    try:
        return ScriptConfig.model_validate(settings)
    except ValidationError as exc:
        raise TuneError(f"invalid run settings: {one_line(exc)}") from None


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str) -> ScriptConfig:
    """A trial's run settings: the study's base with the trial's hyperparameters on top of the fixed ones."""
    return _config(deep_merge(base, {"hyperparameters": dict(params), "name": name}))


def retrain_command(config: ScriptConfig) -> str:
    """``kennel run`` with these settings, as a person would type it."""
    words = ["kennel", "run", config.entry_point, "--source-dir", str(config.source_dir)]
    for channel, folder in sorted(config.channels.items()):
        words += ["--channel", f"{channel}={folder}"]
    for name, value in sorted(config.hyperparameters.items()):
        words += ["--hp", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    for metric in config.metrics:
        words += ["--metric", f"{metric.name}={metric.regex}"]
    if config.user_args:
        words += ["--", *config.user_args]
    return shlex.join(words)
