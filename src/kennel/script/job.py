"""A user's script as a kennel job: ``run_script(config)`` from start to end, ``resume_script(job)`` again.

The runner owns what is true whatever the script does: the record and its status (from the exit code), the
logs, the metrics read from both streams, the process tree's system metrics, and stopping (Ctrl-C, a rule, a
pruner). The only kennel code inside the script's process is the smdebug hook (:mod:`kennel.script.hook`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kennel.config import ConfigError
from kennel.errors import Failure, PathError, UsageError
from kennel.home import kennel_home
from kennel.jobs import JobDir, JobRecord, create_job, load_job, now
from kennel.script.config import ScriptConfig
from kennel.script.contract import ScriptJobDir
from kennel.script.diagnosis import explain, traceback_tail
from kennel.script.environment import command_arguments, gpu_count, prepare_folders, training_environment
from kennel.script.metrics import MetricReader
from kennel.script.observers import MetricsLog, Profiling, ScriptObserver, ScriptRun, Tracking, summary
from kennel.script.process import ScriptProcess

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often observers look at a running script (rules, pruning, the step records)
RULE_GRACE_S = 60.0  # how long a script a rule stopped may take to reach the hook and leave before it is ended
# What a copy of the source folder leaves out: version control and caches are no part of the code that runs.
IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".ipynb_checkpoints", ".venv")


class ScriptJobError(UsageError):
    """A job reference that is not a ``kennel run`` job, or cannot be resumed."""


def create_script_record(config: ScriptConfig, study: str | None = None) -> JobRecord:
    """A new job for ``config``: its folder, its record (``kind: script``, params = the hyperparameters) and the
    settings ``--resume`` runs again."""
    name = config.name or Path(config.entry_point).stem
    record = create_job(
        name,
        kind="script",
        backbone=None,
        params=dict(config.hyperparameters),
        config=config.model_dump(mode="json"),
        study=study,
    )
    (record.path / JobDir.CONFIG).write_text(config.to_yaml())
    return record


def run_script(
    config: ScriptConfig,
    observers: Sequence[ScriptObserver] = (),
    study: str | None = None,
    echo: bool = True,
) -> JobRecord:
    """Run ``config``'s script as a new job; returns its record. ``echo``: pass the script's output through to
    this process's stdout and stderr (a tuning trial keeps it in the job's logs only)."""
    _check_device(config)
    record = create_script_record(config, study)
    try:
        copy_source(config, ScriptJobDir(record.path).source)
    except OSError as exc:
        record.status, record.error, record.ended = "failed", f"cannot copy the source folder: {exc}", now()
        record.save()
        raise PathError.of(exc, "cannot copy the source folder") from None
    return _run(record, config, observers, echo)


def copy_source(config: ScriptConfig, target: Path) -> None:
    """The source folder as the job runs it (SageMaker uploads it as sourcedir.tar.gz), less what is no code:
    version control, caches, kennel's own home (a job inside the folder it copies would copy itself), and data
    channels that live inside it (the script reads them from their own folders)."""
    source = Path(config.source_dir).resolve()
    skipped = {Path(p).resolve() for p in (kennel_home(), *config.channels.values())}

    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = set(IGNORED(folder, names))
        return ignored | {name for name in names if (Path(folder) / name).resolve() in skipped}

    if source in skipped:
        raise ScriptJobError(f"--source-dir {source} is a data channel or kennel's home; give the script's own folder")
    shutil.copytree(source, target, ignore=ignore, symlinks=True)


def resume_script(ref: str | Path, observers: Sequence[ScriptObserver] = (), echo: bool = True) -> JobRecord:
    """Run job ``ref``'s script again in the same folder: its checkpoints folder is handed back (SageMaker's
    ``/opt/ml/checkpoints``), the code is the copy the job made when it first ran. A completed job is returned
    as it is."""
    record = load_job(ref)
    if record.kind != "script":
        raise ScriptJobError(f"job {record.id} is a {record.kind} job, not a kennel run job: kennel train --resume")
    if record.status == "completed":
        return record
    try:
        config = ScriptConfig.model_validate(record.config)
    except ValueError as exc:
        raise ConfigError(f"job {record.id} cannot run again as it was: {exc}") from None
    _check_device(config)
    return _run(record, config, observers, echo)


def _check_device(config: ScriptConfig) -> None:
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible on this machine")


def script_command(config: ScriptConfig, job: ScriptJobDir) -> list[str]:
    """``python SCRIPT --name value ... [extra args]``, under torchrun for several processes."""
    arguments = [*command_arguments(config.hyperparameters), *config.user_args]
    if config.processes > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        return [*torchrun, f"--nproc-per-node={config.processes}", config.entry_point, *arguments]
    return [sys.executable, config.entry_point, *arguments]


def script_environment(config: ScriptConfig, record: JobRecord) -> dict[str, str]:
    """This process's environment, SageMaker's training variables, and the hook's modules first on the path."""
    from kennel.script.shims import shim_paths

    job = ScriptJobDir(record.path)
    env = dict(os.environ)
    env.update(training_environment(config, job, record.id))
    env["PYTHONPATH"] = os.pathsep.join([*shim_paths(), str(job.source), *filter(None, [env.get("PYTHONPATH")])])
    if config.processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        from kennel.launch import process_env

        env["OMP_NUM_THREADS"] = process_env(config.processes, config.device == "cuda")["OMP_NUM_THREADS"]
    return env


