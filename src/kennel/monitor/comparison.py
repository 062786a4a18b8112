"""What the monitor's rules read: the reference sample (the job's valid split) and the traffic sample (the
capture), as :class:`~kennel.profiler.profile.Profile` is what the profiler's rules read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kennel.monitor.sample import Sample


@dataclass(frozen=True)
class Comparison:
    reference: Sample
    traffic: Sample
    # A finding's step and mode (kennel.findings.Finding): the monitor looks at served traffic, at no step.
    step: ClassVar[None] = None
    mode: ClassVar[str] = "SERVE"
