"""The rule framework both families share: one base class, one registry style, one runner that drives a
debugger rule and a profiler rule alike (no data, then the issue, the stop, the checkpoint), safely across
threads."""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kennel.debugger.rules import DEBUGGER_RULES
from kennel.debugger.window import History
from kennel.engine.clock import PHASES
from kennel.findings import ERROR, ISSUES_FOUND, NO_DATA, NO_ISSUES, labelled, load_findings
from kennel.lines import fold_words
from kennel.profiler import Profile
from kennel.profiler.rules import PROFILER_RULES
from kennel.rules import Rule, RuleRunner


class State:
    """The part of the loop's state a runner uses: the first stop request wins."""

    def __init__(self) -> None:
        self.stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


def losses(values: list[float]):
    """A debugger window after training steps with these losses."""
    history = History()
    for step, value in enumerate(values):
        history.add_loss("TRAIN", step, value)
    return history.window("steps", "TRAIN", len(values) - 1)


def steps(count: int, slow: int | None = None) -> Profile:
    """A profile of ``count`` even steps of 10 ms, one of them (``slow``) taking 300 ms."""
    records = []
    for i in range(count):
        phase = 0.06 if i == slow else 0.002
        records.append({"step": i + 1, "epoch": 1, "t": float(i), "wall": 5 * phase, **dict.fromkeys(PHASES, phase)})
    return Profile(steps=records)


FAMILIES = [
    # (registry, rule, evidence too short to judge, evidence with the issue, what the stop reason says)
    (DEBUGGER_RULES, "LossNotDecreasing", losses([1.0] * 10), losses([1.0] * 10 + [2.0] * 10), "The TRAIN loss rose"),
    (PROFILER_RULES, "StepOutlier", steps(5), steps(40, slow=30), "1 step(s) took longer than"),
]


@pytest.mark.parametrize(("registry", "name", "early", "broken", "says"), FAMILIES, ids=["debugger", "profiler"])
def test_one_runner_drives_a_debugger_rule_and_a_profiler_rule_alike(
    tmp_path: Path, registry, name: str, early, broken, says: str
) -> None:
    rule = registry.build(name, {"stop": True})
    runner = RuleRunner([rule], tmp_path / "findings.jsonl", registry.kind)
    state = State()
    [first] = runner.run(early, state)
    assert first.status == NO_DATA and first.message.endswith(".") and state.stop_reason is None
    assert runner.statuses()[name] == {"status": NO_DATA, "why": first.message, "params": {**vars(rule)}}
    [issue] = runner.run(broken, state)
    assert issue.status == ISSUES_FOUND and issue.message.startswith(says) and issue.advice
    assert state.stop_reason == f"{registry.kind} {name}: {issue.message}"
    assert runner.run(early, state) == []  # the first issue sticks: the rule is not run again
    assert [f.status for f in load_findings(tmp_path / "findings.jsonl")] == [NO_DATA, ISSUES_FOUND]
    # A resumed job's runner starts from the checkpoint: the issue is not found, written or acted on twice.
    resumed = RuleRunner([registry.build(name, {"stop": True})], tmp_path / "findings.jsonl", registry.kind)
    resumed.load_state_dict(runner.state_dict())
    assert resumed.run(broken, State()) == [] and resumed.statuses()[name]["status"] == ISSUES_FOUND


def test_every_rule_of_every_family_has_the_one_base_class() -> None:
    from kennel.monitor.rules import MONITOR_RULES

    families = (DEBUGGER_RULES, PROFILER_RULES, MONITOR_RULES)
    classes = [registry.get(name) for registry in families for name in registry]
    bases = {base for cls in classes for base in cls.__mro__ if base.__name__ == "Rule"}
    assert bases == {Rule} and all(len(registry) for registry in families)
    assert {DEBUGGER_RULES.key, PROFILER_RULES.key} == {"debug.rules", "profiler.rules"}


@dataclass
class SlowToFire(Rule[Profile]):
    """Finds an issue after a pause long enough for other threads to run the same rule meanwhile."""

    name = "SlowToFire"
    stop: bool = True

    def check(self, profile):
        time.sleep(0.01)
        return self.issue(profile, "it fired", "nothing")


