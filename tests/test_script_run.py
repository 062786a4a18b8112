"""``kennel run``: a SageMaker script-mode training script, run unchanged as a kennel job.

The scripts are written in :mod:`sagemaker_scripts` in the shapes real ones have; they run on tiny generated
photos, and ``pretrained=True`` finds random weights in a TORCH_HOME the tests fill, so nothing downloads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kennel, wait_until
from sagemaker_scripts import (
    CRASHES,
    METRIC_DEFINITIONS,
    READS_A_CHANNEL_IT_WAS_NOT_GIVEN,
    SHOW_ENVIRONMENT,
    TRAIN_MODEL,
    fill_torch_home,
    write_script,
)

from kennel.jobs import JobDir, list_jobs, load_job
from kennel.script.config import MetricDefinition, ScriptConfig
from kennel.script.contract import ScriptJobDir
from kennel.script.job import run_script
from kennel.script.metrics import MetricReader


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dogImages' layout in miniature: 3 breeds, 8/4/4 photos each."""
    from kennel.data.sample import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("photos") / "dogs", num_classes=3, per_split=(8, 4, 4))


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_torch_home(tmp_path_factory.mktemp("torch"), "resnet18")


def _config(script: Path, **settings) -> ScriptConfig:
    return ScriptConfig.model_validate(
        {"entry_point": script.name, "source_dir": str(script.parent), "tracking": False, **settings}
    )


