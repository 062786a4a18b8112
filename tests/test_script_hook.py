"""The smdebug-compatible hook inside a user's script (kennel.script.hook): the import names SageMaker scripts
write, the events it turns their loop into for kennel's debugger, the step timeline, stopping by a rule, and the
placeholders for the SageMaker SDK's names. Scripts in the real shape (tests/script_hook_train.py) run in their
own process, as ``kennel run`` starts them: shim folders first on PYTHONPATH, the settings in KENNEL_HOOK_CONFIG."""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kennel.debugger import load_records
from kennel.debugger.config import DebugConfig
from kennel.jsonl import read_jsonl
from kennel.script import shim_paths, shims
from kennel.script.contract import HOOK_CONFIG_ENV, STOPPED_BY_RULE
from kennel.script.hook_settings import HookSettings

SCRIPT = Path(__file__).with_name("script_hook_train.py")
QUIET = {"LossNotDecreasing": {"stop": False}}  # random labels: the validation loss rises on purpose


def settings(job: Path, preset: str = "light", rules: dict | None = None, **modes) -> HookSettings:
    """A job folder's hook settings, written where ``kennel run`` writes them."""
    hook = HookSettings(
        job_id=job.name,
        debug=DebugConfig(preset=preset, rules=rules or {}, modes=modes),
        debug_dir=job / "debug",
        profiler_steps=job / "profiler" / "steps.jsonl",
        stop_file=job / "stop.json",
    )
    hook.write(job / "input" / "config" / "hook.json")
    return hook


