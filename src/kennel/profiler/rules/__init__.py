"""The profiler rules: one rule per module, registered by class name in :data:`PROFILER_RULES`.

Thresholds start from SageMaker's documented defaults (``rules.md``); ``DataBottleneck`` and ``MemoryIncrease``
are kennel's CPU-side additions. Set a threshold in a job's config as ``profiler.rules.<Rule>.<field>``.
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
from kennel.profiler.rules.base import PROFILER_RULES, Rule, build_rule, register_rule, rule_class
from kennel.profiler.rules.runner import RuleRunner

__all__ = ["PROFILER_RULES", "Rule", "RuleRunner", "build_rule", "register_rule", "rule_class"]
