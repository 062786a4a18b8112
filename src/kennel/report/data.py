"""What a report reads from a job folder, loaded once and tolerant of anything missing or half-written."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kennel.evaluation import EvaluationResult
from kennel.jobs.folder import JobDir

log = logging.getLogger(__name__)


class MissingInput(LookupError):
    """A section's input is absent (e.g. the job failed before evaluation); the report shows a note instead."""


@dataclass
class ReportData:
    job_dir: Path
    job: dict[str, Any] | None = None  # job.json as written (no schema enforced: old jobs still render)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl lines with kind "epoch"
    steps: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl lines with kind "step"
    evaluation: EvaluationResult | None = None
    problems: dict[str, str] = field(default_factory=dict)  # input name -> why it could not be read
    # The gallery of mistakes: "full" (kennel report: heatmaps made now where the job left none), "stored" (the
    # page a job writes as it ends: the heatmaps it left) or "off" (a tuning trial's page: no gallery).
    gallery: str = "full"

    @classmethod
    def load(cls, job_dir: Path | str, gallery: str = "full") -> ReportData:
        folder = JobDir(job_dir)
        data = cls(folder.path, gallery=gallery)
        data.job = data._read(JobDir.RECORD, folder.record_file, lambda _: folder.read_record_data(strict=True))
        data._read_metrics(folder)
        data.evaluation = data._read(JobDir.EVALUATION, folder.evaluation, lambda _: folder.read_evaluation())
        return data

    def _read(self, name: str, path: Path, reader):
        if not path.exists():
            return None
        try:
            return reader(path)
        except Exception as exc:  # a report must render whatever one input looks like
            log.warning("cannot read %s: %s", path, exc)
            self.problems[name] = f"{type(exc).__name__}: {exc}"
            return None

    def _read_metrics(self, folder: JobDir) -> None:
        records, skipped = folder.read_metrics_counted()  # skipped: e.g. a line cut short by a kill
        for record in records:
            if record.get("kind") == "epoch":
                self.epochs.append(record)
            elif record.get("kind") == "step":
                self.steps.append(record)
        if skipped:
            self.problems[JobDir.METRICS] = f"{skipped} unreadable line(s) skipped"

    @property
    def kind(self) -> str:
        """The job's kind (``training``, or ``script`` for ``kennel run``), as its record says."""
        return str((self.job or {}).get("kind") or "training")

    def need_job(self) -> dict[str, Any]:
        if self.job is None:
            raise MissingInput(self._why(JobDir.RECORD, f"no {JobDir.RECORD} in the job folder"))
        return self.job

    def need_evaluation(self) -> EvaluationResult:
        if self.evaluation is None:
            why = "no test evaluation: the job did not reach its test phase"
            raise MissingInput(self._why(JobDir.EVALUATION, why))
        return self.evaluation

    def _why(self, name: str, default: str) -> str:
        return f"{name} could not be read ({self.problems[name]})" if name in self.problems else default
