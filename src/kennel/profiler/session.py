"""One job's profiling from its start to its end: the system sampler, the step observer, the torch.profiler
window, the rules and, at the end, profile.html.

    session = ProfilerSession(job_dir, config.profiler, device)   # at the job's start: sampling begins
    observers.append(session.observer(train_loader))              # the loop's steps
    ...
    session.finish()                                              # at the job's end (also after a failure)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_json
from kennel.config import ProfilerConfig
from kennel.engine import LoopState, Observer
from kennel.jsonl import append_jsonl
from kennel.processes import available_cores
from kennel.profiler.gpu import GpuReader
from kennel.profiler.observer import ProfilerObserver
from kennel.profiler.profile import (
    CONTEXT,
    FINDINGS,
    FOLDER,
    STEPS,
    SYSTEM,
    TIMELINE,
    Profile,
    rank_steps_file,
)
from kennel.profiler.rules import PROFILER_RULES
from kennel.profiler.system import SystemSampler
from kennel.rules import RuleRunner

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
KEEP_STEPS = 20_000  # step records kept in memory for the rules
LIVE_RECORDS = 2_000  # steps and samples the rules look at while the job runs (every window is shorter)


class ProfilerSession(Observer):
    """A job's profiling: system sampling from the job's start, the loop's observer, the rules, profile.html."""

    def __init__(
        self,
        job_dir: Path | str,
        config: ProfilerConfig | None = None,
        device: torch.device | str | None = None,
        world_size: int = 1,
    ):
        self.config = config or ProfilerConfig()
        self.job_dir = Path(job_dir)
        self.folder = self.job_dir / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        # A script's job names the device its script may use; kennel itself runs no model then.
        device_type = device if isinstance(device, str) else (device.type if device is not None else "cpu")
        gpus = GpuReader.open() if device_type == "cuda" else None
        rules = self.config.build_rules()
        self.context: dict[str, Any] = {
            "device": device_type,
            "cores": available_cores(),
            "gpus": gpus.names if gpus else [],
            "interval_s": self.config.interval_s,
            "rules": self.config.rules,  # the thresholds set for this job, for the report's plots
            "rule_names": [rule.name for rule in rules],  # the rules the job runs, for the report's table
            "imports": self.config.imports,  # the modules of its custom rules, for a report written later
            "pid": os.getpid(),
            "torch": _torch_version(),
            "world_size": world_size,  # ranks > 0 write their own step files (RankSteps)
        }
        self._save_context()
        self.events: list[dict[str, Any]] = []
        self.steps: deque[dict[str, Any]] = deque(maxlen=KEEP_STEPS)
        self.other_ranks = {rank: RankTail(self.folder / rank_steps_file(rank)) for rank in range(1, world_size)}
        self.runner: RuleRunner[Profile] = RuleRunner(rules, self.folder / FINDINGS, PROFILER_RULES.kind)
        self.trace = None
        if self.config.trace.enabled and not isinstance(device, str):  # a window over a loop this process runs
            from kennel.profiler.trace import TraceWindow  # torch.profiler: only for the window asked for

            self.trace = TraceWindow(self.folder, self.config.trace, device)
        # Under torchrun the ranks on this machine are the launcher's children: the job's processes are its tree.
        launcher = os.getppid() if world_size > 1 and "TORCHELASTIC_RUN_ID" in os.environ else None
        self.sampler = SystemSampler(self.folder / SYSTEM, self.config.interval_s, gpus, launcher=launcher)
        self.event("job_start")
        self.sampler.start()
        self._finished = False
        self._steps_file: RankTail | None = None

    def observer(self, loader: Any = None) -> ProfilerObserver:
        """The loop's observer; ``loader`` (the training DataLoader) tells the rules its workers and batch size."""
        if loader is not None:
            self.context["loader_workers"] = int(getattr(loader, "num_workers", 0))
            self.context["batch_size"] = getattr(loader, "batch_size", None)
            self._save_context()
        return ProfilerObserver(self, check_every_s=self.config.check_every_s)

    def follow_steps(self) -> None:
        """Take the step records another process appends to this job's ``steps.jsonl`` (the hook inside a user's
        script) instead of recording them from a loop in this one."""
        self._steps_file = RankTail(self.folder / STEPS)

    def step_records(self) -> deque[dict[str, Any]]:
        """The step records kept so far (read on from the steps file where :meth:`follow_steps` was called)."""
        if self._steps_file is not None:
            self.steps = self._steps_file.read()
        return self.steps

    # --- records ----------------------------------------------------------------------------------------------

    def event(self, name: str, step: int | None = None, t: float | None = None) -> None:
        event = {"event": name, "t": time.time() if t is None else t, "step": step}
        self.events.append(event)
        self._append(TIMELINE, [event])

    def write_steps(self, records: Iterable[dict[str, Any]]) -> None:
        self._append(STEPS, records)

    def _append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        try:
            append_jsonl(self.folder / name, records)
        except OSError as exc:  # a full disk must not end the job: the rules still see the records in memory
            log.warning("cannot write %s: %s", self.folder / name, exc)

    def _save_context(self) -> None:
        atomic_write_json(self.folder / CONTEXT, self.context)

    def profile(self, last: int | None = None) -> Profile:
        """What has been recorded so far: the ``last`` steps and samples, or all those kept in memory."""
        steps, samples = list(self.step_records()), list(self.sampler.samples)
        if last is not None:
            steps, samples = steps[-last:], samples[-last:]
        profile = Profile(self.context, list(self.events), steps, samples)
        for rank, tail in self.other_ranks.items():
            records = list(tail.read())
            profile.other_ranks[rank] = records[-last:] if last else records
        return profile

    def check(self, state: LoopState | None = None, final: bool = False) -> None:
        """Run the rules: while the job runs on the latest records (a check then costs a few milliseconds),
        at its end on everything kept."""
        self.runner.run(self.profile(None if final else LIVE_RECORDS), state, final=final)

    # --- the end ----------------------------------------------------------------------------------------------

    def on_job_end(self, record: Any) -> None:
        self.finish()

    def finish(self) -> Path | None:
        """Stop sampling, run the rules a last time and write profile.html (unless turned off); returns its
        path. Safe to call twice; never raises, since the job's own results are already saved."""
        if self._finished:
            return None
        self._finished = True
        try:
            if self.trace is not None:
                self.trace.stop()
            self.event("job_end")
            self.sampler.stop()
            self.check(final=True)
            if self.config.report:
                from kennel.profiler.report import write_profile_report

                return write_profile_report(self.job_dir)
        except Exception as exc:  # a full disk is said in one line; anything else is a bug worth its traceback
            log.warning(
                "the profiler could not finish for %s: %s", self.job_dir, exc, exc_info=not isinstance(exc, OSError)
            )
        return None