def _write_hook_settings(config: ScriptConfig, record: JobRecord) -> None:
    from kennel.script.hook_settings import HookSettings

    job = ScriptJobDir(record.path)
    steps = job.profiler / "steps.jsonl" if config.profiler.enabled else None
    HookSettings(
        job_id=record.id,
        debug=config.debug,
        debug_dir=job.debug,
        profiler_steps=steps,
        stop_file=job.stop_file,
        classes=class_names(config),
    ).write(job.hook_config)


def class_names(config: ScriptConfig) -> list[str]:
    """The labels' names as torchvision's ImageFolder numbers them (sorted folder names), where a channel holds
    dogImages' layout (``train/001.Affenpinscher/...``): the debugger's findings name classes by them. Empty
    where no channel does."""
    for folder in config.channels.values():
        train = Path(folder) / "train"
        if train.is_dir():
            names = sorted(entry.name for entry in train.iterdir() if entry.is_dir() and not entry.name.startswith("."))
            if names:
                return names
    return []


def _job_observers(record: JobRecord, config: ScriptConfig) -> list[ScriptObserver]:
    """The job's own observers, in the order their ``on_job_end`` must run: the profiler's page before the
    tracker, which copies it into MLflow and closes the run."""
    observers: list[ScriptObserver] = [MetricsLog(record.folder)]
    if config.profiler.enabled:
        from kennel.profiler.session import ProfilerSession

        try:
            device = "cuda" if gpu_count(config.device) else "cpu"  # its GPUs are sampled too, where it has some
            observers.append(Profiling(ProfilerSession(record.path, config.profiler, device)))
        except Exception:  # profiling must never keep a job from running
            log.warning("the profiler could not start for %s; the job runs without it", record.id, exc_info=True)
    if config.tracking:
        from kennel.observers.tracking import MLflowTracker

        params = {"script": config.entry_point, **config.hyperparameters}
        observers.append(Tracking(MLflowTracker(record, params=params, experiment=record.study or "kennel")))
    return observers


def _earlier_counts(record: JobRecord) -> dict[str, int]:
    """Points per metric from the job's earlier runs (a resumed job's steps go on from them)."""
    counts: dict[str, int] = {}
    for entry in record.folder.read_metrics("script"):
        counts[entry["name"]] = counts.get(entry["name"], 0) + 1
    return counts


