"""Hyperparameter tuning: a study runs many training jobs (trials) and finds the best values (Optuna).

``tune(TuneRequest(...))`` runs or resumes a study; ``kennel tune --help`` lists the options. A search space
(:mod:`kennel.tune.space`) names training config keys and their ranges; strategies (:data:`STRATEGIES`) and
pruners (:data:`PRUNERS`) are registries; each trial is an ordinary kennel job with ``study`` set.
"""

from kennel.tune.pruners import PRUNERS
from kennel.tune.request import TuneError, TuneRequest
from kennel.tune.runner import tune
from kennel.tune.space import SearchSpace, SpaceError, load_space, shipped_spaces
from kennel.tune.storage import StorageError
from kennel.tune.strategies import STRATEGIES
from kennel.tune.study import StudyNotFound, StudyRecord, list_studies, load_study_record

__all__ = [
    "PRUNERS",
    "STRATEGIES",
    "SearchSpace",
    "SpaceError",
    "StorageError",
    "StudyNotFound",
    "StudyRecord",
    "TuneError",
    "TuneRequest",
    "list_studies",
    "load_space",
    "load_study_record",
    "shipped_spaces",
    "tune",
]
