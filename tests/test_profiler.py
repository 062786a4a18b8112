"""The profiler on real training loops: step records, system samples, the rules that must fire (a dataset that
sleeps, one slow step) and those that must not, stopping on a rule, and the torch.profiler window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kennel.config import ProfilerConfig, TraceConfig, load_config
from kennel.engine import LoopConfig, Observer, Trainer
from kennel.engine.clock import PHASES
from kennel.findings import ISSUES_FOUND, NO_DATA, NO_ISSUES, NOT_APPLICABLE, load_findings
from kennel.job import train
from kennel.profiler import PROFILER_RULES, Profile
from kennel.profiler.rules import BUILTIN_RULES
from kennel.profiler.session import ProfilerSession
from kennel.profiler.system import JobProcesses, SystemSampler
from kennel.rules import Rule

TINY = {"model.backbone": "tiny", "model.pretrained": False, "tracking": False, "export_onnx": False}
GPU_RULES = {"BatchSize", "CPUBottleneck", "GPUMemoryIncrease", "LowGPUUtilization", "LoadBalancing"}


class Photos(Dataset):
    """Small ready-made image tensors; ``delay`` seconds of sleep per item (all items, or those in ``slow``)."""

    def __init__(self, count: int = 64, delay: float = 0.0, slow: set[int] | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, 32, 32, generator=generator)
        self.labels = torch.arange(count) % 3
        self.delay = delay
        self.slow = slow

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if self.delay and (self.slow is None or index in self.slow):
            time.sleep(self.delay)
        return self.images[index], self.labels[index]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One compute thread: on a busy machine two threads wait for each other at every operator, and a healthy
    step's compute time would swing a hundredfold with what else runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def convnet() -> nn.Module:
    """Enough convolution that computing, not indexing tensors, takes most of a healthy step."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3),
    )


def profiled_fit(
    folder: Path,
    dataset: Dataset,
    batch_size: int = 8,
    epochs: int = 1,
    config: ProfilerConfig | None = None,
    workers: int = 0,
    extra: list[Observer] = (),
):
    """Fit ``convnet`` on ``dataset`` inside a profiler session; returns the loop's state and the saved profile."""
    session = ProfilerSession(folder, config or ProfilerConfig(interval_s=0.05, report=False))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model = convnet()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        LoopConfig(epochs=epochs, device=torch.device("cpu")),
        [session.observer(loader), *extra],
    )
    state = trainer.fit(loader)
    session.finish()
    return state, Profile.load(folder)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    return profiled_fit(tmp_path_factory.mktemp("healthy"), Photos(96), epochs=2)[1]


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    return profiled_fit(tmp_path_factory.mktemp("sleepy"), Photos(96, delay=0.01))[1]


def test_every_step_is_recorded_with_its_phases_and_the_job_phases_in_order(healthy: Profile) -> None:
    assert [s["step"] for s in healthy.steps] == list(range(1, 25))
    assert [s["epoch"] for s in healthy.steps] == [1] * 12 + [2] * 12
    for step in healthy.steps:
        assert set(PHASES) <= set(step) and step["wall"] >= sum(step[p] for p in PHASES) > 0
    assert [e["event"] for e in healthy.events] == ["job_start", "fit_start", "fit_end", "job_end"]
    assert [phase for phase, *_ in healthy.job_phases()] == ["initialization", "training", "finalization"]
    assert healthy.context["loader_workers"] == 0 and healthy.context["batch_size"] == 8
    breakdown = healthy.loop_breakdown()
    assert breakdown["forward"] + breakdown["backward"] > breakdown["data"]


def test_the_rules_report_on_a_healthy_cpu_run(healthy: Profile) -> None:
    results = healthy.rule_results()
    assert set(results) == set(BUILTIN_RULES)
    for name, finding in results.items():
        if name in GPU_RULES:
            assert finding.status == NOT_APPLICABLE, finding
        elif name in ("MemoryIncrease", "IOBottleneck"):  # system samples: a slow machine takes more of them
            assert finding.status in (NO_ISSUES, NO_DATA) and (finding.status == NO_ISSUES or finding.message)
        elif name != "StepOutlier":  # a shared machine may stall one step of a healthy run
            assert finding.status == NO_ISSUES, finding
    assert results["DataBottleneck"].numbers["data_share"] < 0.5
    assert "GPU" in results["LowGPUUtilization"].message and "CPU" in results["LowGPUUtilization"].message