def test_the_runner_is_safe_across_threads(tmp_path: Path) -> None:
    runner = RuleRunner([SlowToFire()], tmp_path / "findings.jsonl", "profiler rule")
    state, found = State(), []
    threads = [threading.Thread(target=lambda: found.extend(runner.run(steps(3), state))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [f.status for f in found] == [ISSUES_FOUND]  # found once, though eight threads ran the rule
    assert len(load_findings(tmp_path / "findings.jsonl")) == 1


def test_a_later_window_that_says_less_does_not_take_a_verdict_back(tmp_path: Path) -> None:
    runner = RuleRunner([PROFILER_RULES.build("StepOutlier")], tmp_path / "findings.jsonl")
    assert [f.status for f in runner.run(steps(40))] == [NO_ISSUES]
    assert runner.run(steps(5)) == [] and runner.statuses()["StepOutlier"]["status"] == NO_ISSUES
    assert [f.status for f in runner.run(steps(5), final=True)] == [NO_ISSUES]  # the final run writes every rule


def test_what_a_rule_waited_for_is_said_in_all_once_the_job_has_ended(tmp_path: Path) -> None:
    runner = RuleRunner([PROFILER_RULES.build("StepOutlier")], tmp_path / "findings.jsonl")
    while_running = runner.run(steps(3))
    assert [f.status for f in while_running] == [NO_DATA] and " so far" in while_running[0].message
    assert " so far" in runner.statuses()["StepOutlier"]["why"]
    ended = runner.statuses(ended=True)["StepOutlier"]["why"]
    assert " so far" not in ended and " in all" in ended
    final = runner.run(steps(3), final=True)
    assert " in all" in final[0].message and " so far" not in final[0].message
    never = RuleRunner([SlowToFire()], tmp_path / "never.jsonl")
    assert never.statuses()["SlowToFire"]["why"] == "Not checked yet."
    assert never.statuses(ended=True)["SlowToFire"]["why"].startswith("Never checked: the job ended")


@pytest.fixture
def cli_logging():
    """The root handler the CLI sets up (``kennel`` calls logging.basicConfig with this format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)


def test_a_finding_is_one_line_that_says_which_trial_it_is_of_during_one(tmp_path: Path, capsys, cli_logging) -> None:
    job = RuleRunner([DEBUGGER_RULES.build("LossNotDecreasing")], tmp_path / "job.jsonl", DEBUGGER_RULES.kind)
    [issue] = job.run(losses([1.0] * 10 + [2.0] * 10))
    trial = RuleRunner([PROFILER_RULES.build("StepOutlier")], tmp_path / "trial.jsonl", PROFILER_RULES.kind)
    with labelled("trial 4"):
        # The profiler's rules run on a timer thread: its lines carry the label all the same.
        timer = threading.Thread(target=trial.run, args=(steps(40, slow=30),))
        timer.start()
        timer.join()
    after = RuleRunner([DEBUGGER_RULES.build("LossNotDecreasing")], tmp_path / "after.jsonl", DEBUGGER_RULES.kind)
    after.run(losses([1.0] * 10 + [2.0] * 10))
    # One line each, folded at its words to 80 columns (stderr is no terminal here), the same however logging is
    # set up (no level and logger name from the CLI's format).
    said = [
        f"debugger rule LossNotDecreasing: {issue.message}",
        f"trial 4: profiler rule StepOutlier: {trial.latest['StepOutlier'].message}",
        f"debugger rule LossNotDecreasing: {issue.message}",
    ]
    assert capsys.readouterr().err.splitlines() == [line for one in said for line in fold_words(one).splitlines()]


@dataclass
class Broken(Rule[Profile]):
    """Raises on every profile, as a custom rule with a bug does."""

    name = "test.Broken"

    def check(self, profile):
        raise ValueError("boom")


def test_a_rule_that_raises_says_so_once_in_a_line_and_the_job_goes_on(tmp_path: Path, capsys, cli_logging) -> None:
    runner = RuleRunner([Broken(), PROFILER_RULES.build("StepOutlier")], tmp_path / "findings.jsonl", "profiler rule")
    for _ in range(3):
        runner.run(steps(40))
    assert capsys.readouterr().err.splitlines() == [
        "profiler rule test.Broken: failed (ValueError: boom); the job goes on without it"
    ]
    assert runner.statuses()["test.Broken"]["status"] == ERROR
    assert runner.statuses()["StepOutlier"]["status"] == NO_ISSUES
