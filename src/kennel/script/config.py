"""A ``kennel run`` job's settings: the user's script, its source folder, data channels, hyperparameters, the
metrics read from its log lines, and the debugger and profiler around it. Typed, checked once at the edge (the
command line), saved with the job as ``config.yaml``, which ``--resume`` runs again."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kennel.config import LocalPath, ProfilerConfig, absolute
from kennel.debugger.config import DebugConfig
from kennel.errors import UsageError

# SageMaker's default channel name: an estimator's fit("s3://...") with no name gives the channel "training".
DEFAULT_CHANNEL = "training"


class ScriptError(UsageError):
    """A ``kennel run`` request that cannot be used as given; the message names the flag and what it expects."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricDefinition(_Strict):
    """SageMaker's ``metric_definitions`` entry: each line of the script's output that ``regex`` matches is a point
    of metric ``name``, its value the regex's first group read as a float."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(alias="Name", min_length=1)
    regex: str = Field(alias="Regex", min_length=1)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, regex: str) -> str:
        try:
            groups = re.compile(regex).groups
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if groups < 1:
            raise ValueError("needs a group around the number, e.g. 'loss: ([0-9.eE+-]+)'")
        return regex


class ScriptConfig(_Strict):
    """Everything one run of a user's script needs. Hyperparameters keep the names and values the person gave:
    the script receives them as SageMaker's training toolkit hands them over (see kennel.script.environment)."""

    name: str | None = Field(None, description="job name; default: the script's name")
    entry_point: str = Field(description="the script, relative to source_dir")
    source_dir: LocalPath = Field(description="the folder copied with the job and run from")
    channels: dict[str, LocalPath] = Field(default_factory=dict, description="data channel -> folder")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    user_args: list[str] = Field(default_factory=list, description="passed after the hyperparameters")
    metrics: list[MetricDefinition] = Field(default_factory=list)
    processes: int = Field(1, ge=1, le=256, description="processes on this machine, under torchrun when above 1")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cpu hides the GPUs (SM_NUM_GPUS=0)")
    tracking: bool = Field(True, description="record the job in MLflow")
    debug: DebugConfig = DebugConfig()
    profiler: ProfilerConfig = ProfilerConfig()

    @field_validator("channels")
    @classmethod
    def _channels_exist(cls, channels: dict[str, Path]) -> dict[str, Path]:
        for name, folder in channels.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"channel name {name!r}: letters, digits, '_', '.' and '-' only")
            if not Path(folder).is_dir():
                raise ValueError(f"channel {name}: {folder} is not a folder")
        return channels

    @model_validator(mode="after")
    def _script_exists(self) -> ScriptConfig:
        if not Path(self.source_dir).is_dir():
            raise ValueError(f"source_dir {self.source_dir} is not a folder")
        if not self.script_path.is_file():
            raise ValueError(f"entry_point {self.entry_point} is not a file in {self.source_dir}")
        return self

    @property
    def script_path(self) -> Path:
        return Path(self.source_dir) / self.entry_point

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def decode_value(text: str) -> Any:
    """A hyperparameter's value as SageMaker's training toolkit reads hyperparameters.json: JSON where it parses
    (``0.01``, ``64``, ``true``, ``[1, 2]``, ``"a b"``), else the text itself (``resnet18``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_hyperparameters(items: list[str]) -> dict[str, Any]:
    """``--hp NAME=VALUE`` flags as a mapping, names kept exactly as given (``batch-size`` and ``batch_size``
    both occur in real scripts)."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ScriptError(f"--hp expects NAME=VALUE, got {item!r}")
        parsed[name.strip()] = decode_value(value)
    return parsed


def parse_channels(items: list[str], data: Path | None) -> dict[str, Path]:
    """``--channel NAME=DIR`` flags, with ``--data DIR`` as the channel ``training``."""
    channels: dict[str, Path] = {}
    if data is not None:
        channels[DEFAULT_CHANNEL] = data
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ScriptError(f"--channel expects NAME=DIR, got {item!r}")
        if name.strip() in channels:
            raise ScriptError(f"channel {name.strip()} is given twice (--data is the channel {DEFAULT_CHANNEL})")
        channels[name.strip()] = Path(folder.strip())
    for name, folder in channels.items():
        if not absolute(folder).is_dir():
            flag = "--data" if name == DEFAULT_CHANNEL and data is not None else f"--channel {name}="
            raise ScriptError(f"{flag}{'' if flag.endswith('=') else ' '}{folder}: no such folder")
    return channels


def parse_metric_flags(items: list[str]) -> list[MetricDefinition]:
    """``--metric NAME=REGEX`` flags (the regex may itself hold ``=``)."""
    metrics = []
    for item in items:
        name, sep, regex = item.partition("=")
        if not sep or not name.strip() or not regex:
            raise ScriptError(f"--metric expects NAME=REGEX, got {item!r}")
        metrics.append(_metric(name.strip(), regex, f"--metric {name.strip()}"))
    return metrics


def read_metric_definitions(path: Path) -> list[MetricDefinition]:
    """A file in SageMaker's ``metric_definitions`` form, JSON or YAML: ``[{"Name": ..., "Regex": ...}, ...]``."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ScriptError(f"--metric-definitions {path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ScriptError(f"--metric-definitions {path}: neither JSON nor YAML ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise ScriptError(f"--metric-definitions {path}: expected a list of {{Name, Regex}} entries")
    metrics = []
    for index, entry in enumerate(data):
        name, regex = entry.get("Name", entry.get("name")), entry.get("Regex", entry.get("regex"))
        if not isinstance(name, str) or not isinstance(regex, str):
            raise ScriptError(f"--metric-definitions {path}: entry {index} needs a Name and a Regex")
        metrics.append(_metric(name, regex, f"--metric-definitions {path}: {name}"))
    return metrics


def _metric(name: str, regex: str, where: str) -> MetricDefinition:
    try:
        return MetricDefinition(name=name, regex=regex)
    except ValidationError as exc:
        problem = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ScriptError(f"{where}: {problem} (got {regex!r})") from None


def unique_metrics(metrics: list[MetricDefinition]) -> list[MetricDefinition]:
    """One definition per name; a second one is the person's mistake."""
    names = [m.name for m in metrics]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScriptError(f"metric {', '.join(twice)} is defined more than once")
    return metrics