def run_script(job: Path | None, *args: str) -> subprocess.CompletedProcess:
    """The test script in its own process, as ``kennel run`` starts it (``job`` None: run by hand, no kennel)."""
    env = {k: v for k, v in os.environ.items() if k not in (HOOK_CONFIG_ENV, "RANK", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(shim_paths())
    if job is not None:
        env[HOOK_CONFIG_ENV] = str(job / "input" / "config" / "hook.json")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, cwd=SCRIPT.parent
    )


def mode_steps(stderr: str) -> dict[str, int]:
    line = next(line for line in stderr.splitlines() if line.startswith("mode steps: "))
    return json.loads(line.removeprefix("mode steps: "))


# --- a script in its own process ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_script_feeds_the_debugger_and_the_step_timeline(tmp_path: Path):
    job = tmp_path / "job"
    settings(job, rules=QUIET)
    done = run_script(job, "--random-labels", "true", "--epochs", "6")
    assert done.returncode == 0, done.stderr
    # 64 samples in batches of 16: 4 training steps and 4 validation steps per epoch, then a test pass of 4.
    steps = mode_steps(done.stderr)
    assert (steps["TRAIN"], steps["EVAL"]) == (24, 28)
    records = load_records(job)
    counts = records.losses.groupby("mode").size().to_dict()
    assert counts == {"TRAIN": 24, "EVAL": 28}  # every step's loss, EVAL's too
    assert sorted(records.losses[records.losses["mode"] == "TRAIN"]["step"]) == list(range(24))
    collections = set(records.frame[records.frame["mode"] == "TRAIN"]["collection"])
    assert collections == {"losses", "weights", "biases", "gradients", "inputs"}  # light: the default collections
    assert "0.weight/grad" in records.tensor_names("gradients")
    # A training phase and the validation after it are an epoch: the validation loss rose while the training
    # loss fell, which is what Overfit looks for.
    assert records.rules["Overfit"]["status"] == "issues found", records.rules["Overfit"]
    assert "Overfit" in {f.rule for f in records.findings if f.fired}
    assert "debugger rule Overfit:" in done.stderr
    timeline, _ = read_jsonl(job / "profiler" / "steps.jsonl")
    assert [r["step"] for r in timeline] == list(range(1, 25))
    assert {r["epoch"] for r in timeline} == set(range(1, 7))
    for record in timeline:
        phases = [record[p] for p in ("data", "transfer", "forward", "backward", "optimizer")]
        assert min(phases) >= 0 and sum(phases) == pytest.approx(record["wall"])
    assert not (job / "stop.json").exists()


@pytest.mark.slow
def test_a_rule_with_stop_set_ends_the_script_with_exit_status_3(tmp_path: Path):
    job = tmp_path / "job"
    settings(job)  # ExplodingTensor stops a job by default
    done = run_script(job, "--optimizer", "sgd", "--lr", "1e3", "--samples", "256", "--epochs", "3")
    assert done.returncode == STOPPED_BY_RULE, done.stderr
    stop = json.loads((job / "stop.json").read_text())
    assert stop["rule"] == "ExplodingTensor"
    assert stop["reason"].startswith("debugger rule ExplodingTensor: ")
    assert "Test set" not in done.stderr  # it ended in its first epoch, before its test pass
    records = load_records(job)
    assert records.rules["ExplodingTensor"]["status"] == "issues found"
    assert any(f.rule == "ExplodingTensor" and f.fired for f in records.findings)


@pytest.mark.slow
def test_a_script_run_by_hand_runs_with_the_debugger_off(tmp_path: Path):
    done = run_script(None, "--epochs", "1")  # its SageMaker imports succeed though the SDK is not installed
    assert done.returncode == 0, done.stderr
    assert "kennel: the debugger is off" in done.stderr
    said = done.stderr[done.stderr.index("kennel: the debugger is off") :].splitlines()[:2]
    assert all(len(line) <= 80 for line in said) and "step times" in said[1], said  # folded at its words
    assert "Test set: Average loss" in done.stderr
    assert set(mode_steps(done.stderr).values()) == {0}  # nothing is counted


# --- the import names -----------------------------------------------------------------------------------


@pytest.fixture
def shimmed(monkeypatch: pytest.MonkeyPatch):
    """The shim folders first on this process's path, as in a script's; whatever they imported is forgotten
    afterwards."""
    before, finders = set(sys.modules), list(sys.meta_path)
    for path in reversed(shim_paths()):
        monkeypatch.syspath_prepend(path)
    importlib.invalidate_caches()
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("smdebug", "sagemaker"):
            del sys.modules[name]
    sys.meta_path[:] = finders


def test_the_smdebug_names_scripts_import_resolve_to_kennel(shimmed):
    smd = importlib.import_module("smdebug.pytorch")
    from smdebug import modes
    from smdebug.core.modes import ModeKeys
    from smdebug.profiler.utils import str2bool
    from smdebug.pytorch import Hook, get_hook
    from smdebug.pytorch import modes as pytorch_modes

    from kennel.script.hook import api, names

    assert smd.Hook is Hook is api.Hook and get_hook is api.get_hook
    assert modes is pytorch_modes is ModeKeys is names.ModeKeys
    assert [m.name for m in smd.modes] == ["TRAIN", "EVAL", "PREDICT", "GLOBAL"]
    assert str2bool is names.str2bool
    assert smd.SaveConfig(save_interval=10).save_interval == 10
    assert smd.ReductionConfig(reductions=["mean"], norms=["l2"]).norms == ["l2"]
    assert smd.CollectionConfig(name="weights").name == "weights"
    with pytest.raises(TypeError):
        smd.SaveConfig(save_every=10)


def test_str2bool_reads_flags_as_argparse_types():
    from kennel.script.hook.names import str2bool

    for text, value in (("true", True), ("Yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)):
        assert str2bool(text) is value
    assert str2bool(True) is True
    with pytest.raises(ValueError):
        str2bool("maybe")
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--flag", type=str2bool)
    assert parser.parse_args(["--flag", "on"]).flag is True
    with pytest.raises(argparse.ArgumentError, match="expected a boolean"):
        parser.parse_args(["--flag", "maybe"])


def test_sagemaker_names_are_placeholders_that_refuse_real_work(shimmed):
    import sagemaker
    from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, ProfilerConfig, Rule, rule_configs
    from sagemaker.pytorch import PyTorch
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner  # noqa: F401

    assert Path(sagemaker.__file__).is_relative_to(shims.SAGEMAKER_SHIM)
    rules = [Rule.sagemaker(rule_configs.vanishing_gradient()), Rule.sagemaker(rule_configs.overfit())]
    DebuggerHookConfig(hook_parameters={"train.save_interval": "100"}, collection_configs=[CollectionConfig("x")])
    ProfilerConfig(system_monitor_interval_millis=500)
    estimator = PyTorch(entry_point="train_model.py", rules=rules, hyperparameters={"lr": 0.01})
    with pytest.raises(sagemaker.SageMakerNotInstalled, match="SageMaker Python SDK is not installed"):
        estimator.fit({"training": "s3://bucket/train"})
    assert importlib.import_module("sagemaker.workflow.steps").TrainingStep is not None  # any submodule


def test_shim_paths_add_sagemaker_only_where_the_sdk_is_missing(monkeypatch: pytest.MonkeyPatch):
    assert shim_paths()[0] == str(shims.SMDEBUG_SHIM)
    assert (shims.SMDEBUG_SHIM / "smdebug" / "pytorch" / "__init__.py").is_file()
    monkeypatch.setattr(shims, "sagemaker_installed", lambda: True)
    assert shim_paths() == [str(shims.SMDEBUG_SHIM)]
    monkeypatch.setattr(shims, "sagemaker_installed", lambda: False)
    assert shim_paths() == [str(shims.SMDEBUG_SHIM), str(shims.SAGEMAKER_SHIM)]


def test_kennels_own_placeholders_are_not_the_sdk(shimmed):
    assert not shims.sagemaker_installed()


def test_hook_settings_round_trip(tmp_path: Path):
    hook = settings(tmp_path / "job", preset="full", rules={"Overfit": {"ratio_threshold": 0.2}})
    assert HookSettings.read(tmp_path / "job" / "input" / "config" / "hook.json") == hook
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**json.loads(hook.model_dump_json()), "surprise": 1}))
    with pytest.raises(ValueError, match="surprise"):
        HookSettings.read(path)


