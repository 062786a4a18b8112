"""The training job's configuration: typed, validated once at the edge, saved with the job.

Precedence: defaults, then a YAML file, then command-line flags. Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kennel.debugger.config import DebugConfig
from kennel.errors import KennelError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def absolute(path: Path) -> Path:
    """``path`` as seen from the folder kennel was started in, ``~`` and ``..`` spelled out (links are kept). A
    config is written with its job and a study writes ``best.yaml``: a relative path in them would name another
    folder to whoever runs them next from elsewhere."""
    return Path(os.path.abspath(path.expanduser()))


# A file or folder on this machine, made absolute where the config is parsed: every config kennel writes is absolute.
LocalPath = Annotated[Path, AfterValidator(absolute)]
# Where a config holds a LocalPath (test_config checks that this names every one).
PATH_KEYS = ("data.root", "data.train", "data.valid", "data.test", "model.weights")


class DataConfig(_Strict):
    root: LocalPath | None = Field(None, description="dataset folder holding train/ valid/ test/")
    train: LocalPath | None = Field(None, description="train split folder (default ROOT/train)")
    valid: LocalPath | None = Field(None, description="validation split folder (default ROOT/valid)")
    test: LocalPath | None = Field(None, description="test split folder (default ROOT/test)")
    batch_size: int = Field(32, ge=1, le=8192)
    workers: int | None = Field(None, ge=0, description="DataLoader workers; default: sized to the machine")
    augment: Literal["none", "light", "strong"] = "light"
    image_size: int | None = Field(None, ge=16, le=1024, description="input size; default: the backbone's")

    def split_dir(self, split: str) -> Path:
        explicit = getattr(self, split)
        if explicit is not None:
            return Path(explicit)
        if self.root is None:
            raise ValueError(f"no dataset: set data.root (--data DIR) or data.{split}")
        return Path(self.root) / split


class ModelConfig(_Strict):
    backbone: str = "tf_efficientnet_lite0+tf_efficientnet_lite2"  # kennel.recipes: the default recipe
    pretrained: bool = True
    weights: LocalPath | None = Field(None, description="weights file instead of the normal sources")
    freeze: int | Literal["all"] = Field(
        "all", description="backbone stages to freeze: all, 0 (none), N (the first N) or -N (all but the last N)"
    )
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout before the new head")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from kennel.models import get_backbone

        try:
            get_backbone(name)
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]} (several joined by + are fused)") from None
        return name

    @model_validator(mode="after")
    def _one_weights_file_one_backbone(self) -> ModelConfig:
        if self.weights is not None and "+" in self.backbone:  # kennel.models.fusion.SEPARATOR
            raise ValueError(f"weights: {self.backbone} is fused; each member loads its own weights")
        return self

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_from_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
            return int(value)
        return value


class OptimConfig(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    backbone_lr_scale: float = Field(0.1, ge=0.0, le=1.0, description="backbone lr = lr x this")
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)


class EngineConfig(_Strict):
    """How the frozen forward passes run (feature extraction, test evaluation): see ``kennel doctor``."""

    backend: str = Field(
        "auto", description="auto (the fastest measured here), a runtime (torch, onnxruntime) or a backend name"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto", description="auto: int8 only where it is faster here and keeps valid top-1 within 0.5 points"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        from kennel.inference import BACKENDS
        from kennel.inference.engine import ALIASES

        runtimes = {BACKENDS.get(b).runtime for b in BACKENDS}
        if name not in {"auto", *runtimes, *BACKENDS, *ALIASES}:
            raise ValueError(
                f"unknown inference backend {name!r}; known: auto, {', '.join(sorted(runtimes | set(BACKENDS)))}"
            )
        return name


class TraceConfig(_Strict):
    """A ``torch.profiler`` window over a few training steps: a Chrome trace and the top operators."""

    enabled: bool = Field(False, description="record the window (kennel train --profile)")
    wait: int = Field(5, ge=0, description="steps to let pass before the window")
    warmup: int = Field(2, ge=0, description="steps profiled but discarded (the profiler's own start-up)")
    active: int = Field(5, ge=1, description="steps recorded")
    top_operators: int = Field(30, ge=1, description="operators kept in the table, by self time")


class ProfilerConfig(_Strict):
    """System and step metrics, the profiler rules and profile.html, for every job unless turned off. As
    ``debug.rules`` does, ``rules`` sets a rule's thresholds, asks it to stop the job (``stop: true``), turns it
    off (``false``) or selects a custom rule registered by name (in a module listed in ``imports``)."""

    enabled: bool = True
    interval_s: float = Field(0.5, ge=0.01, le=60.0, description="seconds between system samples")
    check_every_s: float = Field(10.0, gt=0.0, description="seconds between rule checks while the loop runs")
    report: bool = Field(True, description="write profile.html when the job ends")
    trace: TraceConfig = TraceConfig()
    rules: dict[str, dict[str, Any] | bool] = Field(
        default_factory=dict, description="rule -> thresholds and stop: true, or false; e.g. {StepOutlier: {stddev: 4}}"
    )
    imports: list[str] = Field(default_factory=list, description="modules that register custom rules")

    @model_validator(mode="before")
    @classmethod
    def _no_stop_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stop_on" in data:
            names = data["stop_on"]
            if names:
                names = names if isinstance(names, list) else [names]
                example = ", ".join(f"profiler.rules.{name}.stop: true" for name in names)
                raise ValueError(f"profiler.stop_on is gone: write {example} instead")
            data = {k: v for k, v in data.items() if k != "stop_on"}  # an empty one, as older jobs saved it
        return data

    @model_validator(mode="after")
    def _rules_exist(self) -> ProfilerConfig:
        if self.rules or self.imports:  # the defaults are sound, and checking them would import PyTorch
            self.build_rules()  # unknown rules and bad thresholds are errors now, not when the job starts
        return self

    def build_rules(self) -> list:
        """The rule instances this config selects: the built-in ones it does not turn off, then its custom ones."""
        from kennel.profiler.rules import BUILTIN_RULES, PROFILER_RULES
        from kennel.rules import import_modules

        import_modules(self.imports, "profiler.imports")
        return PROFILER_RULES.select(self.rules, BUILTIN_RULES)


class TrainConfig(_Strict):
    """Everything one training job needs. ``kennel train --help`` lists the common flags."""

    name: str | None = Field(None, description="job name; default: a generated one")
    seed: int = 0
    epochs: int = Field(15, ge=1, le=10000)
    early_stopping: int = Field(0, ge=0, description="stop after N epochs without a better valid loss; 0 = off")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="mixed precision for training on CUDA")
    channels_last: bool = True
    compile: bool = Field(False, description="torch.compile the training forward (pays off on long CUDA runs)")
    feature_cache: bool = Field(True, description="frozen backbone: compute features once, train the head")
    tta: Literal["none", "flip", "crops"] = Field(
        "none",
        description="test-time augmentation: flip averages the features of each photo and its mirror image, crops "
        "those of the photo and its four corners (5 passes)",
    )
    head: Literal["best", "sgd", "lbfgs"] = Field(
        "best",
        description="on cached features: sgd (the loop's head), lbfgs (logistic regression, its L2 chosen on "
        "valid) or best (both; the one better on valid is kept)",
    )
    feature_views: int = Field(1, ge=1, le=32, description="augmented views cached per train image (1 = none)")
    stage_cache: bool = Field(
        False,
        description="partly frozen backbone (model.freeze N): compute the frozen stages' output once per photo "
        "and view (feature_views), then fine-tune the other stages and the head on it instead of on photos",
    )
    log_every: int = Field(10, ge=1, description="steps between metric lines")
    export_onnx: bool = True
    evaluate_test: bool = True
    tracking: bool = Field(True, description="record the job in MLflow")
    data: DataConfig = DataConfig()
    engine: EngineConfig = EngineConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    profiler: ProfilerConfig = ProfilerConfig()
    debug: DebugConfig = DebugConfig()

    @model_validator(mode="after")
    def _views_need_cache(self) -> TrainConfig:
        if self.feature_views > 1 and self.data.augment == "none":
            raise ValueError("feature_views > 1 needs data.augment light or strong (views would be identical)")
        return self

    @model_validator(mode="after")
    def _stage_cache_needs_stages(self) -> TrainConfig:
        if not self.stage_cache:
            return self
        # With freeze all the features themselves are cached (feature_cache); with none there is nothing to cache.
        if self.model.freeze == 0:
            raise ValueError("stage_cache needs model.freeze N or -N, not 0: the frozen stages whose output is cached")
        if "+" in self.model.backbone:  # kennel.models.fusion.SEPARATOR
            raise ValueError(f"stage_cache: {self.model.backbone} is fused, and a fused backbone is one stage")
        if self.tta != "none":
            raise ValueError(f"stage_cache: tta {self.tta} runs over the whole backbone; use tta none")
        if self.engine.precision == "int8":
            raise ValueError("stage_cache runs the frozen stages at fp32 or bf16; int8 is for frozen features")
        return self


class ConfigError(KennelError, ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


def _format_validation(error: ValidationError, source: str) -> str:
    from kennel.validation import one_line

    return f"invalid configuration ({source}): {one_line(error)}"


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1}`` -> ``{"optim": {"lr": 0.1}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def dotted_value(nested: dict[str, Any], dotted: str) -> Any:
    """``({"optim": {"lr": 0.1}}, "optim.lr")`` -> ``0.1``; None where a key is absent."""
    node: Any = nested
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """A config mapping not validated yet (a file's keys and flags, a study's base) with its :data:`PATH_KEYS`
    made absolute as :class:`TrainConfig` makes them, for a record that keeps the mapping itself."""
    paths = {key: value for key in PATH_KEYS if isinstance(value := dotted_value(raw, key), (str, Path)) and value}
    return deep_merge(raw, dotted_to_nested({key: str(absolute(Path(value))) for key, value in paths.items()}))


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.01", "model.freeze=all"]`` (``--set`` flags) -> dotted overrides, values read as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def read_config_file(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(
    file: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    recipe: str | None = None,
) -> TrainConfig:
    """Defaults <- ``base`` <- ``recipe`` (:mod:`kennel.recipes`) <- ``file`` <- ``overrides`` (dotted keys);
    raise :class:`ConfigError` if invalid."""
    raw: dict[str, Any] = dict(base or {})
    sources = ["defaults"]
    if recipe is not None:
        from kennel.recipes import recipe_settings

        try:
            raw = deep_merge(raw, recipe_settings(recipe))
        except ValueError as exc:
            raise ConfigError(f"--recipe: {exc}") from None
        sources.append(f"recipe {recipe}")
    if file is not None:
        raw = deep_merge(raw, read_config_file(file))
        sources.append(str(file))
    if overrides:
        raw = deep_merge(raw, dotted_to_nested({k: v for k, v in overrides.items() if v is not None}))
        sources.append("flags")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, " <- ".join(sources))) from None


def config_to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
