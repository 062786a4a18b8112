"""Every debugger rule: provoked on a tiny model broken on purpose, silent on a healthy run, and a contract every
registered rule must meet."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from debug_models import QUIET, fired, fit, healthy_model, images, mlp, vectors
from torch import nn

from kennel.debugger.config import DebugConfig
from kennel.debugger.hooks import Debugger
from kennel.debugger.report import rules_summary
from kennel.debugger.rules import BUILTIN_RULES, DEBUGGER_RULES
from kennel.debugger.window import History, Window
from kennel.engine import Observer
from kennel.findings import ISSUES_FOUND, NO_DATA, NO_ISSUES, NOT_APPLICABLE, STATUSES, Finding, load_findings
from kennel.rules import Rule


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory):
    """One healthy run with every collection captured, shared by the tests that need one."""
    folder = tmp_path_factory.mktemp("healthy") / "debug"
    state, debugger = fit(folder, healthy_model(), images(), images(seed=1), epochs=5, lr=0.01, optimizer="adam")
    return state, debugger


def test_healthy_run_has_no_findings(healthy):
    state, debugger = healthy
    assert state.status == "completed"
    assert fired(debugger) == set(), [f.message for f in debugger.runner.fired.values()]
    statuses = {name: row["status"] for name, row in debugger.runner.statuses().items()}
    assert set(statuses.values()) <= {NO_ISSUES}, statuses  # each rule judged the run, none was left out
    assert not [f for f in load_findings(debugger.folder / "findings.jsonl") if f.fired]


# --- one broken run per rule ------------------------------------------------------------------------------


def _exploding(folder: Path):
    # A learning rate no network survives: the weights overflow within a few steps.
    return fit(folder, mlp(), vectors(), vectors(seed=1), lr=1e30, epochs=1, rules={"ExplodingTensor": {"stop": True}})


def _vanishing(folder: Path):
    model = mlp(activation=nn.Sigmoid)
    with torch.no_grad():
        model[0].bias.fill_(60.0)  # sigmoid(60) is 1 to the last bit: no gradient reaches the first layer
    return fit(folder, model, vectors(), vectors(seed=1), epochs=1)


def _zero_layer(folder: Path):
    model = mlp()
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.zero_()
    return fit(folder, model, vectors(), vectors(seed=1), epochs=1)


def _huge_steps(folder: Path):
    return fit(folder, mlp(), vectors(), vectors(seed=1), lr=1e4, epochs=1)


def _dead_relu(folder: Path):
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-50.0)
    return fit(folder, model, vectors(), vectors(seed=1), epochs=1)


def _saturated(folder: Path):
    model = mlp(activation=nn.Tanh)
    with torch.no_grad():
        model[0].bias.fill_(20.0)
    return fit(folder, model, vectors(), vectors(seed=1), epochs=1)


def _imbalanced(folder: Path):
    labels = torch.cat([torch.zeros(570, dtype=torch.long), torch.tensor([1] * 15 + [2] * 15)])
    return fit(folder, mlp(), vectors(labels=labels), vectors(seed=1), epochs=1)


def _flat_loss(folder: Path):
    model = mlp()
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.zero_()
    # No learning at all and constant outputs: every batch's loss is log(3), to the last bit.
    return fit(folder, model, vectors(), vectors(seed=1), lr=0.0, epochs=2, rules={"LossNotDecreasing": {"stop": True}})


def _tiny_training_set(folder: Path):
    generator = torch.Generator().manual_seed(0)
    train = vectors(n=6, dim=32)
    valid = vectors(n=300, dim=32, seed=1, labels=torch.randint(0, 3, (300,), generator=generator))
    model = mlp(dim=32, hidden=64)
    return fit(folder, model, train, valid, lr=0.01, optimizer="adam", epochs=40, batch_size=6)


def _stale(folder: Path):
    return fit(folder, mlp(), vectors(), vectors(seed=1), lr=0.0, epochs=12)


def _stalled(folder: Path):
    now = [0.0]  # the debugger's clock: it moves only where the test moves it
    rules = {**QUIET, "StalledTraining": {"threshold": 0.2}}
    debugger = Debugger(folder, DebugConfig(preset="full", rules=rules), clock=lambda: now[0])

    class StuckStep(Observer):
        def on_batch_end(self, state):
            if state.global_step == 2:
                now[0] += 1.0  # a second passes with no step finished, and the watchdog looks
                debugger.check_clock()

    return fit(folder, mlp(), vectors(n=96), vectors(seed=1), epochs=1, observers=(StuckStep(),), debugger=debugger)


def _variance(folder: Path):
    return fit(folder, mlp(), vectors(), epochs=1, rules={"TensorVariance": {"max_threshold": 1e-4}})


def _frozen(folder: Path):
    model = mlp()
    model[2].weight.requires_grad_(False)  # still held by the optimizer, never updated
    return fit(folder, model, vectors(), vectors(seed=1), epochs=2)


def _unnormalised(folder: Path):
    return fit(folder, healthy_model(), images(normalised=False), epochs=5)  # 500 samples in saved batches


PROVOKE = {
    "ExplodingTensor": _exploding,
    "VanishingGradient": _vanishing,
    "PoorWeightInitialization": _zero_layer,
    "AllZero": _zero_layer,
    "WeightUpdateRatio": _huge_steps,
    "DeadRelu": _dead_relu,
    "SaturatedActivation": _saturated,
    "ClassImbalance": _imbalanced,
    "LossNotDecreasing": _flat_loss,
    "Overfit": _tiny_training_set,
    "Overtraining": _stale,
    "StalledTraining": _stalled,
    "TensorVariance": _variance,
    "UnchangedTensor": _frozen,
    "CheckInputImages": _unnormalised,
}


def test_every_registered_rule_has_a_provoking_test():
    assert set(PROVOKE) == {name for name in DEBUGGER_RULES.names() if not name.startswith("test.")}


@pytest.mark.parametrize("rule", sorted(set(PROVOKE)))
def test_rule_fires_on_its_broken_run_and_says_what_to_do(rule: str, tmp_path: Path):
    state, debugger = PROVOKE[rule](tmp_path / "debug")
    assert rule in fired(debugger), debugger.runner.statuses().get(rule)
    finding = next(f for f in load_findings(tmp_path / "debug" / "findings.jsonl") if f.rule == rule and f.fired)
    assert finding.status == ISSUES_FOUND and finding.mode in ("TRAIN", "EVAL") and finding.step is not None
    assert finding.message and finding.advice and finding.numbers
    assert debugger.runner.statuses()[rule]["status"] == ISSUES_FOUND
    if debugger.runner.rules[[r.name for r in debugger.runner.rules].index(rule)].stop:
        assert state.status == "stopped" and state.stop_reason.startswith(f"debugger rule {rule}:")


def test_exploding_tensor_stops_the_job_at_once(tmp_path: Path):
    state, _ = _exploding(tmp_path / "debug")
    assert state.status == "stopped"
    assert "ExplodingTensor" in state.stop_reason
    assert state.global_step <= 20  # the first or second saved step, not the end of the epoch (19 steps)


def test_class_imbalance_names_the_rare_classes_as_the_dataset_does(tmp_path: Path):
    breeds = ["Beagle", "Siberian husky", "Toy poodle"]
    named = Debugger(tmp_path / "named", DebugConfig(preset="full", rules=QUIET), classes=breeds)
    labels = torch.cat([torch.zeros(570, dtype=torch.long), torch.tensor([1] * 15 + [2] * 15)])
    fit(tmp_path / "named", mlp(), vectors(labels=labels), vectors(seed=1), epochs=1, debugger=named)
    finding = named.runner.fired["ClassImbalance"]
    assert finding.message.endswith("; fewest samples: Siberian husky, Toy poodle (15).")
    assert finding.tensors == ("Siberian husky", "Toy poodle")  # the common class is not among the rare ones
    # A loop that gives no names numbers the classes from 1, as `kennel data check` lists them.
    _, unnamed = _imbalanced(tmp_path / "unnamed")
    assert unnamed.runner.fired["ClassImbalance"].message.endswith("; fewest samples: class 2, class 3 (15).")


def test_class_imbalance_names_the_mispredicted_classes_the_worst_first():
    history = History()
    history.classes.names = ("Beagle", "Siberian husky", "Toy poodle")
    history.classes.train = np.array([200, 200, 200])
    history.classes.valid, history.classes.valid_wrong = np.array([10, 10, 10]), np.array([8, 1, 10])
    finding = DEBUGGER_RULES.build("ClassImbalance", {"samples": 30}).check(history.window("epoch", "EVAL", 9))
    assert finding.fired and finding.tensors == ("Toy poodle", "Beagle")
    assert "of the time: Toy poodle, Beagle (up to 100%)" in finding.message


def test_tensor_variance_within_bounds_and_rules_without_data_say_why(healthy, tmp_path: Path):
    _, debugger = fit(tmp_path / "a", mlp(), vectors(), epochs=1, rules={"TensorVariance": {"max_threshold": 1e6}})
    assert "TensorVariance" not in fired(debugger)
    # Light capture has no activations: the activation rules report why they could not judge.
    _, light = fit(tmp_path / "b", mlp(), vectors(), vectors(seed=1), epochs=1, preset="light")
    statuses = light.runner.statuses()
    assert statuses["DeadRelu"]["status"] == NOT_APPLICABLE and "--debug full" in statuses["DeadRelu"]["why"]
    assert "the activations collection is off" in statuses["DeadRelu"]["why"]
    assert not fired(light)
    # Activations captured, but none of the kind a rule reads: it says the model has none.
    _, tanh = fit(tmp_path / "c", mlp(activation=nn.Tanh), vectors(), epochs=1)
    status = tanh.runner.statuses()["DeadRelu"]
    assert status["status"] == NOT_APPLICABLE and status["why"].endswith("the layers that train have none."), status


# --- the contract every registered rule meets -------------------------------------------------------------


@pytest.mark.parametrize("name", DEBUGGER_RULES.names())
def test_rule_contract(name: str, healthy):
    cls = DEBUGGER_RULES.get(name)
    assert cls.name == name and dataclasses.is_dataclass(cls) and issubclass(cls, Rule)
    assert cls.describe() and not cls.describe().startswith(cls.__name__ + "(")  # a docstring, not a signature
    assert cls.events and cls.events <= {"save", "steps", "epoch", "clock"}
    rule = DEBUGGER_RULES.build(name)  # every parameter has a default
    assert isinstance(rule.stop, bool)
    with pytest.raises(ValueError, match=re.escape(f"debug.rules.{name}: unknown parameter(s) no_such_parameter")):
        DEBUGGER_RULES.build(name, {"no_such_parameter": 1})
    # On every window of a real run and on an empty history, a rule judges, says why it cannot, or finds.
    _, debugger = healthy
    history: History = debugger.history
    windows = [history.window(event, mode, 5) for event in cls.events for mode in ("TRAIN", "EVAL")]
    windows += [History().window(event, "TRAIN", 0) for event in cls.events if event != "save"]
    for window in windows:
        result = rule.check(window)
        assert result is None or (isinstance(result, Finding) and result.rule == name and result.status in STATUSES)
        if result is None:
            continue
        assert (result.step, result.mode) == (window.step, window.mode)
        assert all(isinstance(v, float) for v in result.numbers.values())
        if result.status in (NOT_APPLICABLE, NO_DATA):
            assert result.message.endswith(".") and not result.advice, result


def test_rules_default_to_sagemakers_documented_thresholds():
    defaults = {n: {f.name: f.default for f in dataclasses.fields(DEBUGGER_RULES.get(n))} for n in DEBUGGER_RULES}
    assert defaults["VanishingGradient"]["threshold"] == 1e-7
    assert defaults["ExplodingTensor"]["only_nan"] is False
    assert (defaults["LossNotDecreasing"]["num_steps"], defaults["LossNotDecreasing"]["diff_percent"]) == (10, 0.1)
    assert defaults["Overfit"]["ratio_threshold"] == 0.1
    assert defaults["StalledTraining"]["threshold"] == 1800
    assert defaults["SaturatedActivation"]["threshold_sigmoid_min"] == -23
    assert defaults["UnchangedTensor"]["rtol"] == 1e-5
    assert "TensorVariance" not in BUILTIN_RULES  # its bounds are the user's to give


def test_config_names_the_rule_and_parameter_that_are_wrong():
    with pytest.raises(ValueError, match=r"debug\.rules\.Overfit: unknown parameter"):
        DebugConfig(rules={"Overfit": {"ratio": 0.2}})
    with pytest.raises(ValueError, match="unknown debugger rule 'Overfitt'"):
        DebugConfig(rules={"Overfitt": {}})
    with pytest.raises(ValueError, match="ratio_threshold"):
        DebugConfig(rules={"Overfit": {"ratio_threshold": "high"}})
    with pytest.raises(ValueError, match=r"debug\.imports: cannot import 'no_such_rules_module'"):
        DebugConfig(imports=["no_such_rules_module"], rules={"MyRule": {}})
    # A module that registers a custom rule is imported first, so the config can select the rule by name.
    selected = DebugConfig(imports=["test_debugger_rules"], rules={"test.LossAboveOne": {"limit": 2.0}})
    assert [r.limit for r in selected.build_rules() if r.name == "test.LossAboveOne"] == [2.0]
    config = DebugConfig(rules={"Overfit": False, "AllZero": {"patience": 3, "stop": True}})
    rules = {r.name: r for r in config.build_rules()}
    assert "Overfit" not in rules and rules["AllZero"].patience == 3 and rules["AllZero"].stop


@DEBUGGER_RULES.rule
@dataclasses.dataclass
class LossAboveOne(Rule[Window]):
    """A custom rule as a user writes one: fires when a saved TRAIN loss is above ``limit``."""

    name = "test.LossAboveOne"
    limit: float = 1.0

    def check(self, window):
        losses = [v for _, v in window.loss_series("TRAIN")]
        if not losses:
            return self.no_data(window, "no TRAIN loss yet")
        if max(losses) > self.limit:
            return self.issue(window, f"loss {max(losses):.3g} above {self.limit}", "lower it", ["loss"],
                              loss=max(losses))  # fmt: skip
        return None


def test_custom_rule_registers_by_name_runs_when_selected_and_can_stop_the_job(tmp_path: Path):
    _, quiet = fit(tmp_path / "a", mlp(), vectors(), epochs=1)
    assert "test.LossAboveOne" not in {r.name for r in quiet.rules}  # custom rules run only when selected
    state, debugger = fit(tmp_path / "b", mlp(), vectors(), epochs=2, rules={"test.LossAboveOne": {"stop": True}})
    assert fired(debugger) >= {"test.LossAboveOne"}
    assert state.status == "stopped" and state.stop_reason.startswith("debugger rule test.LossAboveOne:")
    assert state.global_step == 1  # stopped after the first saved step
    with pytest.raises(ValueError, match="already registered"):
        DEBUGGER_RULES.rule(LossAboveOne)


def test_findings_round_trip_including_nan_evidence(tmp_path: Path):
    finding = Finding("R", ISSUES_FOUND, step=3, tensors=("x",), numbers={"v": math.nan, "w": 1.5}, message="m")
    from kennel.findings import save_findings

    save_findings(tmp_path / "f.jsonl", [finding])
    (tmp_path / "f.jsonl").open("a").write('{"rule": "torn')  # a killed writer's last line
    [back] = load_findings(tmp_path / "f.jsonl")
    assert back.rule == "R" and back.message == "m" and back.tensors == ("x",)
    assert math.isnan(back.numbers["v"]) and back.numbers["w"] == 1.5


def test_quiet_overrides_keep_the_shipped_stop_defaults():
    rules = {r.name: r for r in DebugConfig().build_rules()}
    assert rules["ExplodingTensor"].stop and rules["LossNotDecreasing"].stop and not rules["Overfit"].stop
    assert set(QUIET) <= set(rules)


def test_a_rule_with_too_few_records_says_no_data_and_why_until_it_can_judge(tmp_path: Path):
    # 10 steps per epoch: after the first, LossNotDecreasing has 10 losses, half the two windows it compares.
    _, short = fit(tmp_path / "short", mlp(), vectors(n=320), vectors(n=64, seed=1), epochs=1)
    status = short.runner.statuses()["LossNotDecreasing"]
    assert (
        status["status"] == NO_DATA
        and status["why"] == "EVAL validation passes: 1 so far, of the 20 the rule compares."
    )
    rows, whys = rules_summary(tmp_path / "short")
    assert {row.rule: row.status for row in rows}["LossNotDecreasing"] == NO_DATA
    # The statuses the ended job wrote say the same, of a job that will have no more passes.
    assert whys["LossNotDecreasing"] == "EVAL validation passes: 1 in all, of the 20 the rule compares."
    # One epoch more and the rule judges; the findings show the change.
    _, longer = fit(tmp_path / "longer", mlp(), vectors(n=320), vectors(n=64, seed=1), epochs=2)
    assert longer.runner.statuses()["LossNotDecreasing"]["status"] == NO_ISSUES
    changes = [f for f in load_findings(tmp_path / "longer" / "findings.jsonl") if f.rule == "LossNotDecreasing"]
    assert [(f.status, f.message) for f in changes] == [
        (NO_DATA, "TRAIN steps: 10 so far, of the 20 the rule compares."),
        (NO_ISSUES, ""),
    ]
    # ... and where the loss does not move, the same rule, once it can judge, finds the issue.
    state, _ = _flat_loss(tmp_path / "flat")
    changes = [f.status for f in load_findings(tmp_path / "flat" / "findings.jsonl") if f.rule == "LossNotDecreasing"]
    assert changes == [NO_DATA, ISSUES_FOUND] and state.status == "stopped"


@pytest.mark.parametrize(("later_share", "fires"), [(0.5, True), (0.05, False)])
def test_unchanged_tensor_is_quiet_once_the_schedule_has_brought_the_lr_down(
    later_share: float, fires: bool, tmp_path: Path
):
    from torch.utils.data import DataLoader

    from kennel.engine import LoopConfig, Trainer

    model = mlp()
    model[2].weight.requires_grad_(False)  # a tensor that never learns, held by the optimizer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    # The peak at the first step, then the share of it the schedule keeps for the rest of the run.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step == 0 else later_share)
    debugger = Debugger(tmp_path / "debug", DebugConfig(preset="full", rules=QUIET))
    trainer = Trainer(
        model, optimizer, LoopConfig(epochs=2, device=torch.device("cpu")), [debugger], scheduler=schedule
    )
    trainer.fit(DataLoader(vectors(), batch_size=32), DataLoader(vectors(seed=1), batch_size=32))
    assert ("UnchangedTensor" in fired(debugger)) is fires