def _cli(*args: object, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``kennel ARGS`` in a process of its own, as a person runs it (the script is its child)."""
    command = [sys.executable, "-m", "kennel", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


# --- the training toolkit's contract ---------------------------------------------------------------------------


def test_the_script_gets_sagemakers_training_environment_and_arguments(tmp_path: Path, photos: Path):
    script = write_script(tmp_path / "code", SHOW_ENVIRONMENT, "show.py")
    (tmp_path / "code" / "helper.py").write_text("X = 1\n")
    hps = {"batch-size": 64, "batch_size": 9, "lr": 1e-05, "use-cuda": True, "backbone": "resnet18", "b": 2}
    config = _config(
        script,
        channels={"training": str(photos), "extra": str(tmp_path)},
        hyperparameters=hps,
        user_args=["--flag", "x"],
        metrics=[{"Name": "value", "Regex": "value=([-+0-9.eEna]+)"}],
    )
    record = run_script(config, echo=False)

    assert record.status == "completed" and record.kind == "script", record.error
    job = ScriptJobDir(record.path)
    seen = json.loads((job.output_data / "seen.json").read_text())
    # Sorted names exactly as given, one letter as -b, values as str() of the decoded JSON, then the extra args.
    assert seen["argv"] == [
        "-b", "2", "--backbone", "resnet18", "--batch-size", "64", "--batch_size", "9", "--lr", "1e-05",
        "--use-cuda", "True", "--flag", "x",
    ]  # fmt: skip
    assert Path(seen["cwd"]) == job.source and (job.source / "helper.py").is_file()  # a copy, run from there
    env = seen["env"]
    assert env["SM_MODEL_DIR"] == str(job.model) and env["SM_OUTPUT_DATA_DIR"] == str(job.output_data)
    assert env["SM_OUTPUT_DIR"] == str(job.output) and env["SM_INPUT_DIR"] == str(job.input_dir)
    assert env["SM_INPUT_CONFIG_DIR"] == str(job.input_config)
    assert env["SM_CHANNEL_TRAINING"] == str(photos) and env["SM_CHANNEL_EXTRA"] == str(tmp_path)
    assert json.loads(env["SM_CHANNELS"]) == ["extra", "training"]
    assert json.loads(env["SM_HPS"]) == hps
    assert env["SM_HP_BATCH-SIZE"] == "64" and env["SM_HP_USE-CUDA"] == "true" and env["SM_HP_BACKBONE"] == "resnet18"
    assert json.loads(env["SM_USER_ARGS"])[-2:] == ["--flag", "x"]
    assert json.loads(env["SM_HOSTS"]) == [env["SM_CURRENT_HOST"]] and int(env["SM_NUM_CPUS"]) >= 1
    assert env["SM_NUM_GPUS"].isdigit() and env["SM_LOG_LEVEL"] == "20" and env["PYTHONUNBUFFERED"] == "1"
    training = json.loads(env["SM_TRAINING_ENV"])
    assert training["hyperparameters"] == hps and training["channel_input_dirs"]["training"] == str(photos)
    assert seen["files"]["hyperparameters.json"]["batch-size"] == "64"  # JSON-encoded strings, as the SDK uploads
    assert seen["files"]["hyperparameters.json"]["backbone"] == '"resnet18"'
    assert set(seen["files"]["inputdataconfig.json"]) == {"extra", "training"}
    assert (job.input_data / "training").resolve() == photos.resolve()
    # Every match is a point: a negative exponent, NaN and an integer all read as floats.
    points = JobDir(record.path).read_metrics("script")
    assert [p["value"] for p in points][:2] == [-1.5e-05, "nan"] and points[2]["value"] == 3.0
    assert [p["step"] for p in points] == [0, 1, 2] and record.metrics["value"] == 3.0
    assert record.params == hps and record.metrics["exit_code"] == 0
    assert "value=-1.5e-05" in job.stdout_log.read_text()


def test_metric_definitions_read_both_streams_and_every_match(tmp_path: Path):
    reader = MetricReader([MetricDefinition(name="loss", regex=r"loss: ([-+0-9.eE]+|nan)")])
    assert [p.value for p in reader.read("loss: 0.5 then loss: -2e-3")] == [0.5, -0.002]
    nan = reader.read("loss: nan")
    assert len(nan) == 1 and nan[0].value != nan[0].value and nan[0].step == 2
    assert reader.read("no metric here") == []


def test_metric_definitions_file_in_sagemakers_form(tmp_path: Path):
    from kennel.script.config import read_metric_definitions

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(METRIC_DEFINITIONS))
    metrics = read_metric_definitions(path)
    assert [m.name for m in metrics] == ["train_loss", "valid_loss", "valid_accuracy", "test_loss"]
    reader = MetricReader(metrics)
    assert [(p.name, p.value) for p in reader.read("Epoch 0: valid loss: 1.0986, valid accuracy: 0.3333")] == [
        ("valid_loss", 1.0986),
        ("valid_accuracy", 0.3333),
    ]


# --- failures said in a line ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_script_that_crashes_fails_with_its_error_and_traceback(tmp_path: Path, photos: Path):
    script = write_script(tmp_path / "code", CRASHES)
    done = _cli("run", script, "--data", photos, "--no-tracking")
    assert done.returncode == 1, done.stderr
    job = list_jobs()[0]
    assert job.status == "failed" and job.error == "ValueError: the batch size must be positive (exit 1)"
    assert job.traceback.startswith("Traceback (most recent call last)") and "train_model.py" in job.traceback
    assert "error: ValueError: the batch size must be positive (exit 1)" in done.stderr
    assert "starting" in done.stdout  # the script's own output, passed through
    logs = ScriptJobDir(job.path)
    assert "starting" in logs.stdout_log.read_text() and "ValueError" in logs.stderr_log.read_text()


@pytest.mark.slow
def test_a_script_reading_a_channel_it_was_not_given_says_which_flag(tmp_path: Path, photos: Path):
    script = write_script(tmp_path / "code", READS_A_CHANNEL_IT_WAS_NOT_GIVEN)
    done = _cli("run", script, "--data", photos, "--no-tracking")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-2] == (
        "error: the script reads SM_CHANNEL_TRAIN, a channel this run was not given: pass --channel train=DIR"
    )


@pytest.mark.slow
def test_pretrained_weights_that_cannot_be_downloaded_are_named_with_what_to_do(tmp_path: Path, photos: Path):
    script = write_script(tmp_path / "code", "import torchvision.models as models\nmodels.resnet18(pretrained=True)\n")
    # No weights in this TORCH_HOME, and a proxy nobody listens on: the download fails at once, online or not.
    env = {"TORCH_HOME": str(tmp_path / "empty"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": ""}
    done = _cli("run", script, "--data", photos, "--no-tracking", env=env)
    assert done.returncode == 1
    error = load_job("latest").error
    target = tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert error.startswith("the script's pretrained weights resnet18-f37072fd.pth could not be downloaded")
    assert str(target) in error and "TORCH_HOME" in error


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["missing.py"], "missing.py: no such script"),
        (["{script}", "--channel", "valid=/no/such/folder"], "--channel valid=/no/such/folder: no such folder"),
        (["{script}", "--hp", "lr"], "--hp expects NAME=VALUE, got 'lr'"),
        (["{script}", "--metric", "loss=loss: ([0-9."], "--metric loss: not a regular expression"),
        (["{script}", "--metric", "loss=loss: [0-9.]+"], "--metric loss: needs a group around the number"),
    ],
)
def test_bad_input_is_one_error_line_before_anything_runs(tmp_path: Path, args: list[str], said: str):
    script = write_script(tmp_path / "code", CRASHES)
    result = kennel("run", *[a.replace("{script}", str(script)) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], result.output
    assert list_jobs() == []


# --- a SageMaker training script, whole -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sagemaker_training_script_runs_with_its_metrics_model_debugger_and_profiler(
    tmp_path: Path, photos: Path, torch_home: Path
):
    script = write_script(tmp_path / "code", TRAIN_MODEL)
    definitions = tmp_path / "metric_definitions.json"
    definitions.write_text(json.dumps(METRIC_DEFINITIONS))
    done = _cli(
        "run", script, "--data", photos, "--hp", "epochs=2", "--hp", "batch-size=8", "--hp", "lr=0.001",
        "--metric-definitions", definitions, "--name", "resnet", "--json",
        env={"TORCH_HOME": str(torch_home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = load_job("resnet")
    assert record.status == "completed" and record.params == {"epochs": 2, "batch-size": 8, "lr": 0.001}
    assert record.mlflow_run_id  # recorded in MLflow like any job
    hook = json.loads(ScriptJobDir(record.path).hook_config.read_text())
    assert hook["classes"] == sorted(p.name for p in (photos / "train").iterdir())  # ImageFolder's labels
    assert json.loads(done.stdout.strip().splitlines()[-1])["id"] == record.id
    points = JobDir(record.path).read_metrics("script")
    assert [p["step"] for p in points if p["name"] == "valid_loss"] == [0, 1]
    assert {"train_loss", "valid_loss", "valid_accuracy", "test_loss"} <= set(record.metrics)
    assert (Path(record.artifact) / "model.pth").is_file() and record.artifact == str(ScriptJobDir(record.path).model)
    assert "Testing Accuracy" in done.stderr  # the script's log lines, passed through as they came

    from kennel.debugger import load_records

    records = load_records(record.path)
    assert {"TRAIN", "EVAL"} <= set(records.modes) and records.every_step_losses
    assert records.tensor_names("gradients")  # the hook saw the backward passes
    steps = [json.loads(line) for line in (record.path / "profiler" / "steps.jsonl").read_text().splitlines()]
    assert steps and {"forward", "backward"} <= set(steps[0])
    system = (record.path / "profiler" / "system.jsonl").read_text().splitlines()
    assert system and max(json.loads(line)["proc_cpu"] for line in system) > 0  # the script's process was sampled
    assert (record.path / "profile.html").is_file() and (record.path / "report.html").is_file()

    listed = kennel("jobs", "--format", "tsv")
    assert record.id in listed.output
    debug = kennel("debug", record.id)
    assert debug.exit_code == 0 and "VanishingGradient" in debug.output


@pytest.mark.slow
def test_a_learning_rate_a_rule_stops_ends_the_script_with_exit_3(tmp_path: Path, photos: Path, torch_home: Path):
    script = write_script(tmp_path / "code", TRAIN_MODEL)
    done = _cli(
        "run", script, "--data", photos, "--hp", "lr=10000", "--hp", "epochs=3", "--no-tracking", "--name", "wild",
        "--set", "debug.rules.WeightUpdateRatio.stop=true", "--set", "debug.rules.ExplodingTensor.stop=true",
        env={"TORCH_HOME": str(torch_home)},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-3000:]
    record = load_job("wild")
    assert record.status == "stopped" and record.stop_reason.startswith("debugger rule ")
    rule = record.stop_reason.partition(":")[0]
    assert " ".join(done.stderr.split()).endswith(f"stopped by {rule} (exit 3); `kennel debug {record.id}` shows why")
    assert not (ScriptJobDir(record.path).model / "model.pth").exists()  # it never reached its end


@pytest.mark.slow
def test_ctrl_c_stops_the_script_and_resume_runs_it_again_with_its_checkpoints(tmp_path: Path):
    script = write_script(
        tmp_path / "code",
        """
        import os, time
        path = os.path.join(os.environ["KENNEL_CHECKPOINT_DIR"], "progress.txt")
        done = int(open(path).read()) if os.path.exists(path) else 0
        print("resumed at", done, flush=True)
        for step in range(done, 6):
            open(path, "w").write(str(step + 1))
            print("step", step, flush=True)
            time.sleep(0.3 if done else 5)
        """,
    )
    command = [sys.executable, "-m", "kennel", "run", str(script), "--no-tracking", "--name", "long"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal
    )
    wait_until(lambda: list_jobs() and (ScriptJobDir(list_jobs()[0].path).checkpoints / "progress.txt").exists(),
               "the script's first checkpoint", timeout=60)  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    record = load_job("long")
    assert record.status == "stopped" and "kennel run --resume" in err
    assert not _alive(record)

    done = _cli("run", "--resume", "long")
    assert done.returncode == 0, done.stderr
    assert "resumed at 1" in done.stdout and load_job("long").status == "completed"


def _ctrl_c_as_in_a_terminal() -> None:
    """The child's SIGINT as a shell's foreground program has it: handled by default, not blocked. A child
    inherits its parent's ignored signals and signal mask, which a test worker may have had changed by what ran in
    it before; what this test judges is kennel's own handling of Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _alive(record) -> bool:
    """Whether any process still runs the job's script."""
    out = subprocess.run(["pgrep", "-f", str(ScriptJobDir(record.path).source)], capture_output=True, text=True)
    return bool(out.stdout.strip())


@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path: Path):
    script = write_script(
        tmp_path / "code",
        """
        import os
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        total = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(total)
        print(f"rank {dist.get_rank()} of {dist.get_world_size()}: total {total.item():.0f}", flush=True)
        if dist.get_rank() == 0:
            open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("ok")
        dist.destroy_process_group()
        """,
    )
    done = _cli("run", script, "--processes", "2", "--no-tracking", "--metric", "total=total ([0-9]+)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2: total 3" in done.stdout and "rank 1 of 2: total 3" in done.stdout
    record = load_job("latest")
    assert record.metrics["total"] == 3.0 and len(JobDir(record.path).read_metrics("script")) == 2
    assert (ScriptJobDir(record.path).model / "done.txt").is_file()


def test_a_script_that_makes_no_hook_runs_with_a_note(tmp_path: Path):
    script = write_script(tmp_path / "code", "print('no hook here')\n")
    result = kennel("run", script, "--no-tracking")
    assert result.exit_code == 0, result.output
    said = result.output.replace("\n    ", " ")  # a line longer than the terminal folds, indented
    assert "the script created no smdebug hook" in said and "so the debugger saw nothing" in said


def test_the_source_copy_leaves_out_kennels_home_and_data_inside_the_folder(tmp_path: Path, kennel_home: Path):
    project = tmp_path / "project"
    script = write_script(project, "print('ok')\n")
    (project / "data").mkdir()
    (project / "data" / "photo.jpg").write_bytes(b"x" * 10)
    (project / ".git").mkdir()
    config = _config(script, channels={"training": str(project / "data")})
    record = run_script(config, echo=False)
    source = ScriptJobDir(record.path).source
    assert record.status == "completed" and (source / script.name).is_file()
    assert not (source / "data").exists() and not (source / ".git").exists()


def test_a_metric_with_nan_keeps_the_job_record_readable(tmp_path: Path):
    script = write_script(tmp_path / "code", "print('loss nan')\nprint('loss 1.5')\nprint('loss nan')\n")
    record = run_script(_config(script, metrics=[{"Name": "loss", "Regex": "loss ([a-z0-9.]+)"}]), echo=False)
    again = load_job(record.id)
    assert again.status == "completed" and again.metrics["loss"] != again.metrics["loss"]  # NaN, read back


def test_a_script_jobs_report_draws_its_metrics_and_none_of_kennels_evaluation(tmp_path: Path):
    from helpers import section_statuses

    from kennel.pages import write_report

    script = write_script(tmp_path / "code", "for i in range(5):\n    print(f'loss {1 / (i + 1):.3f}')\n")
    record = run_script(_config(script, metrics=[{"Name": "loss", "Regex": "loss ([0-9.]+)"}]), echo=False)
    statuses = section_statuses(write_report(record.path).read_text())
    assert statuses["script"] == "ok" and statuses["summary"] == "ok"
    assert not {"curves", "test-metrics", "per-class", "confusion", "mistakes"} & set(statuses)


def test_a_rule_stop_under_torchrun_is_a_stop_whatever_code_torchrun_exits_with(tmp_path: Path):
    """Rank 0's hook writes stop.json and exits 3; torchrun then ends the other ranks and exits 1 itself."""
    script = write_script(
        tmp_path / "code",
        """
        import json, os, sys
        reason = "debugger rule ExplodingTensor: loss is NaN at step 3."
        stop = os.path.join(os.environ["KENNEL_SCRIPT_JOB_DIR"], "stop.json")
        json.dump({"reason": reason, "rule": "ExplodingTensor"}, open(stop, "w"))
        sys.exit(1)
        """,
    )
    record = run_script(_config(script), echo=False)
    assert record.status == "stopped" and record.stop_reason == "debugger rule ExplodingTensor: loss is NaN at step 3."
    assert record.error is None


def test_findings_in_a_script_speak_of_its_code_not_of_kennels_settings():
    """Every sentence the debugger's rules can say, reworded for a script, names none of kennel train's settings
    (a script has none of them; its --set takes debug.* and profiler.* only)."""
    import ast
    import re

    from kennel.script.advice import in_script_terms

    rules = Path(__file__).resolve().parents[1] / "src" / "kennel" / "debugger" / "rules"
    texts = []
    for path in rules.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # an f-string: its literal parts, the values as X
                texts.append("".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value:
                texts.append(node.value)
    kennel_only = re.compile(r"\b(optim|model|data)\.[a-z_]+|early_stopping|feature_views|--model|--freeze")
    assert any(kennel_only.search(text) for text in texts)  # the rules do name them, for kennel train
    said = [in_script_terms(text) for text in texts]
    assert [s for s in said if kennel_only.search(s)] == []
