"""kennel's profiler: where a training job's time goes and what to change.

Every job records system metrics (:mod:`~kennel.profiler.system`), each training step's time by phase
(:mod:`~kennel.profiler.observer`) and, on request, a ``torch.profiler`` window (:mod:`~kennel.profiler.trace`);
the rules (:mod:`~kennel.profiler.rules`) turn them into findings while the job runs, and
:mod:`~kennel.profiler.report` into ``profile.html`` (``kennel profile JOB``).
"""

from kennel.profiler.profile import Profile
from kennel.profiler.rules import PROFILER_RULES, Rule

# ProfilerSession (kennel.profiler.session) is not imported here: it reads the job's config, and the config
# module names the profiler's rules, so the package stays importable from the config.
__all__ = ["PROFILER_RULES", "Profile", "Rule"]
