"""What the hook inside the user's script is asked to capture, and where it writes: a JSON file the job writes
before the script starts (``input/config/hook.json``) and names in ``KENNEL_HOOK_CONFIG``. Torch-free: the
command line writes it.

    HookSettings(job_id=record.id, debug=config.debug, debug_dir=job.debug,
                 profiler_steps=job.profiler / "steps.jsonl", stop_file=job.stop_file).write(job.hook_config)

The process's rank is not a setting: under torchrun the hook reads ``RANK`` (rank 0 runs the debugger, every rank
writes its own step records)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kennel.atomic import atomic_write_text
from kennel.debugger.config import DebugConfig


class HookSettings(BaseModel):
    """The hook's settings for one job."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="the job the script runs as")
    debug: DebugConfig = Field(default_factory=DebugConfig, description="what to capture; preset off: nothing")
    debug_dir: Path = Field(description="the job's debug/ folder: records, losses, findings.jsonl, rules.json")
    profiler_steps: Path | None = Field(
        None,
        description="rank 0's step records (JSON lines, one per training step; rank k writes steps-rank{k}.jsonl "
        "beside it); none: the profiler is off",
    )
    stop_file: Path = Field(description="written when a debugger rule with stop set ends the script (stop.json)")
    classes: list[str] = Field(
        default_factory=list, description="the labels' names, by index, where the job knows them (findings name them)"
    )

    def write(self, path: Path | str) -> None:
        """Write the settings to ``path`` in one rename: the script never reads half a file."""
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path | str) -> HookSettings:
        """The settings in ``path``; a ValueError names what is wrong with them."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
