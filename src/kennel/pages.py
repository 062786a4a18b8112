"""A job's report page as kennel ships it: the sections of :mod:`kennel.report` with those the debugger, the
profiler and the user's scripts (:mod:`kennel.script`) register when their report modules are imported. Whatever
writes a job's page goes through here, so the generic report never imports the features built on it."""

from __future__ import annotations

# Each registers its section in kennel.report as it is imported.
from kennel.debugger import report as debugger_report
from kennel.profiler import report as profiler_report
from kennel.report import render_report, write_report
from kennel.script import report as script_report

__all__ = ["debugger_report", "profiler_report", "render_report", "script_report", "write_report"]
