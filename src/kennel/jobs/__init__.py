"""Jobs: a job is a folder under ``$KENNEL_HOME/jobs`` (:class:`JobDir`) with its record, ``job.json``.

The folder is the source of truth (fast to list, no server); MLflow mirrors it for the UI.
"""

from kennel.jobs.engine_lines import engine_lines
from kennel.jobs.folder import STATUSES, JobDir, JobRecord, local_minutes, now
from kennel.jobs.store import JobNotFound, create_job, list_jobs, load_job, new_job_id

__all__ = [
    "STATUSES",
    "JobDir",
    "JobNotFound",
    "JobRecord",
    "create_job",
    "engine_lines",
    "list_jobs",
    "load_job",
    "local_minutes",
    "new_job_id",
    "now",
]
