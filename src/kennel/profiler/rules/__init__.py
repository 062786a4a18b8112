"""The profiler rules: one rule per module, registered by class name in :data:`PROFILER_RULES`.

Thresholds start from SageMaker's documented defaults (``rules.md``); ``DataBottleneck`` and ``MemoryIncrease``
are kennel's CPU-side additions. Set a threshold in a job's config as ``profiler.rules.<Rule>.<field>``, ask a
rule to stop the job when it finds an issue with ``profiler.rules.<Rule>.stop: true``, turn one off with
``profiler.rules.<Rule>: false``.

A custom rule is written like the built-in ones (:mod:`kennel.rules` has the base class)::

    from dataclasses import dataclass
    import numpy as np
    from kennel.profiler import plots
    from kennel.profiler.profile import Profile
    from kennel.profiler.rules import PROFILER_RULES
    from kennel.rules import Rule

    @PROFILER_RULES.rule
    @dataclass
    class SlowSteps(Rule[Profile]):
        \"\"\"The median step takes longer than ``limit_ms``.\"\"\"

        limit_ms: float = 500.0

        def check(self, profile):
            busy = profile.step_table["busy"]
            if len(busy) < 10:
                return self.no_data(profile, f"{len(busy)} steps so far; the rule needs 10")
            median = 1000 * float(np.nanmedian(busy))
            if median <= self.limit_ms:
                return self.fine(profile, median_ms=median)
            return self.issue(profile, f"the median step takes {median:.0f} ms", "raise data.workers",
                              median_ms=median)

        def plot(self, profile, finding, ax):   # optional: the report draws it for an issue
            plots.step_points(ax, profile, "busy")

It runs at every check of the profile when a job's config selects it, ``profiler.rules: {SlowSteps: {}}``, with
``profiler.imports: [my_module]`` so that ``kennel train`` imports the module that registers it first.
"""

from kennel.profiler.rules import (  # noqa: F401  (each module registers its rule)
    batch_size,
    cpu_bottleneck,
    data_bottleneck,
    dataloader,
    gpu_memory_increase,
    io_bottleneck,
    load_balancing,
    low_gpu_utilization,
    max_initialization_time,
    memory_increase,
    overall_system_usage,
    step_outlier,
)
from kennel.profiler.rules.common import PROFILER_RULES
from kennel.rules import Rule, RuleRunner

# The rules every job runs unless its config turns one off; custom rules run where a config names them.
BUILTIN_RULES = tuple(PROFILER_RULES.names())

__all__ = ["BUILTIN_RULES", "PROFILER_RULES", "Rule", "RuleRunner"]
