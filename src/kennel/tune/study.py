"""Study records: a study is a folder under ``$KENNEL_HOME/studies`` with ``study.json`` describing it.

    study.json     the record (this module): settings, base training config, status, trial counts, the best
    space.yaml     the search space, as a person would write it
    journal.log    Optuna's journal of every trial (the default storage; a database URL replaces it)
    best.yaml      the best trial's training config: ``kennel train --config best.yaml`` retrains it
    report.html    ``kennel report STUDY``
    claim.lock     workers take it to start a trial, so the study holds exactly the requested number (a study in
                   PostgreSQL takes a lock in the database instead, which holds across machines: see claim.py)

The trials themselves are ordinary training jobs under ``$KENNEL_HOME/jobs`` with ``study`` set to the name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_json
from kennel.errors import KennelError
from kennel.home import kennel_home
from kennel.jobs import now
from kennel.tune.settings import SessionSettings, StudySettings
from kennel.tune.storage import JOURNAL, open_database, open_journal, shown

if TYPE_CHECKING:
    import optuna

STUDY_STATUSES = ("created", "running", "completed", "stopped", "failed")


def studies_dir() -> Path:
    return kennel_home() / "studies"


@dataclass
class StudyRecord:
    name: str
    settings: dict[str, Any]  # StudySettings, as JSON
    session: dict[str, Any] = field(default_factory=dict)  # the latest SessionSettings, as JSON
    base: dict[str, Any] = field(default_factory=dict)  # the training config under every trial (file + flags)
    storage: str | None = None  # a database URL; None: the journal file in the folder
    warm_start: str | None = None
    status: str = "created"
    created: str = field(default_factory=now)
    started: str | None = None
    ended: str | None = None
    stop_reason: str | None = None
    pid: int | None = None  # the process running ``kennel tune``, while it runs
    host: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # trials by outcome, updated after every trial
    best: dict[str, Any] | None = None  # number, value, params, job of the best trial so far
    study_dir: str = ""

    @property
    def path(self) -> Path:
        return Path(self.study_dir)

    @property
    def study_settings(self) -> StudySettings:
        return StudySettings.model_validate(self.settings)

    @property
    def session_settings(self) -> SessionSettings:
        return SessionSettings.model_validate(self.session)

    def save(self) -> None:
        atomic_write_json(self.path / "study.json", asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def storage_label(self) -> str:
        """Where the trials are, for people: the journal file, or the database URL without its password."""
        return shown(self.storage) if self.storage else str(self.path / JOURNAL)


class StudyNotFound(KennelError, LookupError):
    pass


def study_exists(name: str) -> bool:
    return (studies_dir() / name / "study.json").is_file()


def load_study_record(ref: str | Path) -> StudyRecord:
    """A study by name or folder."""
    folder = Path(ref).expanduser()
    if not (folder / "study.json").is_file():
        folder = studies_dir() / str(ref)
    if not (folder / "study.json").is_file():
        raise StudyNotFound(f"no study {str(ref)!r} under {studies_dir()} (kennel jobs studies lists them)")
    data = json.loads((folder / "study.json").read_text())
    record = StudyRecord(**{k: v for k, v in data.items() if k in StudyRecord.__dataclass_fields__})
    record.study_dir = str(folder)
    return record


def list_studies() -> list[StudyRecord]:
    """Every study, newest first; unreadable records are skipped."""
    if not studies_dir().is_dir():
        return []
    records = []
    for folder in studies_dir().iterdir():
        try:
            records.append(load_study_record(folder))
        except (StudyNotFound, json.JSONDecodeError, TypeError):
            continue
    return sorted(records, key=lambda r: r.created, reverse=True)


def open_storage(record: StudyRecord) -> optuna.storages.BaseStorage:
    """The journal file in the study folder (many processes on one machine, no server), or the database at
    ``record.storage`` (many machines; PostgreSQL for real scale)."""
    return open_database(record.storage) if record.storage else open_journal(record.path)


def open_study(
    record: StudyRecord,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The Optuna study behind ``record``, created in its storage when new."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = record.study_settings.direction
    return optuna.create_study(
        storage=open_storage(record),
        study_name=record.name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