def _run(record: JobRecord, config: ScriptConfig, extra: Sequence[ScriptObserver], echo: bool) -> JobRecord:
    job = ScriptJobDir(record.path)
    job.stop_file.unlink(missing_ok=True)
    prepare_folders(config, job)
    _write_hook_settings(config, record)
    earlier_seconds = record.duration_s or 0.0
    record.status, record.started, record.ended = "running", record.started or now(), None
    record.error = record.stop_reason = record.traceback = None
    record.pid = os.getpid()
    record.save()

    observers = [*_job_observers(record, config), *extra]
    run = ScriptRun(record, config)
    reader = MetricReader(config.metrics, _earlier_counts(record))

    def read(line: str, stream: str) -> None:
        _emit(observers, "on_line", run, line, stream)
        for point in reader.read(line):
            run.last[point.name] = point.value
            _emit(observers, "on_metric", run, point)

    process = ScriptProcess(
        script_command(config, job),
        script_environment(config, record),
        job.source,
        (job.stdout_log, job.stderr_log),
        read,
        echo=echo,
    )
    started = time.perf_counter()
    interrupted = False
    try:
        process.start()
        run.pid = process.pid
        _emit(observers, "on_start", run)
        ruled_at = None
        while process.poll() is None:
            time.sleep(TICK_S)
            _emit(observers, "on_tick", run)
            if run.should_stop:
                process.stop(run.stop_reason)
            elif ruled_at is None and job.stop_file.exists():
                ruled_at = time.monotonic()
            elif ruled_at is not None and time.monotonic() - ruled_at > RULE_GRACE_S:
                # The hook ends the script at its next forward or optimizer step; one stuck elsewhere is ended
                # here, and the outcome is still the rule's.
                process.stop("a debugger rule stopped it")
    except KeyboardInterrupt:
        interrupted = True
        run.request_stop("interrupted (Ctrl-C)")
        process.stop(run.stop_reason, first=signal.SIGINT)
    finally:
        # A Ctrl-C while the script winds down must not leave it running: wait for it whatever happens.
        with _deferred_interrupts():
            run.exit_code = process.wait() if process.process is not None else None
    _outcome(record, run, process, job, interrupted)
    record.metrics.update(summary(run))
    if any(job.model.iterdir()):
        record.artifact = str(job.model)
    _emit(observers, "on_end", run)
    record.ended, record.duration_s = now(), round(earlier_seconds + time.perf_counter() - started, 2)
    record.pid = None
    record.save()
    for observer in observers:
        try:
            observer.on_job_end(record)
        except Exception as exc:
            log.warning("%s.on_job_end failed for %s: %s", type(observer).__name__, record.id, exc)
    _write_report(record)
    if interrupted:
        raise KeyboardInterrupt
    return record


def _outcome(record: JobRecord, run: ScriptRun, process: ScriptProcess, job: ScriptJobDir, interrupted: bool) -> None:
    """The record's status from the exit code, kennel's own stop requests and the hook's stop file."""
    code = run.exit_code
    stopped_by_rule = _rule_stop(job)
    if interrupted:
        record.status, record.stop_reason = "stopped", "interrupted (Ctrl-C)"
    elif run.should_stop:  # kennel ended it: a profiler rule, a pruner
        record.status, record.stop_reason = run.stop_status, run.stop_reason
    elif code != 0 and stopped_by_rule is not None:
        # 3 from the script itself; under torchrun, torchrun's own code once it has ended the other ranks.
        record.status, record.stop_reason = "stopped", stopped_by_rule
    elif code == 0:
        record.status = "completed"
    else:
        stderr = list(process.stderr_tail)
        record.status = "failed"
        record.error = explain(list(process.output_tail), stderr, code if code is not None else -1)
        record.traceback = traceback_tail(stderr) or None


def _rule_stop(job: ScriptJobDir) -> str | None:
    import json

    try:
        data = json.loads(job.stop_file.read_text())
    except (OSError, ValueError):
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason) if reason else "stopped by a debugger rule"


def _emit(observers: Sequence[ScriptObserver], event: str, *args) -> None:
    for observer in observers:
        try:
            getattr(observer, event)(*args)
        except Exception:  # an observer's failure is its own: the script runs on
            log.warning("%s.%s failed", type(observer).__name__, event, exc_info=True)


class _deferred_interrupts:
    """Hold Ctrl-C until the block ends: the script is being waited for and its output read to the end."""

    def __enter__(self):
        self._pending = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._hold)
        except ValueError:  # not the main thread: nothing to hold
            self._previous = None
        return self

    def _hold(self, signum, frame) -> None:
        self._pending = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self._pending and exc[0] is None:
            raise KeyboardInterrupt


def _write_report(record: JobRecord) -> None:
    """The job's page (``kennel report JOB`` writes it again); optional, so a failure is a warning."""
    if record.status not in ("completed", "stopped", "pruned"):
        return
    try:
        from kennel.pages import write_report

        write_report(record.path)
    except Exception as exc:
        log.warning(
            "the report of %s could not be written (%s); kennel report %s tries again", record.id, exc, record.id
        )


class ScriptFailed(Failure):
    """The script ran and failed; the message says why in a line."""