# --- the hook in this process ---------------------------------------------------------------------------


@pytest.fixture
def hook_api(monkeypatch: pytest.MonkeyPatch):
    """kennel's hook module with no hook made yet in this process; what a test makes is closed afterwards."""
    from kennel.script.hook import api

    monkeypatch.setattr(api, "_loop", None)
    monkeypatch.setattr(api, "_hook", None)
    monkeypatch.delenv(HOOK_CONFIG_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    yield api
    if api._loop is not None:
        api._loop.close()
        atexit.unregister(api._loop._at_exit)


def use(monkeypatch: pytest.MonkeyPatch, job: Path) -> None:
    """Make this process's hook from ``job``'s settings, as a script's is."""
    monkeypatch.setenv(HOOK_CONFIG_ENV, str(job / "input" / "config" / "hook.json"))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y = torch.randint(0, 3, (8,), generator=generator)
        x = torch.randn(8, 8, generator=generator)
        x[torch.arange(8), y] += 2.0
        out.append((x, y))
    return out


def train_steps(model, criterion, optimizer, data) -> None:
    for x, y in data:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


def eval_steps(model, criterion, data) -> None:
    with torch.no_grad():
        for x, y in data:
            criterion(model(x), y)


def test_without_settings_every_call_works_and_nothing_is_captured(hook_api, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hook_api.get_hook() is None
    hook = hook_api.get_hook(create_if_not_exists=True)
    assert hook is hook_api.get_hook() and isinstance(hook, hook_api.Hook)
    model, criterion = mlp(), nn.CrossEntropyLoss()
    hook.register_module(model)
    hook.register_loss(criterion)
    hook.set_mode(hook_api.ModeKeys.TRAIN)
    train_steps(model, criterion, torch.optim.SGD(model.parameters(), lr=0.1), batches(2))
    hook.save_scalar("accuracy", 0.5, sm_metric=True)
    hook.save_tensor("x", torch.ones(3))
    hook.record_tensor_value("loss", torch.tensor(1.0))
    assert hook.get_mode().name == "TRAIN"
    hook.close()
    assert list(tmp_path.iterdir()) == []
    assert hook_api.Hook(out_dir="/opt/ml/output/tensors", include_collections=["weights"]) is hook_api.get_hook()


def test_steps_are_counted_per_mode_and_phases_make_epochs(hook_api, tmp_path: Path, monkeypatch):
    from kennel.script.hook.names import ModeKeys

    job = tmp_path / "job"
    settings(job, rules=QUIET, TRAIN={"save_interval": 2})
    use(monkeypatch, job)
    hook = hook_api.Hook.create_from_json_file()
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hook.register_module(model)
    hook.register_module(model)  # twice: one registration
    hook.register_loss(criterion)
    for epoch in range(2):
        hook.set_mode(ModeKeys.TRAIN)
        train_steps(model, criterion, optimizer, batches(3, seed=epoch))
        hook.set_mode(ModeKeys.EVAL)
        eval_steps(model, criterion, batches(2, seed=10))
    hook.set_mode(ModeKeys.PREDICT)
    with torch.no_grad():
        model(torch.randn(4, 8))
    assert hook.mode_steps == {ModeKeys.GLOBAL: 0, ModeKeys.TRAIN: 6, ModeKeys.EVAL: 4, ModeKeys.PREDICT: 1}
    assert hook.step == 11
    hook.close()
    loop = hook_api._loop
    epochs = loop.debugger.history.epochs
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all({"train_loss", "valid_loss", "train_accuracy", "valid_accuracy"} <= set(e) for e in epochs)
    assert [e["global_step"] for e in epochs] == [3, 6]
    records = load_records(job)
    assert records.losses.groupby("mode").size().to_dict() == {"EVAL": 4, "TRAIN": 6}
    assert records.steps("TRAIN", "weights") == [0, 2, 4]
    assert records.rules  # written at the end
    timeline, _ = read_jsonl(job / "profiler" / "steps.jsonl")
    assert [(r["step"], r["epoch"]) for r in timeline] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]


def test_unset_mode_follows_the_model_and_a_functional_loss_is_recorded(hook_api, tmp_path: Path, monkeypatch):
    job = tmp_path / "job"
    settings(job, preset="full", rules=QUIET)
    use(monkeypatch, job)
    hook = hook_api.get_hook(create_if_not_exists=True)
    model = mlp()
    hook.register_hook(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for x, y in batches(4):  # no set_mode: a model in training mode with gradients on trains
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        hook.record_tensor_value(tensor_name="loss", tensor_value=loss)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for x, y in batches(2):
            hook.record_tensor_value("loss", F.cross_entropy(model(x), y))
    hook.save_scalar("valid_accuracy", 0.75)
    hook.close()
    assert hook.get_mode().name == "GLOBAL" and hook.mode_steps == {hook.get_mode(): 6}
    records = load_records(job)
    assert records.losses.groupby("mode").size().to_dict() == {"EVAL": 2, "TRAIN": 4}
    scalars = records.frame[records.frame["collection"] == "scalars"]
    assert scalars["tensor"].tolist() == ["valid_accuracy"] and scalars["mean"].tolist() == [0.75]
    assert scalars["mode"].tolist() == ["EVAL"]
    assert "1/output" in records.tensor_names("activations")  # full: the ReLU's output


def test_weights_updated_by_hand_are_read_when_the_backward_pass_ends(hook_api, tmp_path: Path, monkeypatch):
    from kennel.script.hook.names import ModeKeys

    job = tmp_path / "job"
    settings(job, rules=QUIET, TRAIN={"save_interval": 1})
    use(monkeypatch, job)
    hook = hook_api.Hook.create_from_json_file()
    model, criterion = mlp(), nn.CrossEntropyLoss()
    hook.register_module(model)
    hook.register_loss(criterion)
    hook.set_mode(ModeKeys.TRAIN)
    for x, y in batches(3):  # no optimizer: plain SGD by hand
        model.zero_grad()
        criterion(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    hook.close()
    records = load_records(job)
    assert records.steps("TRAIN", "gradients") == [0, 1, 2]
    _, updates = records.values("0.weight", "update")
    assert (updates > 0).all()  # the step's change, measured across the update by hand


def test_a_stop_rule_raises_system_exit_3_at_the_next_hook_point(hook_api, tmp_path: Path, monkeypatch):
    from kennel.script.hook.names import ModeKeys
    from kennel.script.hook.parts import StoppedByRule

    job = tmp_path / "job"
    settings(job)
    use(monkeypatch, job)
    hook = hook_api.Hook.create_from_json_file()
    model, criterion = mlp(), nn.CrossEntropyLoss()
    hook.register_module(model)
    hook.register_loss(criterion)
    hook.set_mode(ModeKeys.TRAIN)
    with pytest.raises(SystemExit) as stopped:
        train_steps(model, criterion, torch.optim.SGD(model.parameters(), lr=1e3), batches(40))
    assert isinstance(stopped.value, StoppedByRule) and stopped.value.code == STOPPED_BY_RULE
    assert json.loads((job / "stop.json").read_text())["rule"] == "ExplodingTensor"
    assert hook_api._loop.closed
    assert load_records(job).rules["ExplodingTensor"]["status"] == "issues found"


def test_a_rank_other_than_0_writes_its_own_steps_and_runs_no_debugger(hook_api, tmp_path: Path, monkeypatch):
    job = tmp_path / "job"
    settings(job)
    use(monkeypatch, job)
    monkeypatch.setenv("RANK", "1")
    hook = hook_api.Hook.create_from_json_file()
    model, criterion = mlp(), nn.CrossEntropyLoss()
    hook.register_module(model)
    hook.register_loss(criterion)
    train_steps(model, criterion, torch.optim.SGD(model.parameters(), lr=0.1), batches(3))
    hook.close()
    assert hook_api._loop.debugger is None and not (job / "debug").exists()
    timeline, _ = read_jsonl(job / "profiler" / "steps-rank1.jsonl")
    assert [r["step"] for r in timeline] == [1, 2, 3]
    assert not (job / "profiler" / "steps.jsonl").exists()