def test_a_dataset_that_sleeps_makes_the_data_rules_fire(sleepy: Profile) -> None:
    results = sleepy.rule_results()
    data = results["DataBottleneck"]
    assert data.status == ISSUES_FOUND
    assert data.numbers["data_share"] > 0.5
    assert "data.workers=" in data.advice and "feature_cache" in data.advice
    loader = results["Dataloader"]
    assert loader.status == ISSUES_FOUND and loader.numbers["workers"] == 0
    assert "data.workers=" in loader.advice
    assert sleepy.loop_breakdown()["data"] > 12 * 8 * 0.01 * 0.9  # every item slept


def test_an_injected_slow_step_fires_step_outlier(tmp_path: Path) -> None:
    # Items 48-51 form the 13th batch of 4: that step sleeps 0.3 s, the others compute for a few milliseconds.
    _, profile = profiled_fit(tmp_path, Photos(120, delay=0.075, slow={48, 49, 50, 51}), batch_size=4)
    finding = profile.rule_results()["StepOutlier"]
    assert finding.status == ISSUES_FOUND
    assert finding.step == 13 and finding.numbers["slowest_step"] == 13
    assert finding.numbers["slowest_ms"] > 250 and "data" in finding.advice
    marked = PROFILER_RULES.get("StepOutlier")().marked(profile, finding)  # what its plot and the report flag
    assert profile.step_table["step"][marked].tolist() == [13.0]


def test_a_rule_set_to_stop_stops_the_loop(tmp_path: Path) -> None:
    rules = {"DataBottleneck": {"stop": True}}
    config = ProfilerConfig(interval_s=0.05, check_every_s=1e-6, rules=rules, report=False)
    state, profile = profiled_fit(tmp_path, Photos(160, delay=0.01), epochs=3, config=config)
    assert state.status == "stopped"
    assert state.stop_reason.startswith("profiler rule DataBottleneck: Waiting for data takes ")
    assert 10 <= state.global_step < 20  # the rule needs 10 steps, then the loop stops at once
    assert profile.events[-2]["event"] == "fit_end"
    statuses = [f.status for f in profile.findings if f.rule == "DataBottleneck"]
    assert statuses[0] == NO_DATA and ISSUES_FOUND in statuses  # no data until its 10th step


def test_a_training_job_stops_on_a_profiler_rule_set_to_stop(dataset: Path) -> None:
    overrides = {**TINY, "data.root": str(dataset), "epochs": 3, "profiler.check_every_s": 1e-6}
    overrides["profiler.rules.MaxInitializationTime"] = {"threshold_minutes": 1e-4, "stop": True}
    record = train(load_config(overrides=overrides), stream=None)
    assert record.status == "stopped"
    assert record.stop_reason.startswith("profiler rule MaxInitializationTime: The training loop began")
    assert "epochs_run" not in record.metrics  # stopped after the first step's check, mid-epoch


@PROFILER_RULES.rule
@dataclass
class LongSteps(Rule[Profile]):
    """Training steps take longer than ``limit_ms`` at the median (a custom rule, as a user writes one)."""

    name = "test.LongSteps"
    limit_ms: float = 0.0

    def check(self, profile):
        busy = profile.step_table["busy"]
        if len(busy) < 2:
            return self.no_data(profile, f"{len(busy)} step(s) so far; the rule needs 2")
        median = 1000 * float(np.nanmedian(busy))
        if median <= self.limit_ms:
            return self.fine(profile, median_ms=median)
        return self.issue(profile, f"the median step takes {median:.3g} ms", "Raise limit_ms.", median_ms=median)


@pytest.mark.slow
def test_a_custom_rule_from_profiler_imports_fires_and_is_reported(dataset: Path) -> None:
    overrides = {**TINY, "data.root": str(dataset), "epochs": 2, "profiler.imports": ["test_profiler"]}
    quiet = train(load_config(overrides=overrides), stream=None)
    assert "test.LongSteps" not in {f.rule for f in Profile.load(quiet.path).findings}  # not selected: not run
    overrides["profiler.rules"] = {"test.LongSteps": {}}
    record = train(load_config(overrides=overrides), stream=None)
    assert record.status == "completed", record.error
    [issue] = [f for f in load_findings(record.path / "profiler" / "findings.jsonl") if f.fired]
    assert issue.rule == "test.LongSteps" and issue.message.startswith("The median step takes")
    html = (record.path / "profile.html").read_text()
    row = re.search(r"<tr class=\"rule-issues-found\">(.*?)</tr>", html, re.S).group(1)
    assert "test.LongSteps" in row and "a custom rule, as a user writes one" in row and "Raise limit_ms." in row
    assert 'id="rule-plot-test.LongSteps"' in html  # listed with the rules that fired, though it draws nothing


class Marker(Observer):
    def on_batch_end(self, state) -> None:
        pass


