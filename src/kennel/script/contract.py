"""What a ``kennel run`` job and the code inside the user's process agree on: where things are in the job folder,
and the environment variables that say so. Nothing here imports PyTorch: both sides read it.

A script job's folder (its record says ``kind: script``), beside what every job has (``job.json``,
``metrics.jsonl``, ``debug/``, ``profiler/``, the reports)::

    config.yaml       the run's resolved settings (kennel.script.config.ScriptConfig): what --resume runs again
    source/           a copy of the source folder; the script runs from here (SageMaker's /opt/ml/code)
    input/config/     hyperparameters.json, resourceconfig.json, inputdataconfig.json (SM_INPUT_CONFIG_DIR), and
                      the hook's settings, hook.json
    input/data/NAME   a link to each channel's folder (SM_CHANNEL_NAME names the folder itself)
    model/            SM_MODEL_DIR: what the script saves there is the job's artifact (SageMaker's /opt/ml/model)
    output/           SM_OUTPUT_DIR; output/data is SM_OUTPUT_DATA_DIR
    checkpoints/      SageMaker's /opt/ml/checkpoints: kept with the job, handed back on --resume
    logs/             stdout.log and stderr.log, as the script wrote them
    stop.json         written by the hook when a debugger rule with ``stop`` set ends the script: {"reason": ...,
                      "rule": NAME}, the moment the rule fires; the script then exits with STOPPED_BY_RULE

Inside the script's process the hook (kennel.script.hook) writes, as kennel train's loop does, ``debug/`` (rank 0:
records, losses, findings.jsonl, rules.json) and ``profiler/steps.jsonl`` (rank k: ``steps-rank{k}.jsonl``), one
line per training step, at least every second; the job's own profiler samples the system and reads those lines.
"""

from __future__ import annotations

from pathlib import Path

# The environment kennel adds for the user's process (beside SageMaker's SM_* variables).
HOOK_CONFIG_ENV = "KENNEL_HOOK_CONFIG"  # the hook's settings file (hook.json); unset: the hook captures nothing
JOB_DIR_ENV = "KENNEL_SCRIPT_JOB_DIR"  # the job folder, for the hook and for tests
CHECKPOINT_ENV = "KENNEL_CHECKPOINT_DIR"  # SageMaker's /opt/ml/checkpoints, for scripts that look for one

# Exit status of a script a debugger rule stopped (the hook raises SystemExit with it); the same as kennel train's.
STOPPED_BY_RULE = 3

SOURCE, INPUT, MODEL, OUTPUT, CHECKPOINTS, LOGS = "source", "input", "model", "output", "checkpoints", "logs"
HOOK_FILE = "hook.json"
STOP_FILE = "stop.json"
STDOUT_LOG, STDERR_LOG = "stdout.log", "stderr.log"


class ScriptJobDir:
    """The script-job names inside a job folder (:class:`kennel.jobs.JobDir` has those every job shares)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    source = property(lambda self: self.path / SOURCE)
    input_dir = property(lambda self: self.path / INPUT)
    input_config = property(lambda self: self.path / INPUT / "config")
    input_data = property(lambda self: self.path / INPUT / "data")
    model = property(lambda self: self.path / MODEL)
    output = property(lambda self: self.path / OUTPUT)
    output_data = property(lambda self: self.path / OUTPUT / "data")
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    logs = property(lambda self: self.path / LOGS)
    stdout_log = property(lambda self: self.path / LOGS / STDOUT_LOG)
    stderr_log = property(lambda self: self.path / LOGS / STDERR_LOG)
    hook_config = property(lambda self: self.path / INPUT / "config" / HOOK_FILE)
    stop_file = property(lambda self: self.path / STOP_FILE)
    debug = property(lambda self: self.path / "debug")
    profiler = property(lambda self: self.path / "profiler")