def _torch_version() -> str | None:
    """PyTorch's version, read without importing it where nothing has."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


class RankTail:
    """Another rank's step records as it appends them: each read takes only the lines added since the last one
    (a line still being written waits for the next), so a live check costs the same late in a long job."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.steps: deque[dict[str, Any]] = deque(maxlen=KEEP_STEPS)

    def read(self) -> deque[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                added = handle.read()
        except FileNotFoundError:
            return self.steps
        added = added[: added.rfind(b"\n") + 1]
        self.offset += len(added)
        for line in added.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # blank, cut short by a kill, or not UTF-8
                continue
            if isinstance(record, dict):
                self.steps.append(record)
        return self.steps


class RankSteps(Observer):
    """What a rank other than 0 profiles: its own step records, in ``steps-rank<N>.jsonl``, which rank 0's
    LoadBalancing rule reads. Rank 0's session samples the machine and runs the rules for the whole job."""

    trace = None

    def __init__(self, job_dir: Path | str, rank: int) -> None:
        self.path = Path(job_dir) / FOLDER / rank_steps_file(rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps: deque[dict[str, Any]] = deque(maxlen=KEEP_STEPS)

    def observer(self, loader: Any = None) -> ProfilerObserver:
        return ProfilerObserver(self, check_every_s=float("inf"))

    def event(self, name: str, step: int | None = None) -> None:
        return None

    def write_steps(self, records: Iterable[dict[str, Any]]) -> None:
        try:
            append_jsonl(self.path, records)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def check(self, state: LoopState | None = None, final: bool = False) -> None:
        return None

    def on_job_end(self, record: Any) -> None:
        self.finish()

    def finish(self) -> None:
        return None
