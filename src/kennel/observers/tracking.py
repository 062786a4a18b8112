"""Mirror a job into MLflow so it shows in the tracking UI (``kennel ui``), like a SageMaker training job.

The job folder stays the source of truth; this observer only copies params, metrics, tags and files into an
MLflow run. It talks to the store through ``MlflowClient`` (no fluent ``mlflow.start_run`` global), so several
jobs in one process cannot clash, and it imports mlflow lazily because that import alone takes one to two seconds.
A tracking failure never stops training: it logs one warning and the tracker goes quiet; the run is still
closed when the job ends, and a job whose run cannot be closed fails.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kennel.debugger.store import rule_tags
from kennel.engine.observer import Observer
from kennel.engine.state import LoopState
from kennel.errors import Failure
from kennel.home import tracking_uri as default_tracking_uri
from kennel.jobs import JobDir, JobRecord
from kennel.mlflow_store import DEFAULT_EXPERIMENT, RUN_STATUS, ensure_experiment, get_client

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


class TrackingError(Failure):
    """The job's MLflow run could not be written or closed (the store is gone, its disk is full)."""


MAX_PARAM_CHARS = 500


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": "0.1"}``; MLflow params are flat strings of bounded length."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = str(value)
            flat[name[:250]] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return flat


def _safely(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a tracker method; on any error warn once and disable the tracker rather than break the job."""

    @functools.wraps(method)
    def wrapper(self: MLflowTracker, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            self.enabled = False
            log.warning("MLflow tracking disabled (%s at %s): %s", type(error).__name__, method.__name__, error)
            return None

    return wrapper


def _now_ms() -> int:
    return int(time.time() * 1000)


def _started_ms(record: JobRecord) -> int:
    """When the job began (the run opens at fit start, after data and features are ready)."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(record.started).timestamp() * 1000) if record.started else _now_ms()
    except ValueError:
        return _now_ms()


class MLflowTracker(Observer):
    """One MLflow run per job: params and tags at fit start, step metrics every ``log_every`` steps (as
    ``step/<name>`` at the global step), epoch metrics at the epoch's number, and at :meth:`finish` the final
    metrics, the job's files and the run's end status. Resuming reopens the same run (its id is in
    :meth:`state_dict` and in ``record.mlflow_run_id``).

    Step metrics are buffered and written at most every ``flush_seconds`` and at each epoch's end: one SQLite
    write takes about 25 ms, longer than a whole step when a head trains on cached features."""

    def __init__(
        self,
        record: JobRecord,
        params: Mapping[str, Any] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        log_every: int = 10,
        flush_seconds: float = 5.0,
        artifacts: tuple[str, ...] = JobDir.OUTPUTS,
        log_model: bool = True,
    ) -> None:
        self.record = record
        self.params = flatten_params(params if params is not None else record.config)
        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.log_every = max(int(log_every), 1)
        self.flush_seconds = flush_seconds
        self.artifacts = artifacts  # files and folders of the job folder copied to the run at finish()
        self.log_model = log_model
        self.run_id: str | None = record.mlflow_run_id
        self.enabled = True
        self._client: MlflowClient | None = None
        self._last_epoch = 0
        self._pending: list[Any] = []  # step metrics not yet written
        self._flushed = time.monotonic()

    # --- the run ---------------------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = get_client(self.tracking_uri)
        return self._client

    def _tags(self) -> dict[str, str]:
        record = self.record
        tags = {"kennel.job_id": record.id, "kennel.job_dir": record.job_dir, "kennel.kind": record.kind}
        if record.backbone:
            tags["kennel.backbone"] = record.backbone
        if record.study:
            tags["kennel.study"] = record.study
        return tags

    def _start_run(self) -> str:
        """Reopen the run this job already has (a resume), else create one named after the job."""
        from mlflow.entities import Param

        existing: dict[str, str] = {}
        if self.run_id:
            try:
                run = self.client.get_run(self.run_id)
                self.client.update_run(self.run_id, status="RUNNING")
                existing = dict(run.data.params)
            except Exception as error:
                log.warning("MLflow run %s cannot be reopened (%s); starting a new one", self.run_id, error)
                self.run_id = None
        if not self.run_id:
            experiment_id = ensure_experiment(self.client, self.experiment, self.tracking_uri)
            run = self.client.create_run(
                experiment_id, start_time=_started_ms(self.record), tags=self._tags(), run_name=self.record.name
            )
            self.run_id = run.info.run_id
        # Params are immutable in MLflow: on resume, log only the ones the run lacks.
        params = [Param(k, v) for k, v in self.params.items() if k not in existing]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.record.mlflow_run_id = self.run_id
        if self.record.job_dir and self.record.folder.has_record():
            self.record.save()
        return self.run_id

    def _metrics(self, metrics: Mapping[str, Any], step: int, prefix: str = "") -> list[Any]:
        from mlflow.entities import Metric

        stamp = _now_ms()
        return [
            Metric(f"{prefix}{key}", float(value), stamp, step)
            for key, value in metrics.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
        ]

    def _log_metrics(self, metrics: Mapping[str, Any] | None = None, step: int = 0) -> None:
        """Write ``metrics`` at ``step`` together with any buffered step metrics."""
        batch, self._pending = [*self._pending, *self._metrics(metrics or {}, step)], []
        self._flushed = time.monotonic()
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def _set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:8000]) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    # --- outside a training loop (a user's script's job) --------------------------------------------------

    @_safely
    def start(self) -> None:
        """Open the job's run now (reopen a resumed job's); :meth:`on_fit_start` does it for kennel's own loop."""
        self._start_run()

    @_safely
    def log_points(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step``; they are written with the next flush (every ``flush_seconds`` at most,
        and at :meth:`finish`)."""
        if self.run_id:
            self._pending += self._metrics(metrics, step)
            if time.monotonic() - self._flushed >= self.flush_seconds:
                self._log_metrics()

    # --- observer hooks --------------------------------------------------------------------------------

    @_safely
    def on_fit_start(self, state: LoopState) -> None:
        self._start_run()

    @_safely
    def on_batch_end(self, state: LoopState) -> None:
        if self.run_id and state.global_step % self.log_every == 0 and state.step_metrics:
            self._pending += self._metrics(state.step_metrics, state.global_step, prefix="step/")
            if time.monotonic() - self._flushed >= self.flush_seconds:
                self._log_metrics()

    @_safely
    def on_epoch_end(self, state: LoopState) -> None:
        if self.run_id and state.epoch_metrics:
            self._last_epoch = int(state.epoch_metrics.get("epoch", state.epoch + 1))
            self._log_metrics(state.epoch_metrics, self._last_epoch)

    @_safely
    def on_fit_end(self, state: LoopState) -> None:
        if self.run_id:
            self._log_metrics()
            self._set_tags({"kennel.status": state.status, "kennel.stop_reason": state.stop_reason})

    @_safely
    def on_exception(self, state: LoopState, error: BaseException) -> None:
        """End the run at once: after a crash nobody may be left to call :meth:`finish`."""
        if self.run_id:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._log_metrics()
            self._set_tags({"kennel.status": state.status, "kennel.error": f"{type(error).__name__}: {error}"})
            self.client.set_terminated(self.run_id, status=status)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment": self.experiment, "last_epoch": self._last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id
        self._last_epoch = int(state.get("last_epoch", 0))

    # --- the end of the job ----------------------------------------------------------------------------

    def on_job_end(self, record: JobRecord) -> None:
        self.finish(record)

    def finish(self, record: JobRecord | None = None) -> None:
        """After evaluation: log ``record.metrics`` (e.g. test_accuracy, test_top5), the job's files, and end the
        run as FINISHED, FAILED or KILLED after ``record.status``. Starts the run first if the job failed before
        the loop did, so failed jobs show in the UI too. The run is ended even when tracking was turned off by
        an error during the job; :class:`TrackingError` when it cannot be (the job then lost its run)."""
        record = record or self.record
        self.record = record
        status = RUN_STATUS.get(record.status, "FINISHED")
        try:
            if not self.run_id:
                if not self.enabled:  # the store was unreachable from the start: no run was left open
                    return
                self._start_run()
            try:
                if self.enabled:
                    self._log_results(record)
            except Exception:
                status = "FAILED"
                raise
            finally:
                self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            raise TrackingError(f"MLflow run of job {record.id} in {self.tracking_uri}: {exc}") from exc

    def _log_results(self, record: JobRecord) -> None:
        final = {**record.metrics, **({"duration_s": record.duration_s} if record.duration_s is not None else {})}
        self._log_metrics(final, self._last_epoch)
        tags = {"kennel.status": record.status, "kennel.stop_reason": record.stop_reason, "kennel.error": record.error}
        self._set_tags(tags)
        if record.job_dir:  # each debugger rule's status
            self._set_tags(rule_tags(record.path))
        self._log_files(record)

    def _log_files(self, record: JobRecord) -> None:
        folder = record.path
        for name in self.artifacts:
            path = folder / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
            elif path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
        model = record.model_dir
        if self.log_model and model.is_dir():
            self.client.log_artifacts(self.run_id, str(model), artifact_path="model")
