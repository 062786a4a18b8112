"""The debugger's configuration (``debug:`` in a job's config): a preset, per-mode capture settings that refine
it, and the rules with their parameters. Parsed and checked once, with the rest of the job's config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["TRAIN", "EVAL"]  # the loop's modes; a job predicts (its test split) outside the loop
Collection = Literal["losses", "weights", "biases", "gradients", "activations", "inputs"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Capture(_Strict):
    """What one mode saves. The loss is a number the loop already has, so it is kept at every step in range;
    the other collections only every ``save_interval`` steps of that mode."""

    save_interval: int = Field(10, ge=1, description="save the collections every N steps of this mode")
    start_step: int = Field(0, ge=0, description="first step of this mode to save")
    end_step: int | None = Field(None, ge=1, description="stop saving at this step of this mode; none = never")
    collections: list[Collection] = Field(default_factory=lambda: ["losses"])

    def saves(self, step: int) -> bool:
        """Whether step ``step`` (counted from 0 in this mode) saves its collections."""
        return self.in_range(step) and (step - self.start_step) % self.save_interval == 0

    def in_range(self, step: int) -> bool:
        return step >= self.start_step and (self.end_step is None or step < self.end_step)


class CaptureOverride(_Strict):
    """Changes to a preset's capture for one mode; unset fields keep the preset's."""

    save_interval: int | None = Field(None, ge=1)
    start_step: int | None = Field(None, ge=0)
    end_step: int | None = Field(None, ge=1)
    collections: list[Collection] | None = None


# Light: what the rules need at a cost a short run does not notice (no activation hooks, every 50th step).
# Full: every collection, activations included, every 5th step.
PRESETS: dict[str, dict[str, Capture]] = {
    "off": {},
    "light": {
        "TRAIN": Capture(save_interval=50, collections=["losses", "weights", "biases", "gradients", "inputs"]),
        "EVAL": Capture(save_interval=10, collections=["losses", "inputs"]),
    },
    "full": {
        "TRAIN": Capture(
            save_interval=5, collections=["losses", "weights", "biases", "gradients", "activations", "inputs"]
        ),
        "EVAL": Capture(save_interval=5, collections=["losses", "activations", "inputs"]),
    },
}


class DebugConfig(_Strict):
    """``preset`` picks the capture for each mode (``off`` turns the debugger off); ``modes`` refines it, e.g.
    ``--set debug.modes.TRAIN.save_interval=5``. Every built-in rule runs with its documented defaults;
    ``rules`` sets parameters (``Overfit: {ratio: 0.2}``), asks a rule to stop the job (``stop: true``), turns one
    off (``false``) or selects a custom rule registered by name (in a module listed in ``imports``)."""

    preset: Literal["off", "light", "full"] = Field("light", description="off, light or full")
    modes: dict[Mode, CaptureOverride] = Field(default_factory=dict, description="per-mode capture changes")
    rules: dict[str, dict[str, Any] | bool] = Field(default_factory=dict, description="rule -> params, or false")
    imports: list[str] = Field(default_factory=list, description="modules that register custom rules")

    @model_validator(mode="after")
    def _rules_exist(self) -> DebugConfig:
        self.build_rules()  # unknown rules and bad parameters are errors now, not when the job starts
        return self

    @property
    def enabled(self) -> bool:
        return self.preset != "off"

    def capture(self, mode: str) -> Capture | None:
        """The resolved capture of ``mode``, or None when it saves nothing."""
        base = PRESETS[self.preset].get(mode)
        override = self.modes.get(mode)
        if (base is None and override is None) or not self.enabled:
            return None
        merged = (base or Capture()).model_dump()
        if override is not None:
            merged.update(override.model_dump(exclude_none=True))
        return Capture.model_validate(merged)

    def build_rules(self) -> list:
        """The rule instances this config selects, in registry order, custom ones after the built-ins."""
        from kennel.debugger.rules import BUILTIN_RULES, DEBUGGER_RULES
        from kennel.rules import import_modules

        import_modules(self.imports, "debug.imports")
        return DEBUGGER_RULES.select(self.rules, BUILTIN_RULES)
