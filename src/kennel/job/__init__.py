"""A training job: :mod:`kennel.job.build` makes its parts from a config, :mod:`kennel.job.run` runs them.

``train(config)`` starts a new job; ``resume(job)`` continues a killed one from its last checkpoint.
"""

from kennel.job.build import resolve_device, warm_feature_cache
from kennel.job.run import resume, train

__all__ = ["resolve_device", "resume", "train", "warm_feature_cache"]
