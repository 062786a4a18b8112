"""The numbers of a profile that a person reads first, shared by ``kennel profile`` and profile.html."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from kennel.engine.clock import PHASES
from kennel.findings import ERROR, ISSUES_FOUND, NO_DATA, NO_ISSUES, NOT_APPLICABLE, Finding
from kennel.profiler.profile import Profile, stats
from kennel.profiler.rules import BUILTIN_RULES, PROFILER_RULES
from kennel.rules import Rule, import_modules

# (key of Profile.series, label, unit): the system usage table, in this order.
SYSTEM_METRICS = (
    ("cpu", "CPU, mean of the cores", "%"),
    ("cpu_max", "CPU, busiest core", "%"),
    ("iowait", "I/O wait", "%"),
    ("proc_cpu", "CPU, job processes (100% = one core)", "%"),
    ("mem", "memory, machine", "%"),
    ("proc_rss_mb", "memory, job processes (resident)", "MB"),
    ("proc_read_mb_s", "read, job processes", "MB/s"),
    ("proc_write_mb_s", "written, job processes", "MB/s"),
    ("disk_read_mb_s", "disk read, machine", "MB/s"),
    ("disk_write_mb_s", "disk written, machine", "MB/s"),
    ("net_recv_mb_s", "network received, machine", "MB/s"),
    ("net_sent_mb_s", "network sent, machine", "MB/s"),
)
GPU_METRICS = (("util", "utilisation", "%"), ("mem", "memory", "%"), ("power_w", "power", "W"))
MAX_CORE_ROWS = 16  # machines with more cores show the mean and the busiest core only
STATUS_ORDER = {ISSUES_FOUND: 0, ERROR: 1, NO_ISSUES: 2, NO_DATA: 3, NOT_APPLICABLE: 4}


@dataclass
class RuleRow:
    name: str
    description: str
    # None: the rule never ran (e.g. the job ended before its first check). The tables give a rule one column
    # of text, so its advice is led by its message: what it saw, or why it could not judge.
    finding: Finding | None

    @property
    def status(self) -> str:
        return self.finding.status if self.finding else "not run"


@dataclass
class Summary:
    job: dict[str, Any]
    context: dict[str, Any]
    started: str | None
    ended: str | None
    total_s: float
    phases: list[tuple[str, float, float]]  # (phase, seconds, share of the total)
    usage: list[tuple[str, str, dict[str, float]]]  # (metric, unit, max/p99/p95/p50/min)
    breakdown: list[tuple[str, float, float, float, float]]  # (phase, seconds, share, p50 ms, p95 ms)
    steps: dict[str, float]
    rules: list[RuleRow] = field(default_factory=list)

    @property
    def fired(self) -> list[RuleRow]:
        return [row for row in self.rules if row.status == ISSUES_FOUND]


def _clock(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, timezone.utc).astimezone().isoformat(timespec="seconds") if stamp else None


def configured_rule(profile: Profile, name: str) -> Rule:
    """Rule ``name`` with the thresholds the job ran it with."""
    params = (profile.context.get("rules") or {}).get(name)
    return PROFILER_RULES.build(name, params if isinstance(params, dict) else {})


def usage_rows(profile: Profile) -> list[tuple[str, str, dict[str, float]]]:
    rows = [(label, unit, stats(profile.series(key))) for key, label, unit in SYSTEM_METRICS]
    per_core = profile.cores_table
    if per_core.shape[1] <= MAX_CORE_ROWS:
        rows[2:2] = [(f"CPU core {i}", "%", stats(per_core[:, i])) for i in range(per_core.shape[1])]
    for key, label, unit in GPU_METRICS:
        matrix = profile.gpu_series(key)
        rows += [(f"GPU {i} {label}", unit, stats(matrix[:, i])) for i in range(matrix.shape[1])]
    return [row for row in rows if np.isfinite(row[2]["max"])]


def breakdown_rows(profile: Profile) -> list[tuple[str, float, float, float, float]]:
    parts = profile.loop_breakdown()
    whole = sum(parts.values()) or 1.0
    table = profile.step_table
    rows = []
    for name, seconds in parts.items():
        per_step = table.get(name) if name in (*PHASES, "other") else None
        finite = per_step[np.isfinite(per_step)] if per_step is not None else np.array([])
        p50, p95 = (np.percentile(finite, [50, 95]) * 1000) if len(finite) else (np.nan, np.nan)
        rows.append((name, seconds, seconds / whole, float(p50), float(p95)))
    return rows


def step_stats(profile: Profile) -> dict[str, float]:
    table = profile.step_table
    busy = table["busy"][np.isfinite(table["busy"])]
    numbers = {"steps": float(len(table["step"]))}
    if len(busy):
        numbers |= {f"{k}_ms": v * 1000 for k, v in stats(busy).items()} | {"mean_ms": float(busy.mean() * 1000)}
    return numbers


def rule_rows(profile: Profile) -> list[RuleRow]:
    """A row per rule the job ran (a job from before kennel noted them: the built-in ones), and per rule that
    left a finding (one since retired)."""
    # A report written after the job, in another process: its custom rules describe and draw themselves.
    with contextlib.suppress(ValueError):
        import_modules(profile.context.get("imports") or (), "profiler.imports")
    results = profile.rule_results()
    names = dict.fromkeys([*(profile.context.get("rule_names") or BUILTIN_RULES), *results])
    rows = [RuleRow(name, _description(name), results.get(name)) for name in names]
    return sorted(rows, key=lambda row: (STATUS_ORDER.get(row.status, len(STATUS_ORDER)), row.name))


def _description(name: str) -> str:
    return PROFILER_RULES.get(name).describe() if name in PROFILER_RULES else ""


def summarize(profile: Profile, job: dict[str, Any] | None = None) -> Summary:
    phases = profile.phase_seconds()
    total = sum(phases.values())
    return Summary(
        job=job or {},
        context=profile.context,
        started=_clock(profile.started),
        ended=_clock(profile.ended),
        total_s=total,
        phases=[(name, seconds, seconds / total if total else 0.0) for name, seconds in phases.items()],
        usage=usage_rows(profile),
        breakdown=breakdown_rows(profile),
        steps=step_stats(profile),
        rules=rule_rows(profile),
    )


def format_numbers(numbers: dict[str, float]) -> str:
    """``{"data_share": 0.61, "steps": 40}`` -> ``data_share=0.61 steps=40``."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
