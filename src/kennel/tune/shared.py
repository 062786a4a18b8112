"""What a study keeps in its storage beside its trials, so that a machine joining it (``kennel tune --worker``)
needs only the database URL and the study's name: the settings that define the study, the training config under
every trial, and the session in force (the trials budget, the time limit, the target). They are Optuna study user
attributes, JSON, written by every ``kennel tune`` that is not a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from kennel.tune.study import StudyRecord

SETTINGS_ATTR = "kennel.settings"  # StudySettings: fixed for the study's life
BASE_ATTR = "kennel.base"  # the base training config, with the dataset path of the machine that wrote it
SESSION_ATTR = "kennel.session"  # SessionSettings of the latest session, its deadline included
PER_MACHINE = ("parallel", "threads")  # session fields each machine sets for itself


def publish(study: optuna.Study, record: StudyRecord) -> None:
    study.set_user_attr(SETTINGS_ATTR, record.settings)
    study.set_user_attr(BASE_ATTR, record.base)
    study.set_user_attr(SESSION_ATTR, {k: v for k, v in record.session.items() if k not in PER_MACHINE})


def published(study: optuna.Study) -> dict[str, Any] | None:
    """The study's settings, base and session as :func:`publish` wrote them; None when a kennel study's are
    missing (created by something else, or by a kennel that kept only the settings)."""
    attrs = study.user_attrs
    if not all(key in attrs for key in (SETTINGS_ATTR, BASE_ATTR, SESSION_ATTR)):
        return None
    return {"settings": attrs[SETTINGS_ATTR], "base": attrs[BASE_ATTR], "session": attrs[SESSION_ATTR]}
