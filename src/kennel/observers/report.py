"""The job's report page, written once its record is final (so the page shows the end and the duration)."""

from __future__ import annotations

import logging

from kennel.engine.observer import Observer
from kennel.jobs import JobRecord

log = logging.getLogger(__name__)


class ReportWriter(Observer):
    """Writes ``report.html`` for a job that trained to its end (completed, or stopped or pruned by a rule); a
    failed or interrupted job has nothing to report beyond its record. The page is optional (``kennel report
    JOB`` writes it again), so a failure to write it is a warning, never the job's end. Its gallery of mistakes
    shows the heatmaps the job left, and a tuning trial's page has none (its study's page links the job, and
    ``kennel report JOB`` makes the whole page)."""

    def on_job_end(self, record: JobRecord) -> None:
        if record.status not in ("completed", "stopped", "pruned") or record.error or not record.artifact:
            return
        from kennel.pages import write_report

        try:
            write_report(record.path, gallery="off" if record.study else "stored")
        except Exception as exc:
            log.warning(
                "the report of %s could not be written (%s); kennel report %s tries again",
                record.id,
                exc,
                record.id,
                exc_info=not isinstance(exc, OSError),
            )