def test_the_torch_profiler_window_writes_a_chrome_trace_and_the_top_operators(tmp_path: Path) -> None:
    config = ProfilerConfig(interval_s=0.05, report=False, trace=TraceConfig(enabled=True, wait=2, warmup=1, active=3))
    profiled_fit(tmp_path, Photos(64), extra=[Marker()])
    profiled_fit(tmp_path / "traced", Photos(64), config=config, extra=[Marker()])
    assert not (tmp_path / "profiler" / "trace.json").exists()  # no window unless asked for
    trace = json.loads((tmp_path / "traced" / "profiler" / "trace.json").read_text())
    names = [event.get("name", "") for event in trace["traceEvents"]]
    assert len(names) > 100
    assert sum(name.startswith("ProfilerStep#") for name in set(names)) == 3  # the active steps
    assert "kennel.observer.Marker.on_batch_end" in names  # observer spans show while the profiler records
    assert any(name.startswith("aten::conv") for name in names)
    operators = json.loads((tmp_path / "traced" / "profiler" / "operators.json").read_text())
    assert 0 < len(operators) <= 30 and all(op["calls"] > 0 for op in operators)
    assert [op["self_cpu_s"] for op in operators] == sorted((op["self_cpu_s"] for op in operators), reverse=True)


def test_the_sampler_sees_every_core_the_job_and_its_loader_workers(tmp_path: Path) -> None:
    # Processes this test process already runs (a session's test servers) count as the job's too.
    before = len(psutil.Process().children(recursive=True))
    sampler = SystemSampler(tmp_path / "system.jsonl", interval_s=0.02)
    sampler.start()
    for _ in DataLoader(Photos(48, delay=0.01), batch_size=4, num_workers=2):
        pass
    sampler.stop()
    samples = list(sampler.samples)
    assert len(samples) >= 5
    assert [json.loads(line) for line in (tmp_path / "system.jsonl").read_text().splitlines()] == samples
    assert all(len(s["cpu"]) == psutil.cpu_count() and 0 <= min(s["cpu"]) <= max(s["cpu"]) <= 100 for s in samples)
    assert max(s["workers"] for s in samples) == before + 2  # the loader's worker processes, seen as the job's
    assert all(s["proc_rss_mb"] > 10 and 0 < s["mem"] < 100 for s in samples)
    assert samples[-1]["t"] > samples[0]["t"]


def test_a_killed_jobs_records_stay_readable(tmp_path: Path) -> None:
    profiled_fit(tmp_path, Photos(32))
    folder = tmp_path / "profiler"
    lines = (folder / "timeline.jsonl").read_text().splitlines()
    (folder / "timeline.jsonl").write_text("\n".join(lines[:2]) + "\n")  # killed in its training loop
    with open(folder / "steps.jsonl", "a") as handle:
        handle.write('{"step": 5, "epo')  # mid-write
    profile = Profile.load(tmp_path)
    assert len(profile.steps) == 4 and profile.problems == {"steps.jsonl": "1 unreadable line(s) skipped"}
    assert profile.ended is None
    phases = profile.phase_seconds()
    assert phases["training"] > 0 and phases["finalization"] == 0  # the open phase ends at the last record


def test_a_resumed_jobs_phases_leave_out_the_time_it_lay_dead() -> None:
    events = [
        ("job_start", 0),
        ("fit_start", 2),
        ("job_start", 100),
        ("fit_start", 101),
        ("fit_end", 110),
        ("job_end", 111),
    ]
    steps = [{"step": i, "epoch": 1, "t": t, "wall": 1.0} for i, t in enumerate([4, 7, 10, 104, 110], start=1)]
    profile = Profile(events=[{"event": e, "t": float(t)} for e, t in events], steps=steps)
    assert profile.phase_seconds() == {"initialization": 3.0, "training": 17.0, "finalization": 1.0}
    assert profile.initialization_seconds() == 2.0 and profile.ended == 111.0


def test_under_torchrun_the_job_is_every_process_the_launcher_started() -> None:
    # A stand-in for torchrun's agent: it starts two "ranks" that sleep; the profiler runs in the first.
    script = "import subprocess, sys, time; [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) "
    script += "for _ in range(2)]; time.sleep(30)"
    launcher = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while len(psutil.Process(launcher.pid).children()) < 2 and time.time() < deadline:
            time.sleep(0.05)
        ranks = psutil.Process(launcher.pid).children()
        sample = JobProcesses(pid=ranks[0].pid, launcher=launcher.pid).sample()
        expected = sum(rank.memory_info().rss for rank in ranks)
        assert sample["rss"] == pytest.approx(expected, rel=0.05)  # both ranks' memory
        assert sample["children"] == 0  # loader workers: the profiling rank's own children only
    finally:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            child.kill()
        launcher.kill()
        launcher.wait()
