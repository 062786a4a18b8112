"""What a report reads from a job folder, loaded once and tolerant of anything missing or half-written."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kennel.evaluation import EvaluationResult
from kennel.jsonl import read_jsonl

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

    @classmethod
    def load(cls, job_dir: Path | str) -> ReportData:
        data = cls(Path(job_dir))
        data.job = data._read("job.json", lambda p: json.loads(p.read_text()))
        data._read_metrics()
        data.evaluation = data._read("evaluation", EvaluationResult.load, must_be_dir=True)
        return data

    def _read(self, name: str, reader, must_be_dir: bool = False):
        path = self.job_dir / name
        if not (path.is_dir() if must_be_dir else path.is_file()):
            return None
        try:
            return reader(path)
        except Exception as exc:  # a report must render whatever one input looks like
            log.warning("cannot read %s: %s", path, exc)
            self.problems[name] = f"{type(exc).__name__}: {exc}"
            return None

    def _read_metrics(self) -> None:
        records, skipped = read_jsonl(self.job_dir / "metrics.jsonl")  # skipped: e.g. a line cut short by a kill
        for record in records:
            if record.get("kind") == "epoch":
                self.epochs.append(record)
            elif record.get("kind") == "step":
                self.steps.append(record)
        if skipped:
            self.problems["metrics.jsonl"] = f"{skipped} unreadable line(s) skipped"

    def need_job(self) -> dict[str, Any]:
        if self.job is None:
            raise MissingInput(self._why("job.json", "no job.json in the job folder"))
        return self.job

    def need_evaluation(self) -> EvaluationResult:
        if self.evaluation is None:
            raise MissingInput(self._why("evaluation", "no test evaluation: the job did not reach its test phase"))
        return self.evaluation

    def _why(self, name: str, default: str) -> str:
        return f"{name} could not be read ({self.problems[name]})" if name in self.problems else default
