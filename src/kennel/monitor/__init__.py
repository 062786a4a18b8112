"""``kennel monitor``: has the traffic a model serves drifted from the photos it was validated on?

The endpoint's capture (:mod:`kennel.serve.capture`) records each sampled request; the monitor runs the job's
model over the job's valid split and measures the same quantities there (:mod:`kennel.monitor.reference`),
compares the two with one rule per quantity (:mod:`kennel.monitor.rules`: confidence, class mix, share of "no
dog" answers, brightness, image size; each a PSI checked by a permutation test, :mod:`kennel.monitor.drift`)
and writes ``monitor.html`` (:mod:`kennel.monitor.report`). Findings have the debugger's and the profiler's
shape (:class:`kennel.findings.Finding`)::

    from kennel.monitor import run_monitor, write_monitor_page
    run = run_monitor("jobs/J/model", valid_split, "capture/", cache=Path("jobs/J/monitor-reference.json"))
    for finding in run.fired:
        print(finding.message, finding.advice)
"""

from kennel.monitor.comparison import Comparison
from kennel.monitor.reference import REFERENCE_FILE, Reference, load_reference
from kennel.monitor.report import MONITOR_PAGE, write_monitor_page
from kennel.monitor.rules import BUILTIN_RULES, MONITOR_RULES
from kennel.monitor.run import MonitorRun, judge, run_monitor
from kennel.monitor.sample import Sample
from kennel.monitor.traffic import Traffic, load_traffic

__all__ = [
    "BUILTIN_RULES",
    "MONITOR_PAGE",
    "MONITOR_RULES",
    "REFERENCE_FILE",
    "Comparison",
    "MonitorRun",
    "Reference",
    "Sample",
    "Traffic",
    "judge",
    "load_reference",
    "load_traffic",
    "run_monitor",
    "write_monitor_page",
]
