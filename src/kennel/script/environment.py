"""The environment SageMaker's training toolkit gives a script-mode entry point, rebuilt for a job folder.

The toolkit reads ``/opt/ml/input/config/*.json`` and starts ``python SCRIPT --name value ...`` with ``SM_*``
variables describing the job. kennel writes the same files into the job folder (:mod:`kennel.script.contract`)
and sets the same variables, pointing at those folders, so a script written for SageMaker runs unchanged:

- hyperparameters reach the script as ``--name value`` in sorted order (a one-letter name as ``-n``), the value as
  ``str()`` of the decoded JSON (``True`` for true, which is why scripts parse booleans with ``str2bool``), a
  mapping as ``k=v,k2=v2``; and as ``SM_HPS`` (a JSON object) and ``SM_HP_<NAME>`` (the name upper-cased as
  given, ``SM_HP_BATCH-SIZE``; a string as it is, anything else as JSON);
- ``SM_CHANNEL_<NAME>`` is the channel's own folder (nothing is copied), ``SM_CHANNELS`` the sorted names.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kennel.atomic import atomic_write_json
from kennel.processes import available_cores
from kennel.script.config import ScriptConfig
from kennel.script.contract import CHECKPOINT_ENV, HOOK_CONFIG_ENV, JOB_DIR_ENV, ScriptJobDir

HOST = "algo-1"  # the toolkit's name for the first (here: the only) host
LOG_LEVEL = 20  # logging.INFO, the toolkit's default


def command_arguments(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The toolkit's ``--name value`` list, in sorted order."""
    args: list[str] = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        if isinstance(value, Mapping):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{name}" if len(name) > 1 else f"-{name}", "" if value is None else str(value)]
    return args


def _env_value(value: Any) -> str:
    """How the toolkit writes a value into an ``SM_*`` variable: a string as it is, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def gpu_count(device: str) -> int:
    """The GPUs the script will see: CUDA_VISIBLE_DEVICES where it is set, else what NVML counts (no PyTorch
    import, which would cost this process seconds for a number)."""
    if device == "cpu":
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver, or no nvidia-ml-py: no GPU to count
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def training_environment(config: ScriptConfig, job: ScriptJobDir, job_name: str) -> dict[str, str]:
    """The ``SM_*`` variables (and the few others the toolkit sets) for a run of ``config`` in ``job``."""
    channels = {name: str(folder) for name, folder in sorted(config.channels.items())}
    hosts = [HOST]
    resources = {"current_host": HOST, "hosts": hosts, "network_interface_name": "lo"}
    data_config = {name: _channel_config() for name in channels}
    gpus = gpu_count(config.device)
    user_args = command_arguments(config.hyperparameters) + list(config.user_args)
    training_env = {
        "additional_framework_parameters": {},
        "channel_input_dirs": channels,
        "current_host": HOST,
        "framework_module": None,
        "hosts": hosts,
        "hyperparameters": config.hyperparameters,
        "input_config_dir": str(job.input_config),
        "input_data_config": data_config,
        "input_dir": str(job.input_dir),
        "is_master": True,
        "job_name": job_name,
        "log_level": LOG_LEVEL,
        "model_dir": str(job.model),
        "module_dir": str(job.source),
        "module_name": Path(config.entry_point).stem,
        "network_interface_name": "lo",
        "num_cpus": available_cores(),
        "num_gpus": gpus,
        "output_data_dir": str(job.output_data),
        "output_dir": str(job.output),
        "output_intermediate_dir": str(job.output / "intermediate"),
        "resource_config": resources,
        "user_entry_point": config.entry_point,
    }
    env = {
        "SM_MODEL_DIR": str(job.model),
        "SM_OUTPUT_DIR": str(job.output),
        "SM_OUTPUT_DATA_DIR": str(job.output_data),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(job.output / "intermediate"),
        "SM_INPUT_DIR": str(job.input_dir),
        "SM_INPUT_CONFIG_DIR": str(job.input_config),
        "SM_CHANNELS": _env_value(sorted(channels)),
        "SM_HPS": _env_value(config.hyperparameters),
        "SM_USER_ARGS": _env_value(user_args),
        "SM_USER_ENTRY_POINT": config.entry_point,
        "SM_MODULE_NAME": Path(config.entry_point).stem,
        "SM_MODULE_DIR": str(job.source),
        "SM_NUM_GPUS": str(gpus),
        "SM_NUM_CPUS": str(available_cores()),
        "SM_NUM_NEURONS": "0",
        "SM_HOSTS": _env_value(hosts),
        "SM_CURRENT_HOST": HOST,
        "SM_NETWORK_INTERFACE_NAME": "lo",
        "SM_LOG_LEVEL": str(LOG_LEVEL),
        "SM_RESOURCE_CONFIG": _env_value(resources),
        "SM_INPUT_DATA_CONFIG": _env_value(data_config),
        "SM_FRAMEWORK_PARAMS": "{}",
        "SM_TRAINING_ENV": _env_value(training_env),
        "SAGEMAKER_PROGRAM": config.entry_point,
        "SAGEMAKER_SUBMIT_DIRECTORY": str(job.source),
        "TRAINING_JOB_NAME": job_name,
        "PYTHONUNBUFFERED": "1",
        CHECKPOINT_ENV: str(job.checkpoints),
        JOB_DIR_ENV: str(job.path),
        HOOK_CONFIG_ENV: str(job.hook_config),
    }
    env.update({f"SM_CHANNEL_{name.upper()}": folder for name, folder in channels.items()})
    env.update({f"SM_HP_{name.upper()}": _env_value(value) for name, value in config.hyperparameters.items()})
    if config.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _channel_config() -> dict[str, str]:
    return {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}


def prepare_folders(config: ScriptConfig, job: ScriptJobDir) -> None:
    """The job's SageMaker folders, the input config files a script may read instead of the variables, and a
    link per channel under ``input/data`` (where SageMaker would have copied it)."""
    for folder in (job.model, job.output_data, job.checkpoints, job.logs, job.input_config, job.input_data):
        folder.mkdir(parents=True, exist_ok=True)
    # hyperparameters.json holds JSON-encoded strings, as the SageMaker SDK uploads them.
    encoded = {name: json.dumps(value) for name, value in config.hyperparameters.items()}
    atomic_write_json(job.input_config / "hyperparameters.json", encoded)
    atomic_write_json(job.input_config / "resourceconfig.json", {"current_host": HOST, "hosts": [HOST]})
    channels = {name: _channel_config() for name in config.channels}
    atomic_write_json(job.input_config / "inputdataconfig.json", channels)
    for name, folder in config.channels.items():
        link = job.input_data / name
        if link.is_symlink() or link.exists():
            link.unlink()
        with contextlib.suppress(OSError):  # a file system without links: the variables still name the folder
            link.symlink_to(folder, target_is_directory=True)
